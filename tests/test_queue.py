"""The queue in PostgreSQL, in-process: enqueue with submission, claim order and exclusivity,
lease renewal and theft, retries, dead-letter queue and requeue, the reaper, routing history.
Worker *processes* are exercised in test_worker_processes.py."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest

from opsconductor.approvals import Decision, gate
from opsconductor.db import assets, executions, queue, steps
from opsconductor.db.connection import Database
from opsconductor.engine import Engine
from opsconductor.errors import BadInput, LeaseLost, NotFound
from opsconductor.inventory import Asset
from opsconductor.plan import Plan
from opsconductor.records import Execution
from opsconductor.status_machine import Status
from opsconductor.submission import Request, submit
from opsconductor.worker import Worker, WorkerOptions
from tests.helpers import admin
from tests.plans import command_step, plan_of


async def _enqueue(db: Database, plan: Plan, actor: str | None = None) -> uuid.UUID:
    """Queue ``plan`` as ``actor`` (default: an admin of the tenant)."""
    actor = actor or await admin(db, "tester")
    submitted = await submit(db, Request(plan, "default", actor, uuid.uuid4().hex, enqueue=True))
    return uuid.UUID(str(submitted.execution.id))


async def _hosts(db: Database, count: int) -> list[dict[str, Any]]:
    """``count`` assets of their own (one claim hands out one run per host: migration
    0042), each as a step's targets."""
    async with db.connection() as conn:
        for i in range(count):
            await assets.add(conn, "default", Asset(f"own-{i}", f"own-{i}", "127.0.0.1", "staging"))
    return [{"assets": [f"own-{i}"]} for i in range(count)]


async def _no_host_filter(db: Database) -> None:
    """For tests that claim runs of one host one after another without running them: a
    run claimed a moment ago holds its first host back from the claim (migration 0042)."""
    async with db.connection() as conn:
        await conn.execute("UPDATE execution.execution_queue SET first_locks = NULL")


async def _fetch(db: Database, sql: str, *params: Any) -> list[dict[str, Any]]:
    async with db.connection() as conn:
        cur = await conn.execute(sql, params)
        return await cur.fetchall()


def _read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


async def _wait_for_text(path: Path, text: str, timeout_s: float = 30) -> None:
    for _ in range(int(timeout_s / 0.02)):
        if text in _read(path):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{text!r} never appeared in {path}")


async def _status(db: Database, execution_id: uuid.UUID) -> str:
    rows = await _fetch(db, "SELECT status FROM execution.executions WHERE id = %s", execution_id)
    return str(rows[0]["status"])


async def test_submit_enqueues_in_the_submission_transaction(db: Database) -> None:
    execution_id = await _enqueue(db, plan_of(command_step("a", "true"), priority=3))
    row = (await _fetch(db, "SELECT * FROM execution.execution_queue"))[0]
    assert row["execution_id"] == execution_id and row["priority"] == 3
    assert row["lease_token"] is None and row["attempt_count"] == 0
    # fast/read policy: 3 attempts, 35 s visibility timeout
    assert (row["max_attempts"], row["lease_timeout_s"]) == (3, 35)
    changes = await _fetch(
        db,
        "SELECT from_status::text, to_status::text FROM execution.execution_events "
        "WHERE execution_id = %s AND event_type = 'status_changed' ORDER BY id",
        execution_id,
    )
    assert [(c["from_status"], c["to_status"]) for c in changes] == [("approved", "queued")]
    assert await _status(db, execution_id) == "queued"


async def test_submit_wakes_a_listener(db: Database) -> None:
    listening = db.notifications(queue.CHANNEL)
    assert await anext(listening) == ""  # subscribed
    await _enqueue(db, plan_of(command_step("a", "true")))
    assert await asyncio.wait_for(anext(listening), 10) == ""
    await listening.aclose()


async def test_claim_takes_priority_then_age_and_never_twice(db: Database) -> None:
    one, two, three = await _hosts(db, 3)
    low = await _enqueue(
        db, plan_of(command_step("a", "true", targets=one), name="low", priority=9)
    )
    old = await _enqueue(
        db, plan_of(command_step("a", "true", targets=two), name="old", priority=2)
    )
    new = await _enqueue(
        db, plan_of(command_step("a", "true", targets=three), name="new", priority=2)
    )
    first = await queue.claim(db, "w1", limit=1)
    second = await queue.claim(db, "w2", limit=1)
    third = await queue.claim(db, "w3", limit=5)
    assert [lease.execution_id for lease in first + second + third] == [old, new, low]
    assert await queue.claim(db, "w4", limit=5) == []
    assert len({lease.token for lease in first + second + third}) == 3


async def test_concurrent_claims_split_the_work(db: Database) -> None:
    hosts = await _hosts(db, 40)
    ids = {
        await _enqueue(db, plan_of(command_step("a", "true", targets=hosts[i]), name=f"p{i}"))
        for i in range(40)
    }
    batches = await asyncio.gather(*(queue.claim(db, f"w{i}", limit=7) for i in range(8)))
    claimed = [lease.execution_id for batch in batches for lease in batch]
    assert sorted(claimed) == sorted(ids)  # every one claimed, none twice


async def test_renewal_extends_held_leases_counts_them_and_reports_lost_ones(
    db: Database,
) -> None:
    a = await _enqueue(db, plan_of(command_step("a", "true"), name="a"))
    b = await _enqueue(db, plan_of(command_step("a", "true"), name="b"))
    leases = await queue.claim(db, "w1", limit=2, lease_s=60)
    forged = [
        lease if lease.execution_id == a else queue.Lease(b, "default", uuid.uuid4(), 1, 3, 60)
        for lease in leases
    ]
    assert await queue.renew(db, forged) == {a}
    assert await queue.renew(db, forged) == {a}
    renewals = await _fetch(db, "SELECT id, lease_renewals FROM execution.executions")
    assert {r["id"]: r["lease_renewals"] for r in renewals} == {a: 2, b: 0}


async def test_a_worker_whose_lease_was_stolen_cannot_commit_its_result(
    db: Database, work_dir: Path
) -> None:
    log, gate = work_dir / "log", work_dir / "gate"
    plan = plan_of(
        command_step("first", f"echo first >> {log}", action_class="modify"),
        command_step(
            "slow", f"echo slow >> {log}; while [ ! -f {gate} ]; do sleep 0.02; done", timeout_s=60
        ),
    )
    execution_id = await _enqueue(db, plan)
    (stale,) = await queue.claim(db, "worker-a", limit=1, lease_s=0.5)
    zombie = asyncio.create_task(
        Engine(db, actor_id="a", worker_id="worker-a").run("default", execution_id, lease=stale)
    )
    await _wait_for_text(log, "slow")
    # worker-a stalls without renewing past its visibility timeout; the reaper hands it on
    await asyncio.sleep(0.7)
    assert await queue.reap(db, "reaper") == queue.Reaped(requeued=1, dead_lettered=0)
    await db_make_available(db)
    (fresh,) = await queue.claim(db, "worker-b", limit=1, lease_s=60)
    assert fresh.execution_id == execution_id and fresh.token != stale.token

    gate.touch()  # worker-a wakes up and tries to record the end
    with pytest.raises(LeaseLost):
        await zombie
    assert await _status(db, execution_id) == "running"  # its ending was rolled back
    ends = await _fetch(
        db,
        "SELECT count(*) AS n FROM execution.execution_events WHERE execution_id = %s "
        "AND to_status = 'completed'",
        execution_id,
    )
    assert ends[0]["n"] == 0

    final = await Engine(db, actor_id="b", worker_id="worker-b").run(
        "default", execution_id, lease=fresh
    )
    assert final is Status.COMPLETED
    assert _read(log).split() == ["first", "slow"]  # worker-b re-ran nothing that finished
    assert await _fetch(db, "SELECT * FROM execution.execution_queue") == []


async def db_make_available(db: Database) -> None:
    """Skip the retry back-off the reaper imposed, so the test need not sleep through it."""
    async with db.connection() as conn:
        await conn.execute("UPDATE execution.execution_queue SET available_at = now()")


async def test_failed_attempts_back_off_then_dead_letter_then_requeue(db: Database) -> None:
    execution_id = await _enqueue(db, plan_of(command_step("a", "true")))
    outcomes = []
    for attempt in range(1, 4):
        (lease,) = await queue.claim(db, "w", limit=1)
        assert lease.attempt == attempt and lease.max_attempts == 3
        outcomes.append(await queue.fail(db, lease, "boom", "w"))
        if attempt < 3:
            row = (await _fetch(db, "SELECT * FROM execution.execution_queue"))[0]
            assert row["last_error"] == "boom" and row["lease_token"] is None
            wait = await queue.next_available_in(db)
            assert wait is not None and wait > 0  # backing off: not claimable at once
            assert await queue.claim(db, "w", limit=1) == []
            await db_make_available(db)
    assert outcomes == ["retry", "retry", "dead_letter"]
    assert await _fetch(db, "SELECT * FROM execution.execution_queue") == []
    async with db.connection() as conn:
        (entry,) = await queue.dead_letters(conn, "default")
    assert entry["execution_id"] == execution_id and entry["attempt_count"] == 3
    assert entry["failure_reason"] == "boom (attempt 3 of 3)"
    row = (await _fetch(db, "SELECT * FROM execution.executions"))[0]
    assert row["status"] == "queued" and row["status_reason"].startswith("dead-lettered: boom")

    await queue.requeue(db, "default", str(execution_id), "operator")
    async with db.connection() as conn:
        assert await queue.dead_letters(conn, "default") == []
        (history,) = await queue.dead_letters(conn, "default", include_requeued=True)
    assert history["requeued_by"] == "operator"
    (lease,) = await queue.claim(db, "w", limit=1)
    assert lease.attempt == 1  # a fresh budget
    final = await Engine(db, actor_id="w").run("default", execution_id, lease=lease)
    assert final is Status.COMPLETED
    row = (await _fetch(db, "SELECT * FROM execution.executions"))[0]
    assert row["status_reason"] is None


async def test_requeue_refuses_what_is_not_dead_lettered(db: Database) -> None:
    execution_id = await _enqueue(db, plan_of(command_step("a", "true")))
    with pytest.raises(NotFound, match="not in the dead-letter queue"):
        await queue.requeue(db, "default", str(execution_id), "operator")
    (lease,) = await queue.claim(db, "w", limit=1)
    await Engine(db, actor_id="w").run("default", execution_id, lease=lease)
    with pytest.raises(BadInput, match="completed: it has ended"):
        await queue.requeue(db, "default", str(execution_id), "operator")


async def test_a_lost_lease_changes_nothing_on_failure(db: Database) -> None:
    await _enqueue(db, plan_of(command_step("a", "true")))
    (lease,) = await queue.claim(db, "w", limit=1)
    forged = queue.Lease(lease.execution_id, "default", uuid.uuid4(), 1, 3, 30)
    assert await queue.fail(db, forged, "boom", "w") is None
    row = (await _fetch(db, "SELECT * FROM execution.execution_queue"))[0]
    assert row["lease_token"] == lease.token and row["last_error"] is None


async def test_hand_back_makes_work_available_at_once_without_spending_an_attempt(
    db: Database,
) -> None:
    execution_id = await _enqueue(db, plan_of(command_step("a", "true")))
    (lease,) = await queue.claim(db, "w1", limit=1)
    assert await queue.release(db, [lease]) == {execution_id}
    (again,) = await queue.claim(db, "w2", limit=1)
    assert again.attempt == 1


async def test_only_one_reaper_runs_at_a_time(db: Database) -> None:
    await _enqueue(db, plan_of(command_step("a", "true")))
    await queue.claim(db, "w", limit=1, lease_s=0.5)
    await asyncio.sleep(0.7)
    async with db.transaction() as conn:
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (queue.REAPER_LOCK_KEY,))
        assert await queue.reap(db, "other") is None  # someone else is reaping
    assert await queue.reap(db, "me") == queue.Reaped(requeued=1, dead_lettered=0)


async def test_reaper_dead_letters_a_lease_that_expired_on_its_last_attempt(
    db: Database,
) -> None:
    execution_id = await _enqueue(db, plan_of(command_step("a", "true")))
    for _ in range(3):
        await db_make_available(db)
        await queue.claim(db, "w", limit=1, lease_s=0.3)
        await asyncio.sleep(0.4)
        await queue.reap(db, "reaper")
    async with db.connection() as conn:
        (entry,) = await queue.dead_letters(conn, "default")
    assert entry["execution_id"] == execution_id
    assert entry["failure_reason"] == "lease expired on worker w (attempt 3 of 3)"
    events = await _fetch(
        db,
        "SELECT event_type FROM execution.execution_events WHERE execution_id = %s "
        "AND event_type IN ('retry_scheduled', 'dead_lettered') ORDER BY id",
        execution_id,
    )
    assert [e["event_type"] for e in events] == [
        "retry_scheduled",
        "retry_scheduled",
        "dead_lettered",
    ]


async def test_resume_reruns_an_interrupted_idempotent_step_but_not_finished_ones(
    db: Database, work_dir: Path
) -> None:
    log = work_dir / "log"
    gate = work_dir / "gate"
    plan = plan_of(
        command_step("first", f"echo first >> {log}", action_class="modify"),
        command_step(
            "wait", f"echo wait >> {log}; while [ ! -f {gate} ]; do sleep 0.02; done", timeout_s=60
        ),
        command_step("last", f"echo last >> {log}", action_class="modify"),
    )
    execution_id = await _enqueue(db, plan)
    (lease,) = await queue.claim(db, "w1", limit=1)
    task = asyncio.create_task(Engine(db, actor_id="w1").run("default", execution_id, lease=lease))
    await _wait_for_text(log, "wait")
    task.cancel()  # the worker hands it back mid-step
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await _status(db, execution_id) == "running"
    await queue.release(db, [lease])

    gate.touch()
    (again,) = await queue.claim(db, "w2", limit=1)
    final = await Engine(db, actor_id="w2").run("default", execution_id, lease=again)
    assert final is Status.COMPLETED
    assert log.read_text().split() == ["first", "wait", "wait", "last"]
    async with db.connection() as conn:
        rows = await steps.list_for(conn, execution_id)
    assert [(r.step_index, r.attempt, r.status) for r in rows] == [
        (0, 1, "completed"),
        (1, 1, "cancelled"),
        (1, 2, "completed"),
        (2, 1, "completed"),
    ]


async def test_resume_fails_interrupted_when_the_step_in_flight_is_not_idempotent(
    db: Database, work_dir: Path
) -> None:
    log = work_dir / "log"
    plan = plan_of(
        command_step("first", f"echo first >> {log}"),
        command_step("deploy", f"echo deploy >> {log}; sleep 30", action_class="deploy"),
        command_step("after", f"echo after >> {log}"),
    )
    execution_id = await _enqueue(db, plan)
    (lease,) = await queue.claim(db, "w1", limit=1)
    task = asyncio.create_task(Engine(db, actor_id="w1").run("default", execution_id, lease=lease))
    await _wait_for_text(log, "deploy")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await queue.release(db, [lease])

    (again,) = await queue.claim(db, "w2", limit=1)
    final = await Engine(db, actor_id="w2").run("default", execution_id, lease=again)
    assert final is Status.FAILED
    row = (await _fetch(db, "SELECT * FROM execution.executions"))[0]
    assert row["status_reason"].startswith("interrupted: step 'deploy' on localhost")
    assert log.read_text().split() == ["first", "deploy"]
    async with db.connection() as conn:
        rows = await steps.list_for(conn, execution_id)
    assert [(r.step_index, r.status) for r in rows] == [
        (0, "completed"),
        (1, "failed"),
        (2, "skipped"),
    ]
    assert await _fetch(db, "SELECT * FROM execution.execution_queue") == []


async def test_observed_p95_routes_slow_step_types_to_the_background(db: Database) -> None:
    plan = plan_of(command_step("a", "true"))
    first = await submit(db, Request(plan, "default", await admin(db, "tester"), "k1"))
    assert first.execution.sla_class == "fast"  # no history: 1 s default per command
    async with db.connection() as conn:
        for attempt in range(2, 22):  # 20 finished attempts, 5 to 14 s each
            await conn.execute(
                "INSERT INTO execution.execution_steps (execution_id, step_index, step_name, "
                "step_type, tenant_id, target_asset_id, status, attempt, started_at, "
                "finished_at) VALUES (%s, 0, 'a', 'command', 'default', 'localhost', "
                "'running', %s, now() - make_interval(secs => %s), now())",
                (first.execution.id, attempt, 5 + (attempt - 2) / 2),
            )
        # finished (an attempt is created pending or running, then ends: see status_machine)
        await conn.execute(
            "UPDATE execution.execution_steps SET status = 'completed' WHERE attempt > 1"
        )
        observed = await steps.observed_p95(conn, "default", ["command", "validate"])
    assert set(observed) == {"command"}  # validate has no history: default stays
    assert 13.5 < observed["command"] <= 14.5
    second = await submit(db, Request(plan, "default", "tester", "k2", enqueue=True))
    assert (second.execution.sla_class, second.execution.mode) == ("medium", "background")
    row = (await _fetch(db, "SELECT lease_timeout_s, max_attempts FROM execution.execution_queue"))[
        0
    ]
    # medium/read policy lease is 45 s; twice the observed p95 (~28 s) stays below it
    assert (row["lease_timeout_s"], row["max_attempts"]) == (45, 5)


async def test_duplicate_submission_is_not_enqueued_twice(db: Database) -> None:
    plan = plan_of(command_step("a", "true"))
    one = await submit(db, Request(plan, "default", "tester", "same", enqueue=True))
    two = await submit(db, Request(plan, "default", "tester", "same", enqueue=True))
    assert not two.created and two.execution.id == one.execution.id
    assert len(await _fetch(db, "SELECT * FROM execution.execution_queue")) == 1
    async with db.connection() as conn:
        events = await executions.events(conn, one.execution.id)
    assert [e.event_type for e in events].count("duplicate_submission") == 1


async def _approve(db: Database, execution_id: uuid.UUID) -> Execution:
    return await gate.decide(
        db,
        tenant_id="default",
        execution_id=str(execution_id),
        actor_id="approver",
        decision=Decision.APPROVE,
    )


async def test_background_work_is_queued_when_approved_and_not_before(db: Database) -> None:
    execution_id = await _enqueue(db, plan_of(command_step("a", "true"), approval_level=1))
    assert await _status(db, execution_id) == "pending_approval"
    assert await queue.claim(db, "w", limit=5) == []  # nothing runs before the approval
    approved = await _approve(db, execution_id)
    assert approved.status == "queued"
    (lease,) = await queue.claim(db, "w", limit=5)
    final = await Engine(db, actor_id="w").run("default", execution_id, lease=lease)
    assert final is Status.COMPLETED


async def test_run_here_work_is_not_queued_when_approved(db: Database) -> None:
    plan = plan_of(command_step("a", "true"), approval_level=1)
    submitted = await submit(db, Request(plan, "default", await admin(db, "tester"), "k"))
    approved = await _approve(db, submitted.execution.id)
    assert (approved.status, approved.mode) == ("approved", "immediate")
    assert await _fetch(db, "SELECT * FROM execution.execution_queue") == []


async def test_a_worker_drops_queued_work_whose_approval_no_longer_matches(
    db: Database,
) -> None:
    async with db.connection() as conn:
        await assets.add(
            conn, "default", Asset("web-1", "web-1", "127.0.0.1", "staging", tags={"role": "web"})
        )
    plan = plan_of(command_step("a", "true", targets={"tags": {"role": "web"}}), approval_level=1)
    execution_id = await _enqueue(db, plan)
    await _approve(db, execution_id)
    async with db.connection() as conn:  # the tag now matches one more host than approved
        await assets.add(
            conn, "default", Asset("web-2", "web-2", "127.0.0.1", "staging", tags={"role": "web"})
        )
    (lease,) = await queue.claim(db, "w", limit=1)
    final = await Engine(db, actor_id="w").run("default", execution_id, lease=lease)
    assert final is Status.PENDING_APPROVAL
    assert await _fetch(db, "SELECT * FROM execution.execution_queue") == []
    assert (await _approve(db, execution_id)).status == "queued"  # approved again: queued


async def test_worker_retries_work_a_stale_worker_started_but_drops_ended_work(
    db: Database,
) -> None:
    worker = Worker(db, actor_id="w", options=WorkerOptions())
    one, two = await _hosts(db, 2)
    raced = await _enqueue(db, plan_of(command_step("a", "true", targets=one), name="raced"))
    ended = await _enqueue(db, plan_of(command_step("a", "true", targets=two), name="ended"))
    leases = {lease.execution_id: lease for lease in await queue.claim(db, "w", limit=2)}
    async with db.connection() as conn:
        # between our claim and our start: a worker with a stale lease starts one, and
        # an operator cancels the other
        await executions.transition(conn, raced, Status.QUEUED, Status.RUNNING, actor_id="zombie")
        await executions.transition(conn, ended, Status.QUEUED, Status.CANCELLED, actor_id="op")
    await worker._execute(leases[raced])
    await worker._execute(leases[ended])
    (row,) = await _fetch(db, "SELECT * FROM execution.execution_queue")
    assert row["execution_id"] == raced and row["lease_token"] is None  # retried, resumed later
    assert row["last_error"].startswith("status changed under this worker")


async def test_workers_check_rbac_before_every_step(db: Database, work_dir: Path) -> None:
    log = work_dir / "log"
    execution_id = await _enqueue(db, plan_of(command_step("a", f"echo ran >> {log}")), "nobody")
    # "nobody" holds no role in this tenant: whatever let it submit, a worker must refuse
    (lease,) = await queue.claim(db, "w", limit=1)
    await Worker(db, actor_id="w", options=WorkerOptions())._execute(lease)
    assert await _status(db, execution_id) == "failed"
    events = await _fetch(
        db,
        "SELECT event_type FROM execution.execution_events WHERE execution_id = %s",
        execution_id,
    )
    assert "rbac_violation" in [e["event_type"] for e in events]
    assert not log.exists()
