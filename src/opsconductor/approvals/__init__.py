"""Approval rules: windows, hash binding, separation of duties, quorum. Pure.

The database layer locks the approval row and hands its state here; these functions say
whether a decision may be taken and what it leads to, as plain data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from opsconductor.errors import OpsError

#: Default window per level, in seconds (level 3 is per step).
DEFAULT_WINDOWS_S = {1: 5 * 60, 2: 15 * 60, 3: 30 * 60}


class ApprovalRefused(OpsError):
    """A decision that may not be taken; ``reason`` is a stable code for APIs and events."""

    exit_code = 2

    def __init__(self, reason: str, message: str, *, conflict: bool = False) -> None:
        super().__init__(message)
        self.reason = reason
        #: True when the refusal is about state (HTTP 409), not about the request
        self.conflict = conflict


class Decision(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"


class ApprovalState(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"


@dataclass(frozen=True)
class Pending:
    """An approval request as stored, plus the decisions already taken on it."""

    level: int
    state: ApprovalState
    plan_hash: str
    requested_by: str
    expires_at: datetime
    approvers_so_far: Sequence[str]
    quorum: int


@dataclass(frozen=True)
class Outcome:
    #: the approval's new state, or None while more approvers are needed
    state: ApprovalState | None
    approvals: int
    needed: int


def window(level: int, overrides: dict[int, int] | None = None) -> timedelta:
    seconds = (overrides or {}).get(level, DEFAULT_WINDOWS_S[level])
    return timedelta(seconds=seconds)


def needed_approvers(level: int, quorum: int) -> int:
    """Only level 3 uses the tenant's quorum; below it one approver decides."""
    return max(1, quorum) if level == 3 else 1


def decide(
    pending: Pending,
    decision: Decision,
    *,
    actor_id: str,
    reviewed_hash: str | None,
    now: datetime,
) -> Outcome:
    """Check a decision against the rules; raise ``ApprovalRefused`` or return what follows."""
    if pending.state != ApprovalState.PENDING:
        raise ApprovalRefused(
            "already_decided", f"this approval is already {pending.state}", conflict=True
        )
    if now >= pending.expires_at:
        raise ApprovalRefused(
            "expired",
            f"this approval expired at {pending.expires_at:%Y-%m-%d %H:%M:%S %Z}; "
            "submit the plan again",
            conflict=True,
        )
    if pending.level >= 2 and decision is Decision.APPROVE:
        if reviewed_hash is None:
            raise ApprovalRefused(
                "hash_required",
                f"level {pending.level} approvals must carry the plan hash you reviewed",
            )
        if reviewed_hash != pending.plan_hash:
            raise ApprovalRefused(
                "hash_mismatch",
                f"plan hash {reviewed_hash[:16]}… is not the plan's current hash "
                f"{pending.plan_hash[:16]}…: review the plan again",
                conflict=True,
            )
    if pending.level >= 2 and actor_id == pending.requested_by:
        raise ApprovalRefused(
            "self_approval",
            f"{actor_id} requested this execution and may not decide on it at level "
            f"{pending.level} (separation of duties)",
        )
    if actor_id in pending.approvers_so_far:
        raise ApprovalRefused(
            "duplicate_approver", f"{actor_id} has already approved", conflict=True
        )
    needed = needed_approvers(pending.level, pending.quorum)
    if decision is Decision.REJECT:
        return Outcome(ApprovalState.REJECTED, len(pending.approvers_so_far), needed)
    count = len(pending.approvers_so_far) + 1
    return Outcome(ApprovalState.APPROVED if count >= needed else None, count, needed)
