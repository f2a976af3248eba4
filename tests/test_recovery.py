"""Recovery in-process: claim order after an interruption, the deadline moved past the time
without a worker, the reason a resumed execution ends with, the reaper's life-lock round,
and helper tasks that stop within a bound even when they swallow their cancellation.
Worker processes killed for real: test_recovery_processes.py, test_chaos.py."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from opsconductor import bounded, recovery
from opsconductor.db import queue, workers
from opsconductor.db.connection import Database
from opsconductor.engine import Engine
from opsconductor.status_machine import Status
from tests.plans import command_step, plan_of
from tests.test_queue import _enqueue, _fetch, _hosts, _wait_for_text


async def test_interrupted_work_is_claimed_before_new_work_whatever_its_priority(
    db: Database,
) -> None:
    resumed = await _enqueue(db, plan_of(command_step("a", "true"), name="late", priority=9))
    (lease,) = await queue.claim(db, "w1", limit=1)
    hosts = await _hosts(db, 3)  # one claim hands out one run per host
    fresh = [
        await _enqueue(
            db, plan_of(command_step("a", "true", targets=hosts[i]), name=f"n{i}", priority=1)
        )
        for i in range(3)
    ]
    assert await queue.release(db, [lease]) == {resumed}  # its worker stopped
    order = [lease.execution_id for lease in await queue.claim(db, "w2", limit=4)]
    assert order == [resumed, *fresh]


async def test_time_without_a_worker_moves_the_deadline_and_is_reported(db: Database) -> None:
    execution_id = await _enqueue(db, plan_of(command_step("a", "true")))
    (lease,) = await queue.claim(db, "w1", limit=1)
    async with db.connection() as conn:  # as if the engine had started it
        await conn.execute(
            "UPDATE execution.executions SET status = 'running', "
            "timeout_at = now() + interval '10 s' WHERE id = %s",
            (execution_id,),
        )
    before = (await _fetch(db, "SELECT timeout_at FROM execution.executions"))[0]["timeout_at"]
    await queue.release(db, [lease])
    await asyncio.sleep(1.0)
    (again,) = await queue.claim(db, "w2", limit=1)
    after = (await _fetch(db, "SELECT timeout_at FROM execution.executions"))[0]["timeout_at"]
    assert again.recovered_after_s is not None and again.recovered_after_s >= 1.0
    assert (after - before).total_seconds() >= 1.0  # the gap is not charged
    assert again.execution is not None and again.execution["timeout_at"] == after
    assert (again.interruption, again.interruptions) == ("worker shutdown", 1)
    # a plain claim of new work carries no recovery (on a host of its own: the first
    # claim reserved localhost for the run above, which never took it)
    (host,) = await _hosts(db, 1)
    await _enqueue(db, plan_of(command_step("a", "true", targets=host), name="new"))
    (new,) = await queue.claim(db, "w2", limit=1)
    assert new.recovered_after_s is None and new.interruptions == 0


async def test_resumed_past_its_deadline_the_reason_names_the_step_that_was_running(
    db: Database, work_dir: Path
) -> None:
    log, gate = work_dir / "log", work_dir / "gate"
    plan = plan_of(
        command_step("first", f"echo first >> {log}", action_class="modify"),
        command_step("second", f"echo second >> {log}; while [ ! -f {gate} ]; do sleep 0.02; done"),
    )
    execution_id = await _enqueue(db, plan)
    (lease,) = await queue.claim(db, "w1", limit=1)
    task = asyncio.create_task(Engine(db, actor_id="w1").run("default", execution_id, lease=lease))
    await _wait_for_text(log, "second")
    task.cancel()  # handed back mid-step
    await asyncio.gather(task, return_exceptions=True)
    await queue.release(db, [lease])
    async with db.connection() as conn:  # its budget was spent before it was handed back
        await conn.execute(
            "UPDATE execution.executions SET timeout_at = now() - interval '5 s' WHERE id = %s",
            (execution_id,),
        )
    gate.touch()
    (again,) = await queue.claim(db, "w2", limit=1)
    final = await Engine(db, actor_id="w2").run("default", execution_id, lease=again)
    assert final is Status.TIMEOUT
    (row,) = await _fetch(db, "SELECT status_reason FROM execution.executions")
    reason = row["status_reason"]
    assert reason.startswith("execution timeout reached during step 'second'"), reason
    assert "(interrupted by worker shutdown, resumed after" in reason


async def _watch(db: Database) -> workers.Watch:
    return await recovery.watch(db, confirm_s=0.2)


async def test_a_worker_whose_session_ends_is_declared_dead_and_loses_its_leases_and_locks(
    db: Database, database_url: str
) -> None:
    execution_id = await _enqueue(db, plan_of(command_step("a", "true")))
    async with db.connection() as conn:
        await workers.register(conn, workers.Identity("w-doomed", "h", 1, 1))
        await workers.register(conn, workers.Identity("w-live", "h", 2, 1))
    (lease,) = await queue.claim(db, "w-doomed", limit=1, lease_s=3600)  # no expiry here
    async with db.connection() as conn:
        await conn.execute(
            "INSERT INTO execution.assets (tenant_id, asset_id, hostname, address, environment) "
            "VALUES ('default', 'n1', 'n1', '127.0.0.1', 'dev')"
        )
        await conn.execute(
            "INSERT INTO execution.execution_locks "
            "(tenant_id, asset_id, owner_tag, execution_id, expires_at) "
            "VALUES ('default', 'n1', %s, %s, now() + interval '1 hour')",
            (f"{execution_id}:w-doomed", execution_id),
        )
    async with (
        workers.life(database_url, "w-live", queue.CHANNEL),
        workers.life(database_url, "w-doomed", queue.CHANNEL) as doomed,
    ):
        seen = await _watch(db)
        assert seen.got and seen.dead == [] and not seen.sweep_due  # both hold their locks
        await doomed.conn.close()  # what SIGKILL does to its connections
        rounds = []
        while not rounds or not rounds[-1].dead:
            assert len(rounds) < 100, "never declared dead"
            rounds.append(await _watch(db))
            await asyncio.sleep(0.1)
        assert len(rounds) >= 3  # found free once is not enough: free confirm_s later
        assert rounds[-1].dead == ["w-doomed"] and rounds[-1].sweep_due is False
        swept = await recovery.sweep(db, "reaper", rounds[-1].dead)
    # its lock of n1, and localhost, which its claim reserved for the run (migration 0042)
    assert swept == recovery.Swept(["w-doomed"], requeued=1, dead_lettered=0, locks_freed=2)
    assert await _fetch(db, "SELECT * FROM execution.execution_locks") == []
    (row,) = await _fetch(db, "SELECT * FROM execution.execution_queue")
    assert row["lease_token"] is None and row["interruption"] == "worker crash"
    # the fence: the dead worker's lease no longer renews, and its work is claimable at once
    assert await queue.renew(db, [lease]) == set()
    (again,) = await queue.claim(db, "w-live", limit=1)
    assert again.execution_id == execution_id and again.interruption == "worker crash"
    # and it learns it was declared dead when it comes back
    async with workers.life(database_url, "w-doomed", queue.CHANNEL) as back:
        assert back.declared_dead


async def test_a_held_life_lock_is_never_declared_dead(db: Database, database_url: str) -> None:
    async with db.connection() as conn:
        await workers.register(conn, workers.Identity("w-slow", "h", 1, 1))
    async with workers.life(database_url, "w-slow", queue.CHANNEL):
        for _ in range(3):
            assert (await _watch(db)).dead == []
            await asyncio.sleep(0.3)
        assert await recovery.sweep(db, "reaper", ["w-slow"]) == recovery.Swept([], 0, 0, 0)
    rows = await _fetch(db, "SELECT died_at FROM execution.workers")
    assert rows == [{"died_at": None}]


async def test_only_the_rounds_reaper_looks_at_the_workers(db: Database) -> None:
    async with db.transaction() as conn:
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (queue.REAPER_LOCK_KEY,))
        assert (await _watch(db)).got is False


# -- bounded stops: helper tasks whose cancellation gets lost --------------------------------


async def _stubborn(until: asyncio.Event) -> None:
    """A loop that swallows every cancellation, as a lost ``wait_for`` cancel leaves one,
    and ends only when ``until`` is set."""
    while not until.is_set():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(0.01)


async def test_stop_ends_a_loop_that_swallowed_its_cancel_through_its_flag() -> None:
    flag = asyncio.Event()
    task = asyncio.create_task(_stubborn(flag))
    await asyncio.sleep(0.05)
    assert await bounded.stop(task, flag, timeout_s=5) is True
    assert task.done()


async def test_stop_gives_up_on_a_task_that_never_ends_within_its_bound() -> None:
    flag, release = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(_stubborn(release))  # deaf to its flag
    await asyncio.sleep(0.05)  # running (a task cancelled before it starts just ends)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await bounded.stop(task, flag, timeout_s=0.2) is False
    assert loop.time() - started < 5  # the caller went on
    assert not task.done()
    release.set()
    await task


async def test_sleep_unless_wakes_on_its_event_and_otherwise_sleeps_its_time() -> None:
    event = asyncio.Event()
    assert await bounded.sleep_unless(event, 0.01) is False
    asyncio.get_running_loop().call_later(0.05, event.set)
    assert await bounded.sleep_unless(event, 30) is True
