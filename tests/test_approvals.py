"""Approval workflow on a real database: levels, hash binding, expiry,
separation of duties, quorum, races and invalidation."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from opsconductor import approvals
from opsconductor.approvals import ApprovalRefused, ApprovalState, Decision, Pending, gate
from opsconductor.db import assets, executions
from opsconductor.db.connection import Database
from opsconductor.engine import Engine
from opsconductor.inventory import Asset
from opsconductor.records import Event, Execution
from opsconductor.status_machine import Status
from opsconductor.submission import Request, submit
from tests.helpers import admin
from tests.plans import command_step, plan_of

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _pending(**overrides: Any) -> Pending:
    fields: dict[str, Any] = {
        "level": 2,
        "state": ApprovalState.PENDING,
        "plan_hash": "a" * 64,
        "requested_by": "alice",
        "expires_at": NOW + timedelta(minutes=5),
        "approvers_so_far": (),
        "quorum": 1,
    }
    return Pending(**{**fields, **overrides})


@pytest.mark.parametrize(
    ("pending", "actor", "hash_", "reason"),
    [
        (_pending(), "bob", "b" * 64, "hash_mismatch"),
        (_pending(), "bob", None, "hash_required"),
        (_pending(), "alice", "a" * 64, "self_approval"),
        (_pending(state=ApprovalState.REJECTED), "bob", "a" * 64, "already_decided"),
        (_pending(expires_at=NOW), "bob", "a" * 64, "expired"),
        (
            _pending(level=3, quorum=2, approvers_so_far=("bob",)),
            "bob",
            "a" * 64,
            "duplicate_approver",
        ),
    ],
)
def test_rules_refuse(pending: Pending, actor: str, hash_: str | None, reason: str) -> None:
    with pytest.raises(ApprovalRefused) as caught:
        approvals.decide(pending, Decision.APPROVE, actor_id=actor, reviewed_hash=hash_, now=NOW)
    assert caught.value.reason == reason


def test_rules_level_1_needs_no_hash_and_allows_the_requester() -> None:
    outcome = approvals.decide(
        _pending(level=1), Decision.APPROVE, actor_id="alice", reviewed_hash=None, now=NOW
    )
    assert outcome.state == "approved"


def test_rules_quorum_counts_distinct_approvers() -> None:
    first = approvals.decide(
        _pending(level=3, quorum=2),
        Decision.APPROVE,
        actor_id="bob",
        reviewed_hash="a" * 64,
        now=NOW,
    )
    assert (first.state, first.approvals, first.needed) == (None, 1, 2)
    second = approvals.decide(
        _pending(level=3, quorum=2, approvers_so_far=("bob",)),
        Decision.APPROVE,
        actor_id="carol",
        reviewed_hash="a" * 64,
        now=NOW,
    )
    assert second.state == "approved"


def test_windows_by_level() -> None:
    assert [approvals.window(n).total_seconds() for n in (1, 2, 3)] == [300, 900, 1800]


async def _submit(db: Database, level: int, actor: str = "alice", **plan: Any) -> Execution:
    step = plan.pop("step", command_step("a", "echo ran"))
    submitted = await submit(
        db,
        Request(
            plan_of(step, approval_level=level, **plan),
            "default",
            await admin(db, actor),
            uuid.uuid4().hex,
        ),
    )
    return submitted.execution


async def _decide(
    db: Database,
    execution: Execution,
    actor: str,
    decision: Decision,
    hash_: str | None = None,
    comment: str | None = None,
) -> Execution:
    return await gate.decide(
        db,
        tenant_id="default",
        execution_id=str(execution.id),
        actor_id=actor,
        decision=decision,
        reviewed_hash=hash_,
        comment=comment,
    )


async def _events(db: Database, execution: Execution) -> list[Event]:
    async with db.connection() as conn:
        return await executions.events(conn, execution.id)


async def test_level_0_runs_at_once(db: Database) -> None:
    execution = await _submit(db, 0)
    assert execution.status == "approved"
    async with db.connection() as conn:
        cur = await conn.execute("SELECT count(*) AS n FROM execution.approvals")
        assert (await cur.fetchone() or {})["n"] == 0


async def test_level_1_approve_then_run(db: Database) -> None:
    execution = await _submit(db, 1)
    assert execution.status == "pending_approval"
    after = await _decide(db, execution, "bob", Decision.APPROVE)
    assert after.status == "approved"
    assert await Engine(db, actor_id="worker").run("default", execution.id) is Status.COMPLETED
    decisions = [e for e in await _events(db, execution) if e.event_type == "approval_decision"]
    assert decisions[0].actor_id == "bob"


async def test_reject_with_comment(db: Database) -> None:
    execution = await _submit(db, 1)
    after = await _decide(db, execution, "bob", Decision.REJECT, comment="not during freeze")
    assert after.status == "rejected" and after.status_reason == "not during freeze"


async def test_expiry_cancels_and_late_approval_is_refused(db: Database) -> None:
    execution = await _submit(db, 1)
    async with db.connection() as conn:
        await conn.execute(
            "UPDATE execution.approvals SET expires_at = now() - interval '1 second'"
        )
    with pytest.raises(ApprovalRefused, match="expired") as caught:
        await _decide(db, execution, "bob", Decision.APPROVE)
    assert caught.value.conflict
    async with db.connection() as conn:
        row = await executions.get(conn, "default", str(execution.id))
    assert row.status == "cancelled" and row.status_reason == "approval_expired"
    assert row.cancelled_by == gate.SWEEPER


async def test_sweep_expires_without_anyone_deciding(db: Database) -> None:
    execution = await _submit(db, 2)
    async with db.connection() as conn:
        await conn.execute("UPDATE execution.approvals SET expires_at = now()")
    assert await gate.expire_overdue(db) == 1
    assert await gate.expire_overdue(db) == 0
    async with db.connection() as conn:
        row = await executions.get(conn, "default", str(execution.id))
    assert row.status == "cancelled"


async def test_level_2_wrong_hash_refused_and_recorded(db: Database) -> None:
    execution = await _submit(db, 2)
    with pytest.raises(ApprovalRefused) as caught:
        await _decide(db, execution, "bob", Decision.APPROVE, "f" * 64)
    assert caught.value.reason == "hash_mismatch" and caught.value.conflict
    refused = [e for e in await _events(db, execution) if e.event_type == "approval_refused"]
    assert refused[0].payload["reason"] == "hash_mismatch"
    assert refused[0].payload["reviewed_hash"] == "f" * 64
    ok = await _decide(db, execution, "bob", Decision.APPROVE, execution.plan_hash)
    assert ok.status == "approved"


async def test_level_2_self_approval_refused(db: Database) -> None:
    execution = await _submit(db, 2, actor="alice")
    with pytest.raises(ApprovalRefused, match="separation of duties"):
        await _decide(db, execution, "alice", Decision.APPROVE, execution.plan_hash)


async def test_level_3_quorum_of_two(db: Database) -> None:
    async with db.connection() as conn:
        await conn.execute("UPDATE execution.tenants SET approval_quorum = 2")
    execution = await _submit(db, 3)
    one = await _decide(db, execution, "bob", Decision.APPROVE, execution.plan_hash)
    assert one.status == "pending_approval"
    with pytest.raises(ApprovalRefused, match="already approved"):
        await _decide(db, execution, "bob", Decision.APPROVE, execution.plan_hash)
    two = await _decide(db, execution, "carol", Decision.APPROVE, execution.plan_hash)
    assert two.status == "queued"  # level 3 runs on workers: approved, then queued


async def test_approval_after_cancel_is_refused(db: Database) -> None:
    execution = await _submit(db, 1)
    async with db.connection() as conn:
        await executions.transition(
            conn,
            execution.id,
            Status.PENDING_APPROVAL,
            Status.CANCELLED,
            actor_id="alice",
            reason="changed my mind",
        )
    with pytest.raises(ApprovalRefused, match="is cancelled"):
        await _decide(db, execution, "bob", Decision.APPROVE)


async def test_two_approvers_racing_exactly_one_decision_wins(
    database_url: str, db: Database
) -> None:
    execution = await _submit(db, 1)
    pools = [Database(database_url, max_size=1) for _ in range(2)]
    await asyncio.gather(*(p.open() for p in pools))
    try:
        results = await asyncio.gather(
            _decide(pools[0], execution, "bob", Decision.APPROVE),
            _decide(pools[1], execution, "carol", Decision.REJECT, comment="no"),
            return_exceptions=True,
        )
    finally:
        await asyncio.gather(*(p.close() for p in pools))
    winners = [r for r in results if isinstance(r, Execution)]
    losers = [r for r in results if isinstance(r, ApprovalRefused)]
    assert len(winners) == 1 and len(losers) == 1
    assert losers[0].reason in ("already_decided", "not_pending")
    changes = [e for e in await _events(db, execution) if e.event_type == "status_changed"]
    assert len(changes) == 1


async def test_target_set_change_invalidates_the_approval(db: Database) -> None:
    async with db.connection() as conn:
        await assets.add(
            conn, "default", Asset("web-1", "web-1", "127.0.0.1", "staging", tags={"role": "web"})
        )
    step = command_step("a", "true", targets={"tags": {"role": "web"}})
    execution = await _submit(db, 2, step=step)
    old_hash = execution.plan_hash
    await _decide(db, execution, "bob", Decision.APPROVE, old_hash)
    async with db.connection() as conn:  # someone adds a matching asset after the approval
        await assets.add(
            conn, "default", Asset("web-2", "web-2", "127.0.0.1", "staging", tags={"role": "web"})
        )
    engine = Engine(db, actor_id="worker")
    assert await engine.run("default", execution.id) is Status.PENDING_APPROVAL
    async with db.connection() as conn:
        row = await executions.get(conn, "default", str(execution.id))
    assert row.plan_hash != old_hash
    assert row.plan_snapshot["targets"] == [["web-1", "web-2"]]
    invalidated = [
        e for e in await _events(db, execution) if e.event_type == "approval_invalidated"
    ]
    assert invalidated[0].payload["old_plan_hash"] == old_hash
    with pytest.raises(ApprovalRefused, match="not the plan's current hash"):
        await _decide(db, row, "bob", Decision.APPROVE, old_hash)
    await _decide(db, row, "bob", Decision.APPROVE, row.plan_hash)
    assert await engine.run("default", execution.id) is Status.COMPLETED


async def test_invalidation_can_end_the_execution_per_tenant_setting(db: Database) -> None:
    async with db.connection() as conn:
        await conn.execute("UPDATE execution.tenants SET on_approval_invalidated = 'cancel'")
        await assets.add(
            conn, "default", Asset("web-1", "web-1", "127.0.0.1", "staging", tags={"role": "web"})
        )
    step = command_step("a", "true", targets={"tags": {"role": "web"}})
    execution = await _submit(db, 1, step=step)
    await _decide(db, execution, "bob", Decision.APPROVE)
    async with db.connection() as conn:
        await assets.delete(conn, "default", "web-1")
    assert await Engine(db, actor_id="w").run("default", execution.id) is Status.CANCELLED


async def test_workers_sweep_expired_approvals_without_any_waiter(db: Database) -> None:
    from opsconductor.worker import Worker, WorkerOptions

    execution = await _submit(db, 1)
    async with db.connection() as conn:
        await conn.execute("UPDATE execution.approvals SET expires_at = now()")
    worker = Worker(db, actor_id="w", options=WorkerOptions(concurrency=1, reap_every_s=0.1))
    serving = asyncio.create_task(worker.serve())
    try:
        for _ in range(100):
            async with db.connection() as conn:
                row = await executions.get(conn, "default", str(execution.id))
            if row.status == "cancelled":
                break
            await asyncio.sleep(0.1)
    finally:
        worker.stop()
        await serving
    assert row.status == "cancelled" and row.status_reason == "approval_expired"
