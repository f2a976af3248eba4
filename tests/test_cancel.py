"""Cancellation and timeouts abort running work the same way: within a second the process
group gets SIGTERM (then SIGKILL), locks go, the execution ends with who/why and when."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest

from opsconductor.cancellation import NotCancellable, request_cancel
from opsconductor.db import executions
from opsconductor.db.connection import Database
from opsconductor.engine import Engine
from opsconductor.errors import IllegalTransition, StaleStatus
from opsconductor.status_machine import Status
from tests.plans import command_step, plan_of
from tests.safety_support import (
    engine,
    live_in,
    lock_rows,
    sandbox_of,
    state,
    submit_plan,
    wait_for_file,
)
from tests.served import logged_in, opsc, serving


def _hang(pidfile: Path, **extra: object) -> dict[str, object]:
    # The pidfile (in the tenant's working directory) says the step started; the step's
    # processes are those of its sandbox's PID namespace (sandbox_of).
    return command_step("hang", f"echo $$ > {pidfile}; sleep 600", timeout_s=600, **extra)


async def test_cancel_of_a_running_sleep_stops_it_and_its_group(
    db: Database, work_dir: Path
) -> None:
    pidfile = work_dir / "pid"
    execution_id = await submit_plan(db, plan_of(_hang(pidfile), command_step("after", "true")))
    running = asyncio.create_task(engine(db, "w").run("default", execution_id))
    await wait_for_file(pidfile)
    group = sandbox_of(str(pidfile))
    assert live_in(group), "the step should be running"
    asked = time.monotonic()
    outcome = await request_cancel(db, "default", str(execution_id), "bob")
    assert outcome.result == "requested"
    final = await asyncio.wait_for(running, 60)  # generous bound; the figure is measured
    took = time.monotonic() - asked
    print(f"cancel took {took:.2f} s")
    assert final is Status.CANCELLED
    assert live_in(group) == []
    row, rows = await state(db, execution_id)
    assert row.cancelled_by == "bob" and row.cancelled_at is not None
    assert row.cancel_requested_by == "bob"
    assert row.cancel_checks_performed >= 1
    assert "cancelled by bob" in row.status_reason
    assert [(r.step_name, r.status) for r in rows] == [
        ("hang", "cancelled"),
        ("after", "skipped"),
    ]
    assert await lock_rows(db) == []
    async with db.connection() as conn:
        events = await executions.events(conn, execution_id)
    kinds = [(e.event_type, e.actor_id, e.to_status) for e in events]
    assert ("cancel_requested", "bob", None) in kinds
    assert kinds[-1] == ("status_changed", "bob", "cancelled")


async def test_cancel_checks_are_counted_while_running(db: Database) -> None:
    execution_id = await submit_plan(db, plan_of(command_step("nap", "sleep 1.2")))
    assert await engine(db, "w").run("default", execution_id) is Status.COMPLETED
    row, _ = await state(db, execution_id)
    assert row.cancel_checks_performed >= 2  # one every 0.25 s
    assert row.cancelled_by is None and row.cancel_requested_by is None


async def test_cancel_during_retry_backoff_stops_retrying(db: Database, work_dir: Path) -> None:
    counter = work_dir / "tries"
    command = f"echo x >> {counter}; exit 1"
    execution_id = await submit_plan(db, plan_of(command_step("flaky", command, retries=10)))
    running = asyncio.create_task(engine(db, "w").run("default", execution_id))
    await wait_for_file(counter)
    await request_cancel(db, "default", str(execution_id), "bob")
    assert await asyncio.wait_for(running, 60) is Status.CANCELLED
    assert len(counter.read_text().splitlines()) < 11


@pytest.mark.parametrize("level", [0, 1])
async def test_not_started_executions_are_cancelled_without_running(
    db: Database, work_dir: Path, level: int
) -> None:
    marker = work_dir / "ran"
    execution_id = await submit_plan(
        db, plan_of(command_step("never", f"touch {marker}"), approval_level=level)
    )
    outcome = await request_cancel(db, "default", str(execution_id)[:8], "carol")
    assert (outcome.result, outcome.status) == ("cancelled", Status.CANCELLED)
    row, _ = await state(db, execution_id)
    assert row.status == "cancelled" and row.cancelled_by == "carol"
    assert row.cancelled_at is not None
    with pytest.raises((StaleStatus, IllegalTransition)):  # nothing runs it any more
        await Engine(db, actor_id="worker").run("default", execution_id)
    assert not marker.exists()
    with pytest.raises(NotCancellable, match="already ended"):
        await request_cancel(db, "default", str(execution_id), "carol")


async def test_queued_execution_is_cancelled_and_leaves_the_queue(db: Database) -> None:
    execution_id = await submit_plan(db, plan_of(command_step("never", "true")))
    async with db.transaction() as conn:
        await executions.transition(
            conn, execution_id, Status.APPROVED, Status.QUEUED, actor_id="submitter"
        )
        await conn.execute(
            "INSERT INTO execution.execution_queue (execution_id, priority) VALUES (%s, 5)",
            (execution_id,),
        )
    outcome = await request_cancel(db, "default", str(execution_id), "dave")
    assert outcome.result == "cancelled"
    async with db.connection() as conn:
        cur = await conn.execute("SELECT count(*) AS n FROM execution.execution_queue")
        assert (await cur.fetchone() or {}).get("n") == 0


async def test_execution_timeout_aborts_like_a_cancel(db: Database, work_dir: Path) -> None:
    pidfile = work_dir / "pid"
    execution_id = await submit_plan(
        db, plan_of(_hang(pidfile, targets={"hostnames": ["localhost"]}), timeout_s=1.5)
    )
    running = asyncio.create_task(engine(db, "w").run("default", execution_id))
    await wait_for_file(pidfile)
    group = sandbox_of(str(pidfile))
    final = await asyncio.wait_for(running, 60)
    assert final is Status.TIMEOUT
    assert live_in(group) == []
    row, rows = await state(db, execution_id)
    assert "execution timeout" in row.status_reason
    assert row.cancelled_by is None
    assert rows[0].status == "timeout"
    assert await lock_rows(db) == []


async def test_step_timeout_kills_the_group_and_frees_locks(db: Database, work_dir: Path) -> None:
    pidfile = work_dir / "pid"
    step = command_step("slow", f"echo $$ > {pidfile}; sleep 600 & sleep 600", timeout_s=3)
    execution_id = await submit_plan(db, plan_of(step))
    running = asyncio.create_task(engine(db, "w").run("default", execution_id))
    await wait_for_file(pidfile)
    group = sandbox_of(str(pidfile))
    final = await asyncio.wait_for(running, 60)
    assert final is Status.TIMEOUT
    assert live_in(group) == []  # the background sleep too
    assert await lock_rows(db) == []


ROOT = Path(__file__).resolve().parent.parent


def test_opsc_cancel_from_another_process(
    cli_env: dict[str, str], tmp_path: Path, work_dir: Path
) -> None:
    pidfile = work_dir / "pid"
    plan_file = tmp_path / "hang.yaml"
    plan_file.write_text(
        "name: hang\nsteps:\n  - name: hang\n    type: command\n"
        "    targets: {hostnames: [localhost]}\n    timeout_s: 600\n"
        f"    command: echo $$ > {pidfile}; sleep 600\n"
    )
    runner = subprocess.Popen(
        [sys.executable, "-m", "opsconductor.cli", "run", str(plan_file)],
        env=cli_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    for _ in range(600):
        if pidfile.exists() and pidfile.read_text().strip():
            break
        time.sleep(0.05)
    group = sandbox_of(str(pidfile))
    listed = subprocess.run(
        [sys.executable, "-m", "opsconductor.cli", "list"],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    execution_id = next(
        word
        for line in listed.stdout.splitlines()
        if "running" in line
        for word in line.split()
        if len(word) == 36
    )
    with serving(cli_env, "--workers", "0") as (url, _):
        erin = logged_in(cli_env, url, "erin", "operator", config=tmp_path / "erin")
        cancelled = opsc(erin, "cancel", execution_id)
    assert cancelled.returncode == 0, cancelled.stderr
    assert "cancel requested" in cancelled.stdout
    stdout, _ = runner.communicate(timeout=60)
    assert runner.returncode == 1
    assert "cancelled" in stdout
    assert live_in(group) == []
    again = subprocess.run(
        [sys.executable, "-m", "opsconductor.cli", "cancel", execution_id],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 1 and "already ended: cancelled" in again.stderr
    shown = subprocess.run(
        [sys.executable, "-m", "opsconductor.cli", "show", execution_id],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "cancelled by erin at" in shown.stdout
