"""Schedules fired by real ``opsc worker`` processes: every slot once, whatever the number
of workers; the missed-slot policies after a (simulated) downtime."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from opsconductor.db.connection import Database
from opsconductor.plan import parse_plan
from opsconductor.schedule import Missed
from opsconductor.services import jobs, schedules
from opsconductor.services.caller import local_admin
from tests.test_worker_processes import Workers, query, wait_until, workers  # noqa: F401

pytestmark = pytest.mark.integration


def _noop_plan() -> Any:
    return parse_plan(
        {
            "name": "scheduled noop",
            "params": {"label": {"type": "string"}},
            "steps": [{"name": "nothing", "type": "noop", "targets": {"hostnames": ["localhost"]}}],
        }
    )


async def _job(db: Database, name: str = "tick") -> None:
    who = await local_admin(db, "default")
    await jobs.save(db, who, name, _noop_plan())


def _fires(url: str, name: str) -> list[tuple[Any, ...]]:
    return query(
        url,
        """SELECT f.slot, f.catch_up, f.execution_id, f.error, e.job_name, e.idempotency_key,
                  f.fired_at, f.fired_by
           FROM execution.schedule_fires f
           JOIN execution.schedules s ON s.id = f.schedule_id
           LEFT JOIN execution.executions e ON e.id = f.execution_id
           WHERE s.name = %s ORDER BY f.slot""",
        name,
    )


async def test_two_worker_processes_fire_each_slot_once(
    db: Database,
    database_url: str,
    workers: Workers,  # noqa: F811
) -> None:
    await _job(db)
    who = await local_admin(db, "default")
    await schedules.add(db, who, "every-second", "tick", "* * * * * *", params={"label": "s"})
    workers.env.update(OPSC_SCHEDULE_TICK_S="0.1")
    pair = [workers.start("--concurrency", "2", "--poll-interval", "1") for _ in range(2)]

    def fired_by() -> list[str]:
        return [row[7] for row in _fires(database_url, "every-second")]

    wait_until(lambda: len(fired_by()) >= 4, "four fired slots")
    # Whichever worker locks a due schedule first fires it. Stop the one that has been
    # firing: the other takes over, and still every slot fires once.
    first = next(p for p in pair if f":{p.pid}:" in fired_by()[0])
    assert workers.stop(first) == 0
    other = next(p for p in pair if p is not first)
    wait_until(
        lambda: sum(f":{other.pid}:" in w for w in fired_by()) >= 4, "four slots by the other"
    )
    await schedules.pause(db, who, "every-second")
    assert workers.stop(other) == 0
    fired = _fires(database_url, "every-second")
    slots = [row[0] for row in fired]
    # every second from the first slot to the last, each once, each with its own run
    assert slots == [slots[0] + timedelta(seconds=i) for i in range(len(slots))]
    assert all(row[2] is not None and row[3] is None for row in fired), fired
    assert len({row[2] for row in fired}) == len(fired)
    assert {w.split(":")[1] for w in fired_by()} == {str(first.pid), str(other.pid)}
    assert all(row[4] == "tick" and row[5].startswith("schedule:") for row in fired)
    runs = query(
        database_url,
        "SELECT count(*) FROM execution.executions WHERE job_name = 'tick'",
    )
    assert runs[0][0] == len(fired)


async def test_concurrent_rounds_fire_each_slot_once(db: Database, database_url: str) -> None:
    """Eight rounds at once over thirty overdue (but on-time) slots: thirty runs."""
    await _job(db)
    who = await local_admin(db, "default")
    added = await schedules.add(db, who, "burst", "tick", "* * * * * *", params={"label": "b"})
    query(
        database_url,
        "UPDATE execution.schedules SET next_fire_at = date_trunc('second', now()) - "
        "interval '30 seconds' WHERE id = %s RETURNING id",
        added.id,
    )
    pools = [Database(database_url, max_size=3) for _ in range(4)]
    for pool in pools:
        await pool.open()
    try:
        counts = await asyncio.gather(
            *(schedules.fire_due(pool, grace_s=600) for pool in pools * 2)
        )
    finally:
        for pool in pools:
            await pool.close()
    fired = _fires(database_url, "burst")
    assert sum(counts) == len(fired) >= 30
    assert len({row[0] for row in fired}) == len(fired)


async def test_missed_slots_after_a_downtime_follow_the_policy(
    db: Database,
    database_url: str,
    workers: Workers,  # noqa: F811
) -> None:
    await _job(db)
    who = await local_admin(db, "default")
    for name, policy in (("skipper", Missed.SKIP), ("catcher", Missed.RUN_ONCE)):
        await schedules.add(
            db, who, name, "tick", "* * * * * */10", params={"label": name}, missed=policy
        )
    # Workers were down for an hour: the schedules' first unfired slot is an hour old.
    query(
        database_url,
        "UPDATE execution.schedules SET next_fire_at = date_trunc('minute', now()) - "
        "interval '1 hour' RETURNING id",
    )
    started = datetime.now(UTC)
    workers.env.update(OPSC_SCHEDULE_TICK_S="0.1", OPSC_SCHEDULE_GRACE_S="5")
    proc = workers.start("--poll-interval", "1")

    def moved_on() -> bool:
        rows = query(database_url, "SELECT min(next_fire_at) FROM execution.schedules")
        return bool(rows[0][0] > started)

    wait_until(moved_on, "both schedules past the downtime")
    await asyncio.sleep(0.5)
    assert workers.stop(proc) == 0
    # On time: at most the grace (5 s) late when fired; the downtime's slots were older.
    grace = timedelta(seconds=5)
    skipper = _fires(database_url, "skipper")
    # skip: nothing for the hour of missed slots
    assert all(not row[1] and row[0] >= row[6] - grace for row in skipper), skipper
    catcher = _fires(database_url, "catcher")
    caught = [row for row in catcher if row[1]]
    assert len(caught) == 1, catcher  # run_once: one run stands for them all
    assert caught[0][0] < caught[0][6] - grace
    assert caught[0][2] is not None and caught[0][4] == "tick"
    assert all(row[0] >= row[6] - grace for row in catcher if not row[1]), catcher
