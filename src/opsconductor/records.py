"""Typed records of the rows the code reads: executions, step attempts, events, approvals.
Pure: ``db/`` builds them from rows (``from_row``), everything above reads attributes, so a
misspelt column is a mypy error instead of a ``KeyError`` at run time.

Closed sets (statuses, modes, SLA classes, approval states) are enums; a stored value this
version does not know raises ``RecordError`` naming the column, rather than flowing on as
a string nobody checks. Event types stay strings: the audit trail is an open set that other
modules (and later versions) add to, and a reader must not fail on a kind it does not know.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, fields
from datetime import datetime
from enum import StrEnum
from typing import Any, Self, TypeVar, cast

from opsconductor.approvals import ApprovalState, Decision
from opsconductor.errors import RecordError
from opsconductor.quick_init import quick_init
from opsconductor.status_machine import Status, StepStatus

__all__ = [
    "ApprovalDecision",
    "ApprovalRequest",
    "ApprovalState",
    "Decision",
    "Event",
    "Execution",
    "Mode",
    "OnInvalidated",
    "SlaClass",
    "Status",
    "StepAttempt",
    "StepResult",
    "StepStatus",
    "parse",
]


class Mode(StrEnum):
    """Where an execution runs: in the submitting process, or on the workers."""

    IMMEDIATE = "immediate"
    BACKGROUND = "background"


class SlaClass(StrEnum):
    """The SLA class routing gave it from its estimated duration (``routing.classify``)."""

    FAST = "fast"
    MEDIUM = "medium"
    LONG = "long"


class OnInvalidated(StrEnum):
    """A tenant's answer to an approved plan that now resolves differently."""

    #: back to ``pending_approval``, with a request bound to the new hash
    REAPPROVE = "reapprove"
    CANCEL = "cancel"


E = TypeVar("E", bound=StrEnum)


def parse(enum: type[E], value: object, where: str) -> E:
    """``value`` as a member of ``enum``; ``RecordError`` naming ``where`` otherwise."""
    if isinstance(value, enum):
        return value
    # a column's text, looked up directly: ``enum(value)`` goes through the metaclass
    member = enum._value2member_map_.get(value) if type(value) is str else None
    if member is not None:
        return cast(E, member)
    if isinstance(value, str):
        try:
            return enum(value)
        except ValueError:
            pass
    known = ", ".join(member.value for member in enum)
    raise RecordError(f"{where}: {value!r} is not one of {known}")


def row_values(
    cls: type[Any],
    row: Mapping[str, Any],
    table: str,
    enums: Mapping[str, type[StrEnum]] | None = None,
) -> dict[str, Any]:
    """The row's columns for ``cls``'s fields (a frozen dataclass), the closed sets in
    ``enums`` parsed; extra columns (joins, computed flags) are ignored, a missing one
    without a default is a ``RecordError`` naming it. Every ``from_row`` builds on this."""
    names, required, nullable = _shape(cls)
    values = {name: row[name] for name in names if name in row}
    if not required.issubset(values):  # one set operation; the names only when it fails
        missing = [name for name in names if name in required and name not in values]
        raise RecordError(f"{table} row lacks column(s) {', '.join(missing)}")
    for name, enum in (enums or {}).items():
        if name in values and not (values[name] is None and name in nullable):
            values[name] = parse(enum, values[name], f"{table}.{name}")
    return values


#: Per record class: its field names, those without a default, those that may be None.
_Shape = tuple[tuple[str, ...], frozenset[str], frozenset[str]]
_SHAPES: dict[type[Any], _Shape] = {}


def _shape(cls: type[Any]) -> _Shape:
    """Read once per class (a bulk submission or a busy worker reads thousands of rows)."""
    shape = _SHAPES.get(cls)
    if shape is None:
        found = fields(cls)
        shape = _SHAPES[cls] = (
            tuple(f.name for f in found),
            frozenset(
                f.name for f in found if f.default is MISSING and f.default_factory is MISSING
            ),
            frozenset(f.name for f in found if str(f.type).endswith("| None")),
        )
    return shape


def _uuid(value: object) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


@quick_init
@dataclass(frozen=True)
class Execution:
    """One ``execution.executions`` row."""

    id: uuid.UUID
    tenant_id: str
    actor_id: str
    idempotency_key: str
    retry_of: uuid.UUID | None
    plan_name: str
    #: ``{"plan": ..., "targets": [[asset id, ...] per step], "files": ...}`` (plan_hash.py)
    plan_snapshot: dict[str, Any]
    plan_hash: str
    status: Status
    status_reason: str | None
    mode: Mode
    sla_class: SlaClass
    approval_level: int
    priority: int
    estimated_duration_s: float
    trace_id: str
    worker_id: str | None
    #: the execution budget's end, set when it first starts running
    timeout_at: datetime | None
    cancelled_by: str | None
    cancelled_at: datetime | None
    cancel_requested_by: str | None
    cancel_requested_at: datetime | None
    #: dark launch: every step is recorded as skipped, no target is touched
    record_only: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    #: the idempotency key no longer deduplicates (a retry or a new window took it over)
    key_released: bool = False
    lease_renewals: int = 0
    cancel_checks_performed: int = 0
    sla_violated_at: datetime | None = None
    #: the execution whose failed targets this one re-runs (``opsc rerun --failed``)
    rerun_of: uuid.UUID | None = None
    #: why staged enablement made it record-only (staging.py; None: it did not)
    record_only_reason: str | None = None
    #: the saved job (and its version) this execution is a run of (None: a plain plan)
    job_name: str | None = None
    job_version: int | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Self:
        values = row_values(
            cls, row, "executions", {"status": Status, "mode": Mode, "sla_class": SlaClass}
        )
        values["id"] = _uuid(values["id"])
        return cls(**values)


@dataclass(frozen=True)
class StepAttempt:
    """One ``execution.execution_steps`` row: one attempt of one step on one target."""

    id: int
    execution_id: uuid.UUID
    tenant_id: str
    step_index: int
    step_name: str
    step_type: str
    target_asset_id: str
    status: StepStatus
    attempt: int
    retry_count: int
    started_at: datetime | None
    finished_at: datetime | None
    exit_code: int | None
    output: str
    stderr: str
    error: str | None
    #: routing.step_key: the same step in any plan (its history); None on old rows
    step_key: str | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Self:
        return cls(**row_values(cls, row, "execution_steps", {"status": StepStatus}))

    @property
    def seconds(self) -> float | None:
        """How long it ran, once it has finished."""
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


@dataclass(frozen=True)
class StepResult:
    """The latest result of a step on a target, as later steps see it (``validate`` steps,
    ``{{ steps.<name>.output }}`` templates)."""

    step_name: str
    target_asset_id: str
    status: StepStatus
    exit_code: int | None
    output: str
    stderr: str

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Self:
        return cls(**row_values(cls, row, "execution_steps", {"status": StepStatus}))

    def template_fields(self) -> dict[str, Any]:
        """What a template may read of it (``templating.STEP_FIELDS`` picks from these)."""
        return {
            "status": self.status.value,
            "exit_code": self.exit_code,
            "output": self.output,
            "stderr": self.stderr,
        }


@dataclass(frozen=True)
class Event:
    """One ``execution.execution_events`` row of the append-only audit trail."""

    id: int
    execution_id: uuid.UUID
    tenant_id: str
    event_type: str
    from_status: Status | None
    to_status: Status | None
    actor_id: str
    payload: dict[str, Any]
    created_at: datetime

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Self:
        values = row_values(
            cls, row, "execution_events", {"from_status": Status, "to_status": Status}
        )
        values["execution_id"] = _uuid(values["execution_id"])
        return cls(**values)


@dataclass(frozen=True)
class ApprovalDecision:
    """One person's vote on an approval request."""

    actor_id: str
    decision: Decision
    plan_hash: str | None
    comment: str | None
    decided_at: datetime

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Self:
        values = row_values(cls, row, "approval_decisions", {"decision": Decision})
        if isinstance(values["decided_at"], str):  # aggregated through json_build_object
            values["decided_at"] = datetime.fromisoformat(values["decided_at"])
        return cls(**values)


@dataclass(frozen=True)
class ApprovalRequest:
    """One ``execution.approvals`` row: the plan's approval, or (level 3) one step's; with
    its decisions when read as history."""

    id: int
    execution_id: uuid.UUID
    #: None: the approval of the whole plan; else the step a level 3 approval is for
    step_index: int | None
    level: int
    plan_hash: str
    state: ApprovalState
    requested_by: str
    decided_by: str | None
    decided_at: datetime | None
    expires_at: datetime
    comment: str | None
    created_at: datetime
    decisions: tuple[ApprovalDecision, ...] = ()

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Self:
        values = row_values(cls, row, "approvals", {"state": ApprovalState})
        values["decisions"] = tuple(
            ApprovalDecision.from_row(d) for d in values.get("decisions") or ()
        )
        return cls(**values)
