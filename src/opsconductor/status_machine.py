"""The execution status machine (SPEC section 3): the only place that knows legal moves."""

from __future__ import annotations

from enum import StrEnum

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
# SPEC section 3, plus approved/queued -> pending_approval: issue 5 sends an execution back
# for a fresh approval when what it would do changed after it was approved.
TRANSITIONS: dict[Status, frozenset[Status]] = {
    S.PENDING_APPROVAL: frozenset({S.APPROVED, S.REJECTED, S.CANCELLED}),
    S.APPROVED: frozenset({S.QUEUED, S.RUNNING, S.CANCELLED, S.PENDING_APPROVAL}),
    S.QUEUED: frozenset({S.RUNNING, S.CANCELLED, S.TIMEOUT, S.PENDING_APPROVAL}),
    S.RUNNING: frozenset({S.COMPLETED, S.FAILED, S.CANCELLED, S.TIMEOUT, S.PARTIAL}),
}
TERMINAL = frozenset(set(Status) - set(TRANSITIONS))


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
