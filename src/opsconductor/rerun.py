"""Re-running the failed: which targets, and the plan restricted to them. Pure.

A target is re-run when any step planned on it did not complete there: its latest attempt
failed, timed out, was cancelled or skipped, or never left pending. On such a target the
*whole* plan runs again, as Ansible's retry files and Rundeck's "retry failed nodes" do:
a later step reads the results of earlier steps of the same execution (``validate``
steps, ``{{ steps.<name>.output }}``), so it cannot run alone in a new one. A target that
completed every step is never touched.

The restriction is written into the plan itself (``assets: [ids]`` added to each step's
selectors, which combine with AND), not only into the resolved targets: the plan hash
then differs (a new hash is a new approval) and an approval re-check that resolves the
plan again finds the same targets.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from typing import Any

from opsconductor.failures import Attempt, latest
from opsconductor.status_machine import StepStatus


def targets_to_rerun(attempts: Iterable[Attempt], planned: Sequence[Sequence[str]]) -> set[str]:
    """Targets with a planned (step, target) pair whose latest attempt did not complete, or
    that has no attempt at all (``planned``: the snapshot's asset ids per step)."""
    done = {
        (row.step_index, row.target_asset_id)
        for row in latest(attempts)
        if str(row.status) == StepStatus.COMPLETED.value
    }
    return {
        target
        for index, step_targets in enumerate(planned)
        for target in step_targets
        if (index, target) not in done
    }


def restricted_document(
    document: dict[str, Any], planned: Sequence[Sequence[str]], keep: set[str]
) -> dict[str, Any]:
    """The plan document with every step's targets narrowed to ``keep``. A step left with
    no target is dropped, and so is a ``validate`` step of a dropped step (it checks that
    step's targets, so it has none either)."""
    restricted = copy.deepcopy(document)
    steps: list[dict[str, Any]] = []
    dropped: set[str] = set()
    for index, step in enumerate(restricted["steps"]):
        if step.get("type") == "validate":
            if step.get("step") in dropped:
                dropped.add(step["name"])
            else:
                steps.append(step)
            continue
        chosen = sorted(set(planned[index]) & keep)
        if not chosen:
            dropped.add(step["name"])
            continue
        step["targets"] = {**step["targets"], "assets": chosen}
        steps.append(step)
    restricted["steps"] = steps
    return restricted
