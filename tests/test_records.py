"""Typed records: built from rows as PostgreSQL returns them; closed sets checked."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from opsconductor import records
from opsconductor.errors import RecordError
from opsconductor.records import (
    ApprovalRequest,
    ApprovalState,
    Decision,
    Event,
    Execution,
    Mode,
    SlaClass,
    StepAttempt,
    StepResult,
)
from opsconductor.status_machine import Status, StepStatus

T0 = datetime(2026, 1, 1, tzinfo=UTC)
EID = uuid.UUID("7d9f1a52-3c1e-4e7a-9a4f-0b2f6f0a1c11")


def _execution_row(**overrides: Any) -> dict[str, Any]:
    """Every column of ``execution.executions``, as ``SELECT *`` returns it."""
    row: dict[str, Any] = {
        "id": EID,
        "tenant_id": "default",
        "actor_id": "alice",
        "idempotency_key": "k1",
        "key_released": False,
        "retry_of": None,
        "plan_name": "restart",
        "plan_snapshot": {"plan": {"name": "restart"}, "targets": [["web-1"]]},
        "plan_hash": "a" * 64,
        "status": "running",
        "status_reason": None,
        "mode": "background",
        "sla_class": "medium",
        "approval_level": 1,
        "priority": 5,
        "estimated_duration_s": 12.5,
        "timeout_at": T0 + timedelta(minutes=5),
        "trace_id": "t" * 32,
        "worker_id": "w1",
        "lease_renewals": 2,
        "cancel_checks_performed": 3,
        "cancelled_by": None,
        "cancelled_at": None,
        "cancel_requested_by": "bob",
        "cancel_requested_at": T0,
        "record_only": False,
        "sla_violated_at": None,
        "created_at": T0,
        "started_at": T0,
        "finished_at": None,
    }
    return {**row, **overrides}


def test_execution_from_a_full_row() -> None:
    execution = Execution.from_row(_execution_row())
    assert execution.id == EID
    assert execution.status is Status.RUNNING
    assert execution.mode is Mode.BACKGROUND
    assert execution.sla_class is SlaClass.MEDIUM
    assert execution.cancel_requested_by == "bob"
    assert execution.plan_snapshot["targets"] == [["web-1"]]
    with pytest.raises(dataclasses.FrozenInstanceError):
        execution.status = Status.FAILED  # type: ignore[misc]


def test_execution_ignores_extra_columns_of_joins_and_flags() -> None:
    row = _execution_row(window_passed=True, lease_token=uuid.uuid4(), attempt_count=1)
    assert Execution.from_row(row).plan_name == "restart"


def test_execution_row_missing_a_column_names_it() -> None:
    row = _execution_row()
    del row["plan_hash"], row["mode"]
    with pytest.raises(RecordError, match=r"executions row lacks column\(s\) plan_hash, mode"):
        Execution.from_row(row)


@pytest.mark.parametrize(
    ("column", "value"),
    [("status", "paused"), ("mode", "later"), ("sla_class", "glacial"), ("status", None)],
)
def test_unknown_values_of_closed_sets_are_refused_by_name(column: str, value: Any) -> None:
    with pytest.raises(RecordError) as caught:
        Execution.from_row(_execution_row(**{column: value}))
    message = str(caught.value)
    assert message.startswith(f"executions.{column}: {value!r} is not one of ")


def test_step_attempt_and_its_duration() -> None:
    attempt = StepAttempt.from_row(
        {
            "id": 7,
            "execution_id": EID,
            "tenant_id": "default",
            "step_index": 0,
            "step_name": "check",
            "step_type": "command",
            "target_asset_id": "web-1",
            "status": "awaiting_approval",
            "attempt": 1,
            "retry_count": 0,
            "started_at": T0,
            "finished_at": T0 + timedelta(seconds=1.5),
            "exit_code": None,
            "output": "",
            "stderr": "",
            "error": None,
        }
    )
    assert attempt.status is StepStatus.AWAITING_APPROVAL
    assert attempt.seconds == 1.5
    with pytest.raises(RecordError, match=r"execution_steps.status: 'interrupted'"):
        StepAttempt.from_row({**dataclasses.asdict(attempt), "status": "interrupted"})


def test_step_result_template_fields_are_plain_values() -> None:
    result = StepResult.from_row(
        {
            "step_name": "check",
            "target_asset_id": "web-1",
            "status": "completed",
            "exit_code": 0,
            "output": "ok",
            "stderr": "",
        }
    )
    fields = result.template_fields()
    assert fields == {"status": "completed", "exit_code": 0, "output": "ok", "stderr": ""}
    assert type(fields["status"]) is str


def test_event_statuses_are_optional_and_typed() -> None:
    row = {
        "id": 3,
        "execution_id": str(EID),  # as a JSON payload would carry it
        "tenant_id": "default",
        "event_type": "some_future_kind",  # an open set: kept as it is
        "from_status": None,
        "to_status": "queued",
        "actor_id": "alice",
        "payload": {"k": 1},
        "created_at": T0,
    }
    event = Event.from_row(row)
    assert event.execution_id == EID
    assert event.from_status is None and event.to_status is Status.QUEUED
    assert event.event_type == "some_future_kind"


def test_approval_history_row_with_aggregated_decisions() -> None:
    row = {
        "id": 1,
        "execution_id": EID,
        "step_index": None,
        "level": 2,
        "plan_hash": "a" * 64,
        "state": "approved",
        "requested_by": "alice",
        "decided_by": "bob",
        "decided_at": T0,
        "expires_at": T0 + timedelta(minutes=15),
        "comment": None,
        "created_at": T0,
        # json_build_object: timestamps arrive as text
        "decisions": [
            {
                "actor_id": "bob",
                "decision": "approve",
                "plan_hash": "a" * 64,
                "comment": "ok",
                "decided_at": "2026-01-01T00:01:00.5+00:00",
            }
        ],
    }
    approval = ApprovalRequest.from_row(row)
    assert approval.state is ApprovalState.APPROVED
    (decision,) = approval.decisions
    assert decision.decision is Decision.APPROVE
    assert decision.decided_at == T0 + timedelta(minutes=1, seconds=0.5)
    assert ApprovalRequest.from_row({**row, "decisions": None}).decisions == ()
    with pytest.raises(RecordError, match=r"approval_decisions.decision: 'abstain'"):
        ApprovalRequest.from_row(
            {**row, "decisions": [{**row["decisions"][0], "decision": "abstain"}]}
        )


def test_parse_accepts_members_and_values_only() -> None:
    assert records.parse(Mode, Mode.IMMEDIATE, "x") is Mode.IMMEDIATE
    assert records.parse(Mode, "immediate", "x") is Mode.IMMEDIATE
    with pytest.raises(RecordError, match="x: 1 is not one of immediate, background"):
        records.parse(Mode, 1, "x")
