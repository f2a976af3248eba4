"""A run's end in one statement (engine/ending.py): the last attempt's result and the
locks still held go with the final status change, and the audit trail reads as when they
were written apart: every step_finished before the end, the locks let go of, also when the
end itself is refused."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest

from opsconductor.db import assets, executions
from opsconductor.db.connection import Database
from opsconductor.errors import StaleStatus
from opsconductor.inventory import Asset
from opsconductor.status_machine import Status
from tests.plans import command_step, plan_of
from tests.safety_support import engine, lock_rows, state, submit_plan, wait_for_file


@pytest.fixture
async def two_assets(db: Database) -> None:
    async with db.connection() as conn:
        for name in ("node-a", "node-b"):
            await assets.add(conn, "default", Asset(name, name, "127.0.0.1", "staging"))


async def _events(db: Database, execution_id: uuid.UUID) -> list[dict[str, Any]]:
    async with db.connection() as conn:
        cur = await conn.execute(
            "SELECT id, event_type, to_status::text AS to_status, payload "
            "FROM execution.execution_events WHERE execution_id = %s ORDER BY id",
            (execution_id,),
        )
        return await cur.fetchall()


async def test_the_last_attempts_and_the_end_read_as_before(
    db: Database, two_assets: None, work_dir: Path
) -> None:
    # two targets in the last step, node-b finishing last: its result is written with the end
    plan = plan_of(
        command_step("first", "true", targets={"assets": ["node-a"]}),
        command_step(
            "last",
            "if [ $OPSC_ASSET_ID = node-b ]; then sleep 0.3; fi; echo $OPSC_ASSET_ID",
            targets={"assets": ["node-a", "node-b"]},
        ),
    )
    execution_id = await submit_plan(db, plan)
    assert await engine(db, "w1").run("default", execution_id) is Status.COMPLETED

    execution, attempts = await state(db, execution_id)
    assert execution.status is Status.COMPLETED
    assert [(a.step_name, a.status, a.output.strip()) for a in attempts] == [
        ("first", "completed", ""),
        ("last", "completed", "node-a"),
        ("last", "completed", "node-b"),
    ]
    events = await _events(db, execution_id)
    kinds = [e["event_type"] for e in events if e["event_type"] != "step_output"]
    assert kinds[-7:] == [
        "step_started",
        "step_finished",
        "step_started",  # the last step's two targets run side by side
        "step_started",
        "step_finished",
        "step_finished",
        "status_changed",
    ]
    assert events[-1]["to_status"] == "completed"
    finished = [e["payload"] for e in events if e["event_type"] == "step_finished"]
    assert [(p["step"], p["target"], p["status"]) for p in finished[-2:]] == [
        ("last", "node-a", "completed"),
        ("last", "node-b", "completed"),
    ]
    assert await lock_rows(db) == []


async def test_an_end_refused_still_records_the_last_attempt_and_lets_go_of_its_locks(
    db: Database, two_assets: None, work_dir: Path
) -> None:
    started, gate = work_dir / "started", work_dir / "gate"
    plan = plan_of(
        command_step(
            "wait",
            f"echo go > {started}; while [ ! -f {gate} ]; do sleep 0.02; done",
            targets={"assets": ["node-a"]},
        )
    )
    execution_id = await submit_plan(db, plan)
    running = asyncio.create_task(engine(db, "w1").run("default", execution_id))
    await wait_for_file(started)
    async with db.connection() as conn:  # moved under the run: its end will be refused
        await executions.transition(
            conn, execution_id, Status.RUNNING, Status.FAILED, actor_id="someone-else"
        )
    gate.touch()
    with pytest.raises(StaleStatus):
        await running

    execution, attempts = await state(db, execution_id)
    assert execution.status is Status.FAILED
    assert [(a.step_name, a.status) for a in attempts] == [("wait", "completed")]
    kinds = [e["event_type"] for e in await _events(db, execution_id)]
    assert kinds[-2:] == ["status_changed", "step_finished"]
    assert await lock_rows(db) == []
