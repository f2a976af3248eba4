"""The per-asset mutex: two executions on one asset never overlap, waiting is bounded and
says who holds the asset, a dead holder's lock is reaped, locks go on every exit path."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from opsconductor import locking
from opsconductor.db import assets, executions
from opsconductor.db.connection import Database
from opsconductor.inventory import Asset
from opsconductor.locking import AssetLocked, LeaseHold, LockSettings
from opsconductor.status_machine import Status
from tests.plans import command_step, plan_of
from tests.safety_support import (
    engine,
    live_in,
    lock_rows,
    sandbox_gone,
    sandbox_of,
    state,
    submit_plan,
    wait_for_file,
)


@pytest.fixture
async def shared_asset(db: Database) -> None:
    async with db.connection() as conn:
        for name in ("node-a", "node-b"):
            await assets.add(conn, "default", Asset(name, name, "127.0.0.1", "staging"))


def _stamp_step(name: str, log: Path, seconds: float, targets: list[str]) -> dict[str, object]:
    # Each run appends "start <t>" and "end <t>" with nanosecond wall-clock timestamps.
    command = (
        f'echo "start $(date +%s.%N) $OPSC_EXECUTION_ID" >> {log}; sleep {seconds}; '
        f'echo "end $(date +%s.%N) $OPSC_EXECUTION_ID" >> {log}'
    )
    return command_step(name, command, targets={"assets": targets})


def _intervals(log: Path) -> dict[str, tuple[float, float]]:
    seen: dict[str, dict[str, float]] = {}
    for line in log.read_text().splitlines():
        kind, at, execution = line.split()
        seen.setdefault(execution, {})[kind] = float(at)
    return {e: (v["start"], v["end"]) for e, v in seen.items()}


async def test_two_executions_on_one_asset_never_overlap(
    db: Database, shared_asset: None, work_dir: Path
) -> None:
    log = work_dir / "stamps"
    ids = [
        await submit_plan(db, plan_of(_stamp_step("work", log, 0.4, ["node-a"]), name=f"p{i}"))
        for i in range(4)
    ]
    workers = [engine(db, f"w{i}", wait_s=60) for i in range(4)]
    finals = await asyncio.gather(*(w.run("default", i) for w, i in zip(workers, ids, strict=True)))
    assert finals == [Status.COMPLETED] * 4
    spans = sorted(_intervals(log).values())
    assert len(spans) == 4
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end <= start, f"overlap: {spans}"
    assert await lock_rows(db) == []


async def test_different_assets_run_side_by_side(
    db: Database, shared_asset: None, work_dir: Path
) -> None:
    """The mutex is per asset: it must not serialise unrelated work (would hide bugs above)."""
    log = work_dir / "stamps"
    a = await submit_plan(db, plan_of(_stamp_step("a", log, 1.0, ["node-a"])))
    b = await submit_plan(db, plan_of(_stamp_step("b", log, 1.0, ["node-b"])))
    await asyncio.gather(engine(db, "w1").run("default", a), engine(db, "w2").run("default", b))
    (_, first_end), (second_start, _) = sorted(_intervals(log).values())
    assert second_start < first_end, "independent assets should overlap in time"


async def test_waiting_is_bounded_and_names_the_holder(
    db: Database, shared_asset: None, work_dir: Path
) -> None:
    marker = work_dir / "holder-started"
    holder_id = await submit_plan(
        db,
        plan_of(
            command_step("hold", f"echo $$ > {marker}; sleep 600", targets={"assets": ["node-a"]})
        ),
    )
    waiter_id = await submit_plan(
        db, plan_of(command_step("wants", "echo never", targets={"assets": ["node-a", "node-b"]}))
    )
    holding = asyncio.create_task(engine(db, "w-holder").run("default", holder_id))
    await wait_for_file(marker)
    final = await engine(db, "w-waiter", wait_s=0.5).run("default", waiter_id)
    row, rows = await state(db, waiter_id)
    assert final is Status.FAILED
    assert "asset_locked" in row.status_reason and str(holder_id) in row.status_reason
    assert {r.status for r in rows} == {"failed"} and all(r.exit_code is None for r in rows)
    assert all("asset 'node-a' is held by" in r.error for r in rows)
    # node-a was contended, node-b taken first (sorted order) and given back on failure
    assert [(r["asset_id"], r["execution_id"]) for r in await lock_rows(db)] == [
        ("node-a", holder_id)
    ]
    from opsconductor.cancellation import request_cancel

    await request_cancel(db, "default", str(holder_id), "tester")
    assert await asyncio.wait_for(holding, 30) is Status.CANCELLED
    assert await lock_rows(db) == []


async def test_lock_execution_holds_every_target_between_steps(
    db: Database, shared_asset: None, work_dir: Path
) -> None:
    probe = work_dir / "probe"
    plan = plan_of(
        command_step("one", "true", targets={"assets": ["node-a"]}),
        command_step("two", f"echo seen > {probe}; sleep 0.5", targets={"assets": ["node-b"]}),
        lock="execution",
    )
    execution_id = await submit_plan(db, plan)
    running = asyncio.create_task(engine(db, "w").run("default", execution_id))
    await wait_for_file(probe)
    held = await lock_rows(db)  # during step two, node-a (step one's) is still held
    assert [r["asset_id"] for r in held] == ["node-a", "node-b"]
    assert await running is Status.COMPLETED
    assert await lock_rows(db) == []


async def test_locks_are_released_when_a_step_fails(db: Database, shared_asset: None) -> None:
    execution_id = await submit_plan(
        db, plan_of(command_step("bad", "exit 7", targets={"assets": ["node-a", "node-b"]}))
    )
    assert await engine(db, "w").run("default", execution_id) is Status.FAILED
    assert await lock_rows(db) == []


async def test_heartbeat_keeps_a_short_lease_alive(db: Database, shared_asset: None) -> None:
    settings = LockSettings(ttl_s=0.6, wait_s=0.2)
    async with LeaseHold(
        db, "default", ["node-a"], owner="x:w1", execution_id=None, settings=settings
    ):
        await asyncio.sleep(1.5)  # 2.5 TTLs: only heartbeats keep it ours
        with pytest.raises(AssetLocked, match="held by x:w1"):
            async with LeaseHold(
                db, "default", ["node-a"], owner="y:w2", execution_id=None, settings=settings
            ):
                pass
    assert await lock_rows(db) == []


ROOT = Path(__file__).resolve().parent.parent


async def test_lock_of_a_killed_worker_is_reaped(
    db: Database, shared_asset: None, cli_env: dict[str, str], tmp_path: Path, work_dir: Path
) -> None:
    pidfile = work_dir / "child"
    plan_file = tmp_path / "hold.yaml"
    plan_file.write_text(
        "name: hold node-a\nsteps:\n  - name: hold\n    type: command\n"
        "    targets: {assets: [node-a]}\n    timeout_s: 600\n"
        f"    command: echo $$ > {pidfile}; sleep 600\n"
    )
    env = {**cli_env, "OPSC_LOCK_TTL_S": "1"}
    worker = subprocess.Popen(  # noqa: ASYNC220 - a real worker process, killed below
        [sys.executable, "-m", "opsconductor.cli", "run", str(plan_file)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    await wait_for_file(pidfile)
    child_group = sandbox_of(str(pidfile))
    [held] = await lock_rows(db)
    os.kill(worker.pid, signal.SIGKILL)  # the worker dies without releasing anything
    worker.wait(timeout=30)
    # bwrap --die-with-parent: the step's sandbox does not outlive its worker
    assert await sandbox_gone(child_group)
    assert (await lock_rows(db))[0]["owner_tag"] == held["owner_tag"]
    reaped: list[dict[str, object]] = []
    for _ in range(200):  # the lease runs out one TTL after the last heartbeat
        reaped = await locking.reap(db)
        if reaped:
            break
        await asyncio.sleep(0.05)
    assert [(r["asset_id"], r["owner_tag"]) for r in reaped] == [("node-a", held["owner_tag"])]
    assert await lock_rows(db) == []
    async with db.connection() as conn:
        events = await executions.events(conn, held["execution_id"])
    assert "lock_reaped" in [e.event_type for e in events]
    # the asset is usable again at once
    nxt = await submit_plan(
        db, plan_of(command_step("next", "true", targets={"assets": ["node-a"]}))
    )
    assert await engine(db, "w2", wait_s=0.5).run("default", nxt) is Status.COMPLETED


async def test_expired_lock_is_taken_over_without_a_reaper(
    db: Database, shared_asset: None
) -> None:
    async with db.connection() as conn:
        await conn.execute(
            "INSERT INTO execution.execution_locks (tenant_id, asset_id, owner_tag, expires_at) "
            "VALUES ('default', 'node-a', %s, now() - interval '1 second')",
            (f"{uuid.uuid4()}:dead-worker",),
        )
    nxt = await submit_plan(db, plan_of(command_step("go", "true", targets={"assets": ["node-a"]})))
    assert await engine(db, "w", wait_s=0.5).run("default", nxt) is Status.COMPLETED


async def test_a_lease_taken_over_aborts_the_step(
    db: Database, shared_asset: None, work_dir: Path
) -> None:
    """If our heartbeats were late and another holder took the asset, we stop at once."""
    pidfile = work_dir / "pid"
    execution_id = await submit_plan(
        db,
        plan_of(
            command_step("long", f"echo $$ > {pidfile}; sleep 600", targets={"assets": ["node-a"]})
        ),
    )
    running = asyncio.create_task(engine(db, "w", ttl_s=0.6).run("default", execution_id))
    await wait_for_file(pidfile)
    group = sandbox_of(str(pidfile))
    async with db.connection() as conn:
        await conn.execute("UPDATE execution.execution_locks SET owner_tag = 'thief:elsewhere'")
    assert await asyncio.wait_for(running, 60) is Status.FAILED
    row, rows = await state(db, execution_id)
    assert row.status_reason.startswith("lock_lost: lease on node-a taken over")
    assert rows[0].status == "cancelled"
    assert live_in(group) == []
    # the thief's lock is not ours to release
    assert [r["owner_tag"] for r in await lock_rows(db)] == ["thief:elsewhere"]


async def test_cancel_while_waiting_for_a_lock_lets_go_of_what_it_took(
    db: Database, shared_asset: None, work_dir: Path
) -> None:
    from opsconductor.cancellation import request_cancel

    marker = work_dir / "holder"
    holder_id = await submit_plan(
        db,
        plan_of(
            command_step("hold", f"echo $$ > {marker}; sleep 600", targets={"assets": ["node-b"]})
        ),
    )
    holding = asyncio.create_task(engine(db, "w-holder").run("default", holder_id))
    await wait_for_file(marker)
    waiter_id = await submit_plan(
        db, plan_of(command_step("both", "echo never", targets={"assets": ["node-a", "node-b"]}))
    )
    waiting = asyncio.create_task(engine(db, "w-waiter", wait_s=600).run("default", waiter_id))
    for _ in range(600):  # node-a (first in sorted order) taken, node-b awaited
        if len(await lock_rows(db)) == 2:
            break
        await asyncio.sleep(0.05)
    assert {r["asset_id"]: r["execution_id"] for r in await lock_rows(db)} == {
        "node-a": waiter_id,
        "node-b": holder_id,
    }
    await request_cancel(db, "default", str(waiter_id), "frank")
    assert await asyncio.wait_for(waiting, 60) is Status.CANCELLED
    row, rows = await state(db, waiter_id)
    assert row.cancelled_by == "frank" and {r.status for r in rows} == {"skipped"}
    assert [r["asset_id"] for r in await lock_rows(db)] == ["node-b"]
    await request_cancel(db, "default", str(holder_id), "frank")
    assert await asyncio.wait_for(holding, 60) is Status.CANCELLED
    assert await lock_rows(db) == []
