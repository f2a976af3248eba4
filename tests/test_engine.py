"""The engine end to end on local processes: statuses, retries, timeouts, output cap."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from opsconductor.db import assets, executions, steps
from opsconductor.db.connection import Database
from opsconductor.engine import Engine, StepEvent
from opsconductor.inventory import Asset
from opsconductor.output import LIMIT
from opsconductor.plan import Plan
from opsconductor.records import Execution, StepAttempt
from opsconductor.status_machine import Status
from opsconductor.submission import Request, submit
from tests.helpers import admin
from tests.plans import command_step, plan_of


async def _run(
    db: Database, plan: Plan, events: list[StepEvent] | None = None
) -> tuple[Status, Execution, list[StepAttempt]]:
    actor = await admin(db, "tester")
    submitted = await submit(db, Request(plan, "default", actor, uuid.uuid4().hex))
    execution_id = submitted.execution.id
    engine = Engine(db, actor_id="tester", observer=(events.append if events is not None else None))
    final = await engine.run("default", execution_id)
    async with db.connection() as conn:
        row = await executions.get(conn, "default", str(execution_id))
        step_rows = await steps.list_for(conn, execution_id)
    return final, row, step_rows


@pytest.fixture
async def two_local_targets(db: Database) -> None:
    async with db.connection() as conn:
        for name in ("node-a", "node-b"):
            await assets.add(
                conn, "default", Asset(name, name, "127.0.0.1", "staging", tags={"role": "node"})
            )


async def test_completed_plan_records_every_attempt(db: Database) -> None:
    events: list[StepEvent] = []
    final, row, rows = await _run(
        db, plan_of(command_step("greet", "echo hello; echo oops >&2")), events
    )
    assert final is Status.COMPLETED and row.status == "completed"
    assert [(r.status, r.exit_code, r.output, r.stderr) for r in rows] == [
        ("completed", 0, "hello\n", "oops\n")
    ]
    assert [(e.status, e.final) for e in events] == [("running", False), ("completed", True)]


async def test_failure_stops_and_later_steps_are_skipped(db: Database) -> None:
    final, row, rows = await _run(
        db, plan_of(command_step("bad", "exit 3"), command_step("after", "echo never"))
    )
    assert final is Status.FAILED
    assert "step 'bad' failed on localhost" in row.status_reason
    assert [(r.step_name, r.status, r.exit_code) for r in rows] == [
        ("bad", "failed", 3),
        ("after", "skipped", None),
    ]


async def test_retries_with_backoff_until_success(db: Database, work_dir: Path) -> None:
    counter = work_dir / "n"
    command = (
        f"n=$(cat {counter} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {counter}; "
        f"echo try $n; [ $n -ge 3 ]"
    )
    final, _, rows = await _run(db, plan_of(command_step("flaky", command, retries=4)))
    assert final is Status.COMPLETED
    assert [(r.attempt, r.retry_count, r.status) for r in rows] == [
        (1, 0, "failed"),
        (2, 1, "failed"),
        (3, 2, "completed"),
    ]
    assert rows[1].started_at > rows[0].finished_at  # there was a pause between tries


async def test_retries_are_bounded(db: Database) -> None:
    final, _, rows = await _run(db, plan_of(command_step("never", "exit 1", retries=2)))
    assert final is Status.FAILED
    assert [r.attempt for r in rows] == [1, 2, 3]


async def test_step_timeout_kills_the_command_and_ends_timeout(
    db: Database, work_dir: Path
) -> None:
    marker = work_dir / "survived"
    plan = plan_of(command_step("hang", f"sleep 1.5 && touch {marker}", timeout_s=0.3))
    final, row, rows = await _run(db, plan)
    assert final is Status.TIMEOUT
    assert rows[0].status == "timeout" and "timed out after 0.3 s" in rows[0].error
    assert "timed out" in row.status_reason

    await asyncio.sleep(2)
    assert not marker.exists()  # the whole process group died, not just the shell


async def test_execution_timeout_beats_step_timeouts(db: Database) -> None:
    plan = plan_of(
        command_step("a", "sleep 0.3"), command_step("b", "sleep 10", timeout_s=20), timeout_s=1
    )
    final, row, rows = await _run(db, plan)
    assert final is Status.TIMEOUT
    assert "execution timeout" in row.status_reason
    assert [r.status for r in rows] == ["completed", "timeout"]
    assert row.timeout_at is not None


async def test_output_is_capped_with_a_visible_marker(db: Database) -> None:
    plan = plan_of(command_step("loud", "seq 1 200000"))
    final, _, rows = await _run(db, plan)
    assert final is Status.COMPLETED
    output = rows[0].output
    assert len(output.encode()) <= LIMIT
    assert output.startswith("1\n2\n3\n")
    assert output.rstrip().endswith("200000")
    assert "…[truncated " in output


async def test_binary_output_is_stored_as_a_marker(db: Database) -> None:
    final, _, rows = await _run(db, plan_of(command_step("bin", "printf 'a\\000b\\377'")))
    assert final is Status.COMPLETED
    assert rows[0].output.startswith("[binary output: 4 bytes, sha256 ")


async def test_some_targets_fail_gives_partial(db: Database, two_local_targets: None) -> None:
    step = command_step(
        "maybe", '[ "$OPSC_ASSET_ID" != node-b ]', targets={"tags": {"role": "node"}}
    )
    final, row, rows = await _run(db, plan_of(step, command_step("next", "true")))
    assert final is Status.PARTIAL
    assert [(r.target_asset_id, r.status) for r in rows if r.step_index == 0] == [
        ("node-a", "completed"),
        ("node-b", "failed"),
    ]
    assert "node-b (failed)" in row.status_reason


async def test_validate_step_checks_earlier_output(db: Database) -> None:
    good = plan_of(
        command_step("report", """echo '{"service": {"state": "up"}, "ports": [80, 443]}'"""),
        {
            "name": "check",
            "type": "validate",
            "step": "report",
            "expect": {"exit_code": 0, "json_path": {"path": "$.service.state", "equals": "up"}},
        },
        {
            "name": "port",
            "type": "validate",
            "step": "report",
            "expect": {"json_path": {"path": "$.ports[1]", "equals": 443}},
        },
    )
    final, _, rows = await _run(db, good)
    assert final is Status.COMPLETED, rows
    bad = plan_of(
        command_step("report", "echo nothing useful"),
        {
            "name": "check",
            "type": "validate",
            "step": "report",
            "expect": {"stdout_regex": "^ready$"},
        },
    )
    final, _row, rows = await _run(db, bad)
    assert final is Status.FAILED
    assert rows[1].status == "failed"
    assert "output does not match /^ready$/" in rows[1].error


async def test_events_tell_the_whole_story(db: Database) -> None:
    _final, row, _ = await _run(db, plan_of(command_step("one", "true")))
    async with db.connection() as conn:
        events = await executions.events(conn, row.id)
    assert [e.event_type for e in events] == [
        "submitted",
        "status_changed",
        "step_started",
        "step_finished",
        "status_changed",
    ]
    assert [e.id for e in events] == sorted(e.id for e in events)
