"""Which assets a run's locks take: the engine's rule, stated once, and the first lock it
gives, worked out at enqueue. Pure.

The rule (``engine/core.py`` takes its locks by these functions): with ``lock: execution``
one lock holds every target of every step but the validate steps (which touch no asset)
for the whole run (``run_assets``); else each step but a validate step holds its own
current targets while it runs (``step_locks``), in a rolling update (``serial``) those of
the current batch.

``first_locks`` is stored with the queue row (migration 0042): the claim leaves new work
whose first hosts another run holds in the queue, instead of handing it to a worker slot
that would only wait for the lock (and fail ``asset_locked`` after ``lock_wait_s``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from opsconductor import rollout

if TYPE_CHECKING:  # the queue's enqueue needs no plan model at import
    from opsconductor.plan import Plan


def holds_whole_run(plan: Plan) -> bool:
    """One lock for the whole run (``lock: execution``), taken before the first step."""
    return plan.lock == "execution"


def run_assets(plan: Plan, targets: Sequence[Sequence[str]]) -> list[str]:
    """What the whole run's lock takes; ``targets``: each step's asset ids, in step order."""
    return [
        a for step, t in zip(plan.steps, targets, strict=True) if step.type != "validate" for a in t
    ]


def step_locks(plan: Plan, index: int) -> bool:
    """Whether step ``index`` takes a lock of its own (its current targets) while it runs."""
    return not holds_whole_run(plan) and plan.steps[index].type != "validate"


def first_locks(plan: Plan, targets: Sequence[Sequence[str]]) -> tuple[str, ...] | None:
    """The asset ids the run's first lock takes, sorted, once each; ``targets``: each step's
    asset ids, in step order (a plan snapshot's ``targets``). None: no asset is locked."""
    if holds_whole_run(plan):
        held = set(run_assets(plan, targets))
    else:
        # the steps in the order the engine runs them: in a rolling update, the first
        # batch's hosts first (engine/rolling.py)
        batch: set[str] | None = None
        if plan.serial is not None:
            hosts = rollout.hosts_of(targets)
            batch = set(rollout.batches(plan.serial, hosts)[0]) if hosts else set()
        held = set()
        for index, step_targets in enumerate(targets):
            if not step_locks(plan, index):
                continue
            held = set(step_targets) if batch is None else batch.intersection(step_targets)
            if held:
                break
    return tuple(sorted(held)) or None
