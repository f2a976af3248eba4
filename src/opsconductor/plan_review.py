"""A plan as an approver reads it, and what changed since the last run of the same job
(or, failing that, of the same plan name). Pure.

An approver is asked to vouch for a plan hash; raw JSON hides what it commits them to. The
review is the stored snapshot (what the hash covers: the plan as written and the asset ids
each step resolved to) laid out as steps, each with its targets and the work it does, and
the same layout as lines, so two snapshots compare line by line: one changed command or
one added host shows as one line, not as two JSON blobs to eyeball.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

#: Step fields that say how or where a step runs, not what it does (shown apart).
_HOW = ("when", "concurrency", "retries", "timeout_s", "idempotent")
_NOT_WORK = frozenset(("name", "type", "targets", "action_class", *_HOW))
#: Unchanged lines kept around each change in a diff.
CONTEXT = 1


@dataclass(frozen=True)
class ReviewStep:
    index: int
    name: str
    type: str
    #: as declared; None when the plan leaves it to inference
    action_class: str | None
    #: the asset ids it resolved to at submission (what the hash covers)
    targets: tuple[str, ...]
    #: what it does, field by field (``command``, ``url``, ``query``...), as text
    work: tuple[tuple[str, str], ...]
    #: how it runs: ``when``, ``concurrency``, ``retries``, ``timeout_s``
    settings: tuple[tuple[str, str], ...]


class Op(StrEnum):
    SAME = "same"
    ADDED = "added"
    REMOVED = "removed"
    #: unchanged lines left out between two changes
    GAP = "gap"


class Basis(StrEnum):
    """What an execution under review is compared with."""

    #: the last run of the same job (it was started from a job)
    JOB = "job"
    #: the last execution of the same plan name (not a job run, or the job's first run)
    PLAN_NAME = "plan_name"


@dataclass(frozen=True)
class DiffLine:
    op: Op
    text: str


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def steps(snapshot: Mapping[str, Any]) -> list[ReviewStep]:
    """The snapshot's steps with their resolved targets."""
    plan = snapshot.get("plan") or {}
    resolved: Sequence[Sequence[str]] = snapshot.get("targets") or []
    found = []
    for index, step in enumerate(plan.get("steps") or []):
        targets = tuple(resolved[index]) if index < len(resolved) else ()
        work = tuple((k, _text(v)) for k, v in step.items() if k not in _NOT_WORK)
        settings = tuple((k, _text(step[k])) for k in _HOW if k in step)
        found.append(
            ReviewStep(
                index,
                str(step.get("name", "")),
                str(step.get("type", "")),
                step.get("action_class"),
                targets,
                work,
                settings,
            )
        )
    return found


def lines(snapshot: Mapping[str, Any]) -> list[str]:
    """The review as lines: the plan's own settings, then per step its header, what it
    does, how it runs and one line per target (so an added host is one added line)."""
    plan = snapshot.get("plan") or {}
    out = [f"approval_level: {plan.get('approval_level', 0)}"]
    for name, value in sorted((snapshot.get("params") or {}).items()):
        out.append(f"param {name}: {_text(value)}")
    for step in steps(snapshot):
        kind = f"{step.type}, {step.action_class}" if step.action_class else step.type
        out.append(f"step {step.index + 1} “{step.name}” ({kind})")
        for key, value in (*step.work, *step.settings):
            first, *rest = value.splitlines() or [""]
            out.append(f"  {key}: {first}")
            out.extend(f"  {' ' * len(key)}  {more}" for more in rest)
        out.extend(f"  target {target}" for target in step.targets)
    return out


def diff(old: Sequence[str], new: Sequence[str], context: int = CONTEXT) -> list[DiffLine]:
    """What changed from ``old`` to ``new``: changed lines with ``context`` unchanged ones
    around each, a gap line between groups; empty when nothing changed."""
    matcher = difflib.SequenceMatcher(a=list(old), b=list(new), autojunk=False)
    found: list[DiffLine] = []
    shown_to = 0  # lines of ``old`` up to here are shown (or stood for by a gap)
    for group in matcher.get_grouped_opcodes(context):
        if group[0][1] > shown_to:
            found.append(DiffLine(Op.GAP, "…"))
        shown_to = group[-1][2]
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                found.extend(DiffLine(Op.SAME, text) for text in old[i1:i2])
                continue
            found.extend(DiffLine(Op.REMOVED, text) for text in old[i1:i2])
            found.extend(DiffLine(Op.ADDED, text) for text in new[j1:j2])
    if found and shown_to < len(old):
        found.append(DiffLine(Op.GAP, "…"))
    return found
