"""The claim leaves new work whose host is busy in the queue (migration 0042): a run whose
first lock another run holds waits its turn in the queue, not in a worker slot where it
would fail ``asset_locked``; one claim hands out no two runs with a first host in common."""

from __future__ import annotations

import asyncio
import re
import uuid
from typing import Any

import psycopg

from opsconductor.db import locks, queue
from opsconductor.db.connection import Database
from opsconductor.engine import Engine
from opsconductor.first_locks import first_locks
from opsconductor.locking import LockSettings
from opsconductor.status_machine import Status
from opsconductor.submission import Request, submit_many
from opsconductor.worker import Worker, WorkerOptions
from tests.helpers import admin, explain_plans
from tests.plans import command_step, plan_of
from tests.test_queue import _approve, _enqueue, _fetch, _hosts


def _noop(name: str, hosts: list[str], **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": "noop", "targets": {"assets": hosts}, **extra}


async def _lock(db: Database, asset_id: str, *, ttl_s: float = 60.0) -> None:
    """``asset_id`` held by a run that is none of the queued ones."""
    taken = await locks.try_acquire(
        db.batch, "default", asset_id, owner_tag="other:w9", execution_id=None, ttl_s=ttl_s
    )
    assert taken


async def _claimed(db: Database, limit: int = 10) -> list[uuid.UUID]:
    return [lease.execution_id for lease in await queue.claim(db, "w", limit=limit)]


async def test_a_busy_first_host_keeps_a_run_queued_until_its_lock_is_gone(
    db: Database,
) -> None:
    await _hosts(db, 2)
    busy = await _enqueue(db, plan_of(_noop("a", ["own-0"]), priority=1))
    free = await _enqueue(db, plan_of(_noop("a", ["own-1"]), priority=9))
    await _lock(db, "own-0")
    assert await _claimed(db) == [free]  # the better priority waits: its host is busy
    assert await _claimed(db) == []
    await locks.release(db.batch, "default", ["own-0"], owner_tag="other:w9")
    assert await _claimed(db) == [busy]


async def test_an_expired_lock_holds_nothing_back(db: Database) -> None:
    await _hosts(db, 1)
    run = await _enqueue(db, plan_of(_noop("a", ["own-0"])))
    await _lock(db, "own-0", ttl_s=-1)  # its holder stopped heart-beating: anyone may take it
    assert await _claimed(db) == [run]


async def test_one_claim_hands_out_no_two_runs_with_a_first_host_in_common(
    db: Database,
) -> None:
    await _hosts(db, 4)
    both = await _enqueue(db, plan_of(_noop("a", ["own-0", "own-1"]), priority=1))
    same = await _enqueue(db, plan_of(_noop("a", ["own-1"]), priority=2))
    later = await _enqueue(db, plan_of(_noop("a", ["own-2"]), _noop("b", ["own-0"]), priority=3))
    again = await _enqueue(db, plan_of(_noop("a", ["own-2"]), priority=4))
    # the second step's host is no first lock: only own-0 and own-1, then own-2, are taken
    assert await _claimed(db) == [both, later]
    # claimed a moment ago, not started: their first locks are reserved for them
    reserved = await _fetch(
        db, "SELECT asset_id, owner_tag FROM execution.execution_locks ORDER BY asset_id"
    )
    assert [(r["asset_id"], r["owner_tag"]) for r in reserved] == [
        ("own-0", f"{both}:w"),
        ("own-1", f"{both}:w"),
        ("own-2", f"{later}:w"),
    ]
    assert await _claimed(db) == []
    async with db.connection() as conn:  # a reservation never taken up runs out
        await conn.execute(
            "UPDATE execution.execution_locks SET expires_at = now() - interval '1 second'"
        )
    assert sorted(await _claimed(db)) == sorted([same, again])


async def test_a_run_takes_the_lock_reserved_for_it_and_no_other(db: Database) -> None:
    await _hosts(db, 1)
    run = await _enqueue(db, plan_of(_noop("a", ["own-0"])))
    (lease,) = await queue.claim(db, "w", limit=1)
    assert not await locks.try_acquire(  # another execution waits for it
        db.batch, "default", "own-0", owner_tag="other:w9", execution_id=None, ttl_s=60
    )
    engine = Engine(db, actor_id="w", worker_id="elsewhere")  # any worker of this execution
    assert await engine.run("default", run, lease=lease) is Status.COMPLETED
    assert await _fetch(db, "SELECT * FROM execution.execution_locks") == []


def test_what_the_first_lock_takes() -> None:
    plan = plan_of

    check = {"name": "v", "type": "validate", "step": "a", "expect": {"exit_code": 0}}
    two = [["h2", "h1"], ["h3"]]
    assert first_locks(plan(_noop("a", ["h2", "h1"]), _noop("b", ["h3"])), two) == ("h1", "h2")
    whole = plan(_noop("a", ["h2", "h1"]), _noop("b", ["h3"]), lock="execution")
    assert first_locks(whole, two) == ("h1", "h2", "h3")
    validated = plan(_noop("a", ["h1"]), check, _noop("b", ["h3"]), lock="execution")
    assert first_locks(validated, [["h1"], [], ["h3"]]) == ("h1", "h3")
    assert first_locks(plan(_noop("a", ["h1"]), _noop("b", ["h3"])), [[], ["h3"]]) == ("h3",)
    rolling = plan(_noop("a", ["h1", "h2", "h3"]), _noop("b", ["h3"]), serial=2)
    assert first_locks(rolling, [["h1", "h2", "h3"], ["h3"]]) == ("h1", "h2")
    late = plan(_noop("a", ["h3"]), _noop("b", ["h1", "h3"]), serial=1)
    assert first_locks(late, [["h3"], ["h1", "h3"]]) == ("h1",)  # batch 1 is h1: step b
    assert first_locks(plan(_noop("a", ["h1"])), [[]]) is None


async def test_every_enqueue_path_stores_the_first_locks(db: Database) -> None:
    await _hosts(db, 3)
    actor = await admin(db, "tester")
    one = await _enqueue(db, plan_of(_noop("a", ["own-2", "own-0"]), _noop("b", ["own-1"])))
    (bulk,) = await submit_many(
        db,
        [Request(plan_of(_noop("a", ["own-1"])), "default", actor, "bulk", enqueue=True)],
    )
    whole = plan_of(_noop("a", ["own-2"]), _noop("b", ["own-0"]), lock="execution")
    (whole_bulk,) = await submit_many(db, [Request(whole, "default", actor, "whole", enqueue=True)])
    approved = await _enqueue(db, plan_of(_noop("a", ["own-0"]), approval_level=1))
    await _approve(db, approved)
    rows = {
        r["execution_id"]: (r["first_locks"], r["first_locks_tenant"])
        for r in await _fetch(db, "SELECT * FROM execution.execution_queue")
    }
    assert rows == {
        one: (["own-0", "own-2"], "default"),
        bulk.execution.id: (["own-1"], "default"),
        whole_bulk.execution.id: (["own-0", "own-2"], "default"),
        approved: (["own-0"], "default"),
    }


async def test_rows_without_first_locks_are_claimed_as_before(db: Database) -> None:
    """Queued by older code (or not covered): NULL, no filter."""
    ids = [await _enqueue(db, plan_of(command_step("a", "true"), name=f"p{i}")) for i in range(3)]
    async with db.connection() as conn:
        await conn.execute("UPDATE execution.execution_queue SET first_locks = NULL")
    await _lock(db, "localhost")
    assert await _claimed(db) == ids  # all three, in age order, the host's lock whatever


async def test_interrupted_work_is_claimed_whatever_its_hosts(db: Database) -> None:
    await _hosts(db, 1)
    run = await _enqueue(db, plan_of(_noop("a", ["own-0"])))
    (lease,) = await queue.claim(db, "w1", limit=1)
    assert await queue.release(db, [lease]) == {run}  # its worker stopped
    async with db.connection() as conn:  # what its first claim reserved runs out
        await conn.execute(
            "UPDATE execution.execution_locks SET expires_at = now() - interval '1 second'"
        )
    await _lock(db, "own-0")
    assert await _claimed(db) == [run]
    (row,) = await _fetch(db, "SELECT first_locks FROM execution.execution_queue")
    assert row["first_locks"] is None  # resumed: its first step may be behind it


async def test_a_long_queue_for_one_host_waits_its_turn_instead_of_failing(
    db: Database,
) -> None:
    """Each run holds the host longer than a run may wait for it: claimed whatever the
    host, runs 2.. would fail asset_locked. Left in the queue, each one completes."""
    await _hosts(db, 1)
    ids = [
        await _enqueue(db, plan_of(command_step("a", "sleep 0.3", targets={"assets": ["own-0"]})))
        for _ in range(5)
    ]
    worker = Worker(db, actor_id="w", options=WorkerOptions(concurrency=4, poll_s=0.2))
    worker.engine.lock_settings = LockSettings(wait_s=0.05, poll_s=0.01)
    serving = asyncio.create_task(worker.serve())
    try:
        for _ in range(600):  # a generous bound: 5 runs of 0.3 s one after another
            rows = await _fetch(
                db,
                "SELECT status::text, status_reason FROM execution.executions WHERE id = ANY(%s)",
                ids,
            )
            if all(r["status"] in ("completed", "failed") for r in rows):
                break
            await asyncio.sleep(0.1)
    finally:
        worker.stop()
        await asyncio.wait_for(serving, 60)
    assert [(r["status"], r["status_reason"]) for r in rows] == [("completed", None)] * 5
    assert await _fetch(db, "SELECT * FROM execution.execution_queue") == []


async def test_the_walk_asks_for_each_host_by_key_however_many_are_held(
    db: Database, database_url: str
) -> None:
    """Whether a candidate's host is busy is one probe on the locks' key per asset
    (migration 0043), whatever plan the connection made while few locks existed (the claim
    keeps one generic plan per connection): 0042's probe, planned on a young table, read
    every live lock of the tenant for each candidate, so a claim cost more the more hosts
    were busy (seen on PostgreSQL 15, the external pass; 18's planner chose the key)."""
    held = 150
    await _hosts(db, held + 2)
    first = await _enqueue(db, plan_of(_noop("a", [f"own-{held}"])))
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("ANALYZE execution.execution_locks")  # empty, as on a new install
        claim = "SELECT (c.e).id FROM execution.claim_batch('w', 5, 60, 'w') c"
        assert [r[0] for r in conn.execute(claim).fetchall()] == [first]  # planned now
        for i in range(held):
            await _lock(db, f"own-{i}")
        run = await _enqueue(db, plan_of(_noop("a", [f"own-{held + 1}"])))
        await _enqueue(db, plan_of(_noop("a", ["own-0"])))  # passed over: its host is held
        plans = explain_plans(conn, analyze=True)
        assert [r[0] for r in conn.execute(claim).fetchall()] == [run]
    probes = [p for p in plans if "execution.execution_locks l" in p and "now()" in p]
    assert probes, plans
    for probe in probes:  # no candidate read all the locks to learn about its own hosts
        removed = [int(n) for n in re.findall(r"Rows Removed by Filter: (\d+)", probe)]
        assert all(n < held for n in removed), probe


async def test_a_worker_whose_hosts_are_busy_backs_off_and_still_takes_them_when_free(
    db: Database,
) -> None:
    """Work is claimable but its host is held by someone else: the worker looks again
    after a back-off that doubles (up to a second), not every 10 ms (each look walks the
    same busy rows), and still takes the work once the host is free."""
    await _hosts(db, 1)
    await _lock(db, "own-0")  # held by a run that is none of the queued ones
    ids = [await _enqueue(db, plan_of(_noop("a", ["own-0"]))) for _ in range(3)]
    worker = Worker(db, actor_id="w", options=WorkerOptions(concurrency=4))
    looks = 0
    claim = worker._claim

    async def counted(free: int) -> list[Any]:
        nonlocal looks
        looks += 1
        return await claim(free)

    worker._claim = counted  # type: ignore[method-assign]
    serving = asyncio.create_task(worker.serve())
    try:
        await asyncio.sleep(2.0)
        busy_looks = looks
        await locks.release(db.batch, "default", ["own-0"], owner_tag="other:w9")
        for _ in range(300):  # a generous bound: the next look is at most a second away
            rows = await _fetch(
                db, "SELECT status::text FROM execution.executions WHERE id = ANY(%s)", ids
            )
            if all(r["status"] == "completed" for r in rows):
                break
            await asyncio.sleep(0.1)
    finally:
        worker.stop()
        await asyncio.wait_for(serving, 60)
    # 10 ms, 20 ms, ... 1 s: about nine looks in two seconds (claiming every 10 ms: 100+)
    assert 1 <= busy_looks <= 25
    assert [r["status"] for r in rows] == ["completed"] * 3


async def _queue_for_a_busy_host(db: Database, runs: int) -> None:
    """``runs`` queued runs (one bulk) for own-0, which a run that is none of them holds."""
    await _lock(db, "own-0")
    actor = await admin(db, "tester")
    plan = plan_of(_noop("a", ["own-0"]))
    await submit_many(
        db, [Request(plan, "default", actor, f"k{i}", enqueue=True) for i in range(runs)]
    )


async def test_work_behind_a_long_queue_for_a_busy_host_is_claimed(db: Database) -> None:
    """More runs for a busy host than one claim reads (limit x 4 + 32) stand in front of a
    run for a free host: the claim that finds nothing in its budget reads further (0044),
    passing over the busy host's rows, and takes the free host's run. (Before, no other
    host's work started until the busy host's queue was shorter than the budget.)"""
    await _hosts(db, 2)
    await _queue_for_a_busy_host(db, 300)
    behind = await _enqueue(db, plan_of(_noop("a", ["own-1"])))
    assert await _claimed(db, limit=5) == [behind]  # 52 rows of the budget, all own-0's
    assert await _claimed(db, limit=5) == []  # own-0 is still busy; own-1 is taken now


async def test_the_deeper_read_happens_at_most_once_a_second_per_connection(
    db: Database, database_url: str
) -> None:
    """Where every host in reach is busy, each empty claim would read 10,000 rows: a
    connection reads that deep at most once a second (0044)."""
    await _hosts(db, 3)
    await _queue_for_a_busy_host(db, 100)
    first = await _enqueue(db, plan_of(_noop("a", ["own-1"])))
    second = await _enqueue(db, plan_of(_noop("a", ["own-2"])))
    claim = "SELECT (c.e).id FROM execution.claim_batch('w', 1, 60, 'w') c"
    with psycopg.connect(database_url, autocommit=True) as conn:
        assert [r[0] for r in conn.execute(claim).fetchall()] == [first]
        assert conn.execute(claim).fetchall() == []  # read deep a moment ago: not again
        await asyncio.sleep(1.1)
        assert [r[0] for r in conn.execute(claim).fetchall()] == [second]
