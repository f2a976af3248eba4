"""The execution status machine and the step attempt one: the legal moves.

PostgreSQL enforces the same tables (migration 0011: ``execution.execution_transitions()``,
``execution.step_transitions()`` and their triggers), so even a raw UPDATE cannot make an
illegal move; ``tests/test_status_machine_db.py`` checks the two copies are equal.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from opsconductor.errors import IllegalTransition


class Status(StrEnum):
    PENDING_APPROVAL = "pending_approval"
    APPROVED = "approved"
    REJECTED = "rejected"
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"
    PARTIAL = "partial"


S = Status
# The design's machine, plus approved/queued -> pending_approval: issue 5 sends an execution back
# for a fresh approval when what it would do changed after it was approved.
TRANSITIONS: dict[Status, frozenset[Status]] = {
    S.PENDING_APPROVAL: frozenset({S.APPROVED, S.REJECTED, S.CANCELLED}),
    S.APPROVED: frozenset({S.QUEUED, S.RUNNING, S.CANCELLED, S.PENDING_APPROVAL}),
    S.QUEUED: frozenset({S.RUNNING, S.CANCELLED, S.TIMEOUT, S.PENDING_APPROVAL}),
    S.RUNNING: frozenset({S.COMPLETED, S.FAILED, S.CANCELLED, S.TIMEOUT, S.PARTIAL}),
}
TERMINAL = frozenset(set(Status) - set(TRANSITIONS))
#: What an execution is created as (``initial_status``), or queued at once when it needs no
#: approval and goes to the workers (a bulk submission, db/bulk.py: migration 0029 refuses
#: it at levels 1-3).
INITIAL = frozenset({S.APPROVED, S.PENDING_APPROVAL, S.QUEUED})


def is_terminal(status: Status) -> bool:
    return status in TERMINAL


def check(current: Status, target: Status) -> None:
    """Raise ``IllegalTransition`` unless ``current -> target`` is allowed."""
    if target not in TRANSITIONS.get(current, frozenset()):
        allowed = ", ".join(sorted(TRANSITIONS.get(current, ()))) or "nothing (terminal)"
        raise IllegalTransition(
            f"cannot move an execution from {current} to {target}; from {current} it may go "
            f"to {allowed}"
        )


def initial_status(approval_level: int) -> Status:
    """Level 0 is approved by policy at submission; levels 1-3 wait for a human."""
    return S.APPROVED if approval_level == 0 else S.PENDING_APPROVAL


def pairs(
    initial: frozenset[str], transitions: dict[Any, frozenset[Any]]
) -> set[tuple[str | None, str]]:
    """A machine as (from, to) pairs, ``None`` standing for "created as" (as in the DB)."""
    found: set[tuple[str | None, str]] = {(None, str(s)) for s in initial}
    return found | {(str(a), str(b)) for a, targets in transitions.items() for b in targets}


class StepStatus(StrEnum):
    """Status of one attempt of one step on one target (``execution_steps``)."""

    PENDING = "pending"
    AWAITING_APPROVAL = "awaiting_approval"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"


A = StepStatus
#: An attempt is created pending (at submission), running (a retry, or a first attempt
#: inserted when it starts) or failed (refused by RBAC before it started).
STEP_INITIAL = frozenset({A.PENDING, A.RUNNING, A.FAILED})
# pending -> skipped: the execution ended first; awaiting_approval: level 3 parks the step
# until a person decides (then pending again, or skipped); running -> skipped: record-only.
STEP_TRANSITIONS: dict[StepStatus, frozenset[StepStatus]] = {
    A.PENDING: frozenset({A.RUNNING, A.FAILED, A.SKIPPED, A.AWAITING_APPROVAL}),
    A.AWAITING_APPROVAL: frozenset({A.PENDING, A.SKIPPED}),
    A.RUNNING: frozenset({A.COMPLETED, A.FAILED, A.TIMEOUT, A.CANCELLED, A.SKIPPED}),
}
