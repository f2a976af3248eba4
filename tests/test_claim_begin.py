"""The claim begins new work (migration 0037): the same budget, row, event and metrics as the
engine's begin (engine/core.py _begin), only where the engine would begin at once, and a
worker that dies right after such a claim leaves an execution the next one resumes."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from opsconductor import metrics, policies
from opsconductor.approvals import Decision, gate
from opsconductor.db import executions, queue
from opsconductor.db import metrics as db_metrics
from opsconductor.db.connection import Database
from opsconductor.engine import Engine
from opsconductor.plan import Plan, parse_plan
from opsconductor.records import SlaClass
from opsconductor.status_machine import Status
from opsconductor.submission import Request, submit, submit_many
from opsconductor.worker import Worker, WorkerOptions
from tests.helpers import admin
from tests.test_queue import _no_host_filter

WORKER = "w-actor"


def _step(kind: str, **extra: Any) -> dict[str, Any]:
    step: dict[str, Any] = {"name": extra.pop("name", kind), "type": kind, **extra}
    if kind != "validate":
        step.setdefault("targets", {"hostnames": ["localhost"]})
    return step


def _plan(*steps: dict[str, Any], **extra: Any) -> Plan:
    return parse_plan({"name": "p", "steps": list(steps), **extra})


#: what policies.execution_timeout tells apart: the plan's own timeout, the policies of
#: declared and inferred action classes (the longest wins), explicit step timeouts times
#: their tries (validate steps' left out) when they sum to more, fractions
PLANS = {
    "inferred read": _plan(_step("noop")),
    "declared modify": _plan(_step("noop", action_class="modify")),
    "deploy and read": _plan(_step("noop", action_class="deploy"), _step("noop", name="b")),
    "http GET and POST": _plan(
        _step("http", url="http://x/", name="get"),
        _step("http", url="http://x/", method="POST", name="post"),
    ),
    "explicit steps win": _plan(
        _step("command", command="true", action_class="read", timeout_s=400, retries=2),
        _step("noop", name="b", timeout_s=0.25, retries=3),
    ),
    "explicit steps lose": _plan(_step("noop", timeout_s=1.5)),
    "validate left out": _plan(
        _step("command", command="true", name="c", action_class="modify", timeout_s=2),
        _step("validate", step="c", expect={"exit_code": 0}, timeout_s=9000),
    ),
    "plan timeout": _plan(
        _step("command", command="true", action_class="deploy", timeout_s=900), timeout_s=42.5
    ),
}


async def _fetch(db: Database, sql: str, *params: Any) -> list[dict[str, Any]]:
    async with db.connection() as conn:
        cur = await conn.execute(sql, params)
        return await cur.fetchall()


async def _matrix(db: Database) -> policies.PolicyMatrix:
    async with db.connection() as conn:
        rows = await executions.policies(conn)
    return {(r["sla_class"], r["action_class"]): policies.TimeoutPolicy.from_row(r) for r in rows}


async def _sql_budget(db: Database, sla: str, t: policies.PlanTimeout | None) -> float | None:
    (row,) = await _fetch(
        db,
        "SELECT execution.execution_timeout_s(%s, %s, %s, %s) AS s",
        sla,
        None if t is None else list(t.action_classes),
        None if t is None else t.plan_s,
        None if t is None else t.steps_s,
    )
    return None if row["s"] is None else float(row["s"])


@pytest.mark.parametrize("sla", list(SlaClass))
async def test_the_claims_budget_is_execution_timeout(db: Database, sla: SlaClass) -> None:
    matrix = await _matrix(db)
    for name, plan in PLANS.items():
        expected = policies.execution_timeout(plan, sla.value, matrix)
        got = await _sql_budget(db, sla.value, policies.plan_timeout(plan))
        assert got == expected, name
    # Nothing stored (queued before 0037): no budget, the engine begins it.
    assert await _sql_budget(db, sla.value, None) is None
    # A class without a policy: the engine's look-up fails, and the claim leaves it to it.
    async with db.connection() as conn:
        await conn.execute(
            "DELETE FROM execution.timeout_policies WHERE sla_class = %s AND action_class = "
            "'deploy'",
            (sla.value,),
        )
    deploys = PLANS["deploy and read"]
    with pytest.raises(KeyError):
        policies.execution_timeout(deploys, sla.value, await _matrix(db))
    assert await _sql_budget(db, sla.value, policies.plan_timeout(deploys)) is None
    # ... unless the plan gives its own timeout, which needs no policy
    own = PLANS["plan timeout"]
    assert await _sql_budget(db, sla.value, policies.plan_timeout(own)) == 42.5


async def test_single_and_bulk_submissions_store_the_plans_part(db: Database) -> None:
    actor = await admin(db, "tester")
    plans = list(PLANS.values())
    one = [
        (await submit(db, Request(p, "default", actor, uuid.uuid4().hex, enqueue=True))).execution
        for p in plans
    ]
    many = [
        s.execution
        for s in await submit_many(
            db, [Request(p, "default", actor, uuid.uuid4().hex, enqueue=True) for p in plans]
        )
    ]
    matrix = await _matrix(db)
    for execution in one + many:
        assert execution.status is Status.QUEUED
        (row,) = await _fetch(
            db,
            "SELECT action_classes, plan_timeout_s, steps_timeout_s, "
            "extract(epoch FROM e.timeout_at - e.started_at)::float8 AS budget "
            "FROM execution.execution_queue q JOIN execution.executions e ON e.id = q.execution_id"
            " WHERE q.execution_id = %s",
            execution.id,
        )
        plan = parse_plan(execution.plan_snapshot["plan"])
        wanted = policies.plan_timeout(plan)
        assert (tuple(row["action_classes"]), row["plan_timeout_s"], row["steps_timeout_s"]) == (
            wanted.action_classes,
            wanted.plan_s,
            wanted.steps_s,
        )
    await _no_host_filter(db)  # all on localhost
    leases = await queue.claim(db, "w1", limit=2 * len(plans), begin_as=WORKER)
    assert len(leases) == 2 * len(plans) and all(lease.deadline for lease in leases)
    for lease in leases:
        assert lease.execution is not None
        (row,) = await _fetch(
            db,
            "SELECT extract(epoch FROM timeout_at - started_at)::float8 AS budget, status "
            "FROM execution.executions WHERE id = %s",
            lease.execution_id,
        )
        plan = parse_plan(lease.execution["plan_snapshot"]["plan"])
        budget = policies.execution_timeout(plan, lease.execution["sla_class"], matrix)
        assert (row["status"], row["budget"]) == ("running", budget)


def _samples(found: db_metrics.Snapshot) -> dict[tuple[str, tuple[Any, ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for family in text_string_to_metric_families(metrics.exposition(found).decode()):
        if family.name == "opsc_queue_oldest_wait_seconds":
            continue  # reads the clock
        for s in family.samples:
            if s.value != 0:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_the_claim_begins_exactly_as_the_engine_does(db: Database) -> None:
    actor = await admin(db, "tester")
    plan = PLANS["deploy and read"]
    ids = [
        (await submit(db, Request(plan, "default", actor, key, enqueue=True))).execution.id
        for key in ("by-claim", "by-engine")
    ]
    await _no_host_filter(db)  # both on localhost
    (claimed,) = await queue.claim(db, "w1", limit=1, begin_as=WORKER)
    (plain,) = await queue.claim(db, "w1", limit=1)
    assert claimed.execution_id == ids[0] and plain.execution_id == ids[1]
    assert claimed.deadline is not None and plain.deadline is None
    assert plain.execution is not None and plain.execution["status"] == "queued"
    # what engine/core.py _begin writes
    budget = policies.execution_timeout(plan, plain.execution["sla_class"], await _matrix(db))
    await executions.transition(
        db.batch,
        plain.execution_id,
        Status.QUEUED,
        Status.RUNNING,
        actor_id=WORKER,
        timeout_at=datetime.now(UTC) + timedelta(seconds=budget),
        worker_id="w1",
    )

    rows = await _fetch(
        db, "SELECT * FROM execution.executions WHERE id = ANY(%s) ORDER BY idempotency_key", ids
    )
    by_claim, by_engine = rows  # "by-claim" sorts first
    varying = {"id", "idempotency_key", "trace_id", "created_at", "started_at", "timeout_at"}
    assert {k: v for k, v in by_claim.items() if k not in varying} == {
        k: v for k, v in by_engine.items() if k not in varying
    }
    assert by_claim["status"] == "running" and by_claim["worker_id"] == "w1"
    assert by_claim["timeout_at"] - by_claim["started_at"] == timedelta(seconds=budget)
    # The lease carries the row as it now is (the engine reads nothing again).
    assert claimed.execution is not None
    assert {k: claimed.execution[k] for k in by_claim} == by_claim

    events = [
        await _fetch(
            db,
            "SELECT event_type, from_status, to_status, actor_id, payload "
            "FROM execution.execution_events WHERE execution_id = %s ORDER BY id",
            execution_id,
        )
        for execution_id in ids
    ]
    for event in events[0] + events[1]:
        event["payload"].pop("idempotency_key", None)  # of the submissions, apart by design
    assert events[0] == events[1]
    assert events[0][-1] == {
        "event_type": "status_changed",
        "from_status": "queued",
        "to_status": "running",
        "actor_id": WORKER,
        "payload": {},
    }
    # the roll-up counted the claim's begin as it counts transition's: equal to a recount
    async with db.connection() as conn:
        fast = _samples(await db_metrics.snapshot(conn, stale_s=30))
        slow = _samples(await db_metrics.recount(conn, stale_s=30))
    assert fast.keys() == slow.keys()
    assert all(fast[k] == pytest.approx(slow[k], rel=1e-9) for k in fast)


async def test_gated_resumed_unknown_and_held_work_is_left_to_the_engine(
    db: Database, database_url: str
) -> None:
    actor = await admin(db, "tester")

    async def enqueue(plan: Plan) -> uuid.UUID:
        new = await submit(db, Request(plan, "default", actor, uuid.uuid4().hex, enqueue=True))
        return new.execution.id

    async def claim_one() -> queue.Lease:
        (lease,) = await queue.claim(db, "w1", limit=1, begin_as=WORKER)
        return lease

    async def status(execution_id: uuid.UUID) -> str:
        (row,) = await _fetch(
            db, "SELECT status FROM execution.executions WHERE id = %s", execution_id
        )
        return str(row["status"])

    # approval level 1: gate.still_valid re-checks it before anything starts
    gated = await enqueue(_plan(_step("noop"), approval_level=1))
    await gate.decide(
        db,
        tenant_id="default",
        execution_id=str(gated),
        actor_id="approver",
        decision=Decision.APPROVE,
    )
    lease = await claim_one()
    assert (lease.execution_id, lease.deadline, await status(gated)) == (gated, None, "queued")
    assert await Engine(db, actor_id=WORKER).run("default", gated, lease=lease) is Status.COMPLETED

    # queued before migration 0037 (no budget stored)
    unknown = await enqueue(_plan(_step("noop")))
    async with db.connection() as conn:
        await conn.execute("UPDATE execution.execution_queue SET steps_timeout_s = NULL")
    lease = await claim_one()
    assert (lease.execution_id, lease.deadline, await status(unknown)) == (unknown, None, "queued")
    assert (
        await Engine(db, actor_id=WORKER).run("default", unknown, lease=lease) is Status.COMPLETED
    )

    # held by another transaction (a cancel about to delete its queue row): not waited for
    held = await enqueue(_plan(_step("noop")))
    with psycopg.connect(database_url) as other:
        other.execute("SELECT 1 FROM execution.executions WHERE id = %s FOR UPDATE", (held,))
        lease = await asyncio.wait_for(claim_one(), 60)  # a wait would be a hang, not slow
        other.rollback()
    assert (lease.execution_id, lease.deadline, await status(held)) == (held, None, "queued")
    assert await Engine(db, actor_id=WORKER).run("default", held, lease=lease) is Status.COMPLETED

    # begun by a claim, handed back: the next claim resumes it (nothing to begin)
    resumed = await enqueue(_plan(_step("noop")))
    first = await claim_one()
    assert first.deadline is not None and await status(resumed) == "running"
    await queue.release(db, [first])
    again = await claim_one()
    assert (again.execution_id, again.deadline, again.interruption) == (
        resumed,
        None,
        "worker shutdown",
    )
    assert await Engine(db, actor_id=WORKER).run("default", resumed, lease=again) is (
        Status.COMPLETED
    )


async def _changes(db: Database, execution_id: uuid.UUID) -> list[tuple[Any, ...]]:
    rows = await _fetch(
        db,
        "SELECT event_type, from_status, to_status, actor_id FROM execution.execution_events "
        "WHERE execution_id = %s ORDER BY id",
        execution_id,
    )
    return [tuple(r.values()) for r in rows]


async def test_a_worker_drains_begun_work_with_the_events_of_before(db: Database) -> None:
    actor = await admin(db, "tester")
    plan = _plan(_step("noop"), _step("noop", name="second", action_class="modify"))
    ids = [
        (await submit(db, Request(plan, "default", actor, key, enqueue=True))).execution.id
        for key in ("a", "b")
    ]
    worker = Worker(db, actor_id=WORKER, options=WorkerOptions())
    await _no_host_filter(db)  # both on localhost
    (begun,) = await worker._claim(1)  # the worker's own claim begins it
    (plain,) = await queue.claim(db, worker.worker_id, limit=1)
    assert begun.deadline is not None and plain.deadline is None
    await asyncio.gather(worker._execute(begun), worker._execute(plain))
    first, second = [await _changes(db, i) for i in ids]
    assert first == second
    assert first.count(("status_changed", "queued", "running", WORKER)) == 1
    assert first[-1] == ("status_changed", "running", "completed", WORKER)
    rows = await _fetch(
        db,
        "SELECT execution_id, count(*) AS n FROM execution.execution_steps "
        "WHERE status = 'completed' GROUP BY 1",
    )
    assert sorted(r["n"] for r in rows) == [2, 2]


async def test_a_worker_dying_right_after_a_beginning_claim_is_resumed(db: Database) -> None:
    """Its lease expires with the execution running and no step started: the reaper takes
    it back uncharged, the next claim resumes it (not begins it again), and every step
    runs once."""
    actor = await admin(db, "tester")
    plan = _plan(_step("noop"), _step("noop", name="second"))
    execution_id = (
        await submit(db, Request(plan, "default", actor, uuid.uuid4().hex, enqueue=True))
    ).execution.id
    (lease,) = await queue.claim(db, "w-dead", limit=1, lease_s=0.3, begin_as=WORKER)
    assert lease.deadline is not None
    (before,) = await _fetch(
        db, "SELECT timeout_at FROM execution.executions WHERE id = %s", execution_id
    )
    for _ in range(100):  # until the lease has expired and the reaper took it back
        await asyncio.sleep(0.1)
        reaped = await queue.reap(db, "reaper")
        if reaped is not None and reaped.requeued:
            break
    else:
        raise AssertionError("the lease was never reaped")
    (again,) = await queue.claim(db, "w2", limit=1, begin_as=WORKER)
    assert (again.execution_id, again.deadline) == (execution_id, None)
    assert again.interruption == "lease expiry"
    assert again.execution is not None and again.execution["timeout_at"] > before["timeout_at"]
    final = await Engine(db, actor_id=WORKER, worker_id="w2").run(
        "default", execution_id, lease=again
    )
    assert final is Status.COMPLETED
    changes = await _changes(db, execution_id)
    assert changes.count(("status_changed", "queued", "running", WORKER)) == 1
    assert ("resumed", None, None, WORKER) in changes
    steps = await _fetch(
        db,
        "SELECT step_index, attempt, status FROM execution.execution_steps "
        "WHERE execution_id = %s ORDER BY step_index, attempt",
        execution_id,
    )
    assert [tuple(s.values()) for s in steps] == [(0, 1, "completed"), (1, 1, "completed")]
