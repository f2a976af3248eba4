"""Rolling updates over real sshd hosts (tests/sshlab.py: each port of the lab is one
host): ``serial`` batches run every step before the next batch starts, and
``max_fail_percentage`` stops the rollout after the batch that crosses it."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import uuid
from pathlib import Path
from typing import Any

import pytest

from opsconductor.db import queue, steps
from opsconductor.db.connection import Database
from opsconductor.engine import Engine
from opsconductor.plan import parse_plan
from opsconductor.status_machine import Status, StepStatus
from opsconductor.submission import Request, submit
from tests.helpers import add_ssh_assets, admin, run_plan
from tests.served import opsc

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
PORT = "${SSH_CONNECTION##* }"  # the server port is the host: commands are not templates


def _step(name: str, command: str) -> dict[str, Any]:
    return {
        "name": name,
        "type": "command",
        "action_class": "modify",
        "targets": {"tags": {"role": "web"}},
        "command": command,
    }


def rollout_plan(tmp_path: Path, **rollout: Any) -> tuple[dict[str, Any], Path, Path]:
    """deploy -> health -> enable; every step appends ``<step> start|end <time>`` to
    ``hosts/<port>.log`` on its host; deploy and health fail where ``fail/<port>.<step>``
    exists."""
    logs, fail = tmp_path / "hosts", tmp_path / "fail"
    logs.mkdir()
    fail.mkdir()
    log = f"{logs}/{PORT}.log"

    def stamped(name: str, work: str) -> str:
        return (
            f"echo {name} start $(date +%s.%N) >> {log}; {work}; "
            f"echo {name} end $(date +%s.%N) >> {log}; "
            f"test ! -f {fail}/{PORT}.{name} || {{ echo '{name} failed' >&2; exit 1; }}"
        )

    plan = {
        "name": "rolling web",
        **rollout,
        "steps": [
            _step("deploy", stamped("deploy", "sleep 0.2")),
            _step("health", stamped("health", "sleep 0.1")),
            _step("enable", stamped("enable", "true")),
        ],
    }
    return plan, logs, fail


def timeline(logs: Path, host: dict[str, str]) -> dict[str, list[tuple[str, str, float]]]:
    """Per host name: (step, start|end, time) in the order written."""
    out: dict[str, list[tuple[str, str, float]]] = {}
    for name, port in host.items():
        path = logs / f"{port}.log"
        lines = path.read_text().split("\n") if path.exists() else []
        out[name] = [(s, e, float(t)) for s, e, t in (ln.split() for ln in lines if ln)]
    return out


async def test_serial_1_stops_after_the_batch_whose_health_check_failed(
    db: Database, cli_env: dict[str, str], ssh_lab: Any, tmp_path: Path
) -> None:
    await add_ssh_assets(db, ssh_lab, ssh_lab.ports[0:4], prefix="web")
    host = {f"web-{n:02d}": str(port) for n, port in enumerate(ssh_lab.ports[0:4])}
    plan, logs, fail = rollout_plan(tmp_path, serial=1, max_fail_percentage=0)
    (fail / f"{host['web-01']}.health").touch()  # host 2's health check fails
    path = tmp_path / "rolling.yaml"
    path.write_text(json.dumps(plan))

    checked = opsc(cli_env, "validate", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "rollout: serial 1, max_fail_percentage 0: 4 batches" in checked.stdout
    assert "batch 2: web-01" in checked.stdout

    ran = opsc(cli_env, "run", str(path))
    assert ran.returncode == 1, ran.stdout + ran.stderr
    reason = (
        "rollout stopped after batch 2 of 4 (hosts web-01): 1 of 1 hosts failed (web-01), "
        "above max_fail_percentage 0"
    )
    assert reason in ran.stdout, ran.stdout
    found = re.search(rf"\b({UUID})\b", ran.stdout)
    assert found, ran.stdout
    shown = opsc(cli_env, "show", found[1])
    assert reason in shown.stdout and "failed" in shown.stdout, shown.stdout

    seen = timeline(logs, host)
    steps_on = {name: [s for s, e, _ in events if e == "end"] for name, events in seen.items()}
    assert steps_on == {
        "web-00": ["deploy", "health", "enable"],
        "web-01": ["deploy", "health"],  # its health failed: enable never ran there
        "web-02": [],  # never touched
        "web-03": [],
    }
    assert not (logs / f"{host['web-02']}.log").exists()
    assert not (logs / f"{host['web-03']}.log").exists()

    async with db.connection() as conn:
        cur = await conn.execute("SELECT status, status_reason FROM execution.executions")
        row = await cur.fetchone()
        assert row is not None
        rows = await steps.list_for(conn, uuid.UUID(found[1]))
    assert row["status"] == "failed" and row["status_reason"] == reason
    left = {(r.step_name, r.target_asset_id): (r.status, r.error) for r in rows}
    stopped = "not run: rollout stopped after batch 2 of 4"
    for name in ("web-02", "web-03"):
        for step in ("deploy", "health", "enable"):
            assert left[(step, name)] == (StepStatus.SKIPPED, stopped)
    assert left[("enable", "web-01")] == (
        StepStatus.SKIPPED,
        "not run: an earlier step failed on this host",
    )
    assert left[("health", "web-01")][0] is StepStatus.FAILED
    assert all(left[(s, "web-00")][0] is StepStatus.COMPLETED for s in ("deploy", "enable"))


async def test_growing_batches_run_every_step_before_the_next_batch(
    db: Database, ssh_lab: Any, tmp_path: Path
) -> None:
    """``serial: [1, "50%"]`` over 4 hosts: [web-00], [web-01, web-02], [web-03], proven by
    the times the steps wrote. With ``max_fail_percentage: 50`` one failed host of batch 2
    is tolerated: its later steps are skipped, its healthy batch-mate goes on."""
    await add_ssh_assets(db, ssh_lab, ssh_lab.ports[0:4], prefix="web")
    host = {f"web-{n:02d}": str(port) for n, port in enumerate(ssh_lab.ports[0:4])}
    plan, logs, fail = rollout_plan(tmp_path, serial=[1, "50%"], max_fail_percentage=50)
    (fail / f"{host['web-01']}.deploy").touch()

    status, rows, _ = await run_plan(db, plan)
    assert status is Status.PARTIAL

    seen = timeline(logs, host)
    batches = [["web-00"], ["web-01", "web-02"], ["web-03"]]
    for earlier, later in itertools.pairwise(batches):
        last_end = max(t for h in earlier for _, e, t in seen[h] if e == "end")
        first_start = min(t for h in later for _, e, t in seen[h] if e == "start")
        assert last_end < first_start, (earlier, later, seen)
    # Breadth-first within a batch: web-02's health began after both deploys ended.
    deploys_end = max(t for h in batches[1] for s, e, t in seen[h] if (s, e) == ("deploy", "end"))
    health_start = min(t for s, e, t in seen["web-02"] if (s, e) == ("health", "start"))
    assert deploys_end < health_start
    assert [s for s, e, _ in seen["web-01"] if e == "end"] == ["deploy"]  # failed: stopped there
    for name in ("web-00", "web-02", "web-03"):
        assert [s for s, e, _ in seen[name] if e == "end"] == ["deploy", "health", "enable"]

    latest = {(r.step_name, r.target_asset_id): r.status for r in rows}
    assert latest[("deploy", "web-01")] is StepStatus.FAILED
    assert latest[("health", "web-01")] is StepStatus.SKIPPED
    assert latest[("enable", "web-03")] is StepStatus.COMPLETED


async def test_a_resumed_rollout_continues_at_its_batch(
    db: Database, ssh_lab: Any, tmp_path: Path
) -> None:
    """The worker dies while batch 2 runs: the next worker re-runs nothing of batch 1,
    finishes batch 2 (the interrupted step is idempotent, so it runs again) and goes on
    to batch 3."""
    await add_ssh_assets(db, ssh_lab, ssh_lab.ports[0:3], prefix="web")
    host = {f"web-{n:02d}": str(port) for n, port in enumerate(ssh_lab.ports[0:3])}
    logs, hold = tmp_path / "hosts", tmp_path / "hold"
    logs.mkdir()
    hold.mkdir()
    log = f"{logs}/{PORT}.log"
    deploy = _step(
        "deploy", f"echo deploy >> {log}; while [ -f {hold}/{PORT} ]; do sleep 0.02; done"
    )
    plan = {
        "name": "rolling resume",
        "serial": 1,
        "steps": [{**deploy, "idempotent": True}, _step("health", f"echo health >> {log}")],
    }
    (hold / host["web-01"]).touch()  # host 2's deploy hangs until released
    actor = await admin(db, "tester")
    request = Request(parse_plan(plan), "default", actor, uuid.uuid4().hex, enqueue=True)
    execution_id = (await submit(db, request)).execution.id
    (lease,) = await queue.claim(db, "w1", limit=1)
    task = asyncio.create_task(Engine(db, actor_id="w1").run("default", execution_id, lease=lease))
    second = logs / f"{host['web-01']}.log"
    for _ in range(1500):
        if second.exists() and "deploy" in second.read_text():
            break
        await asyncio.sleep(0.02)
    task.cancel()  # the worker dies mid-batch 2
    with pytest.raises(asyncio.CancelledError):
        await task
    await queue.release(db, [lease])
    assert not (logs / f"{host['web-02']}.log").exists()

    (hold / host["web-01"]).unlink()
    (again,) = await queue.claim(db, "w2", limit=1)
    final = await Engine(db, actor_id="w2").run("default", execution_id, lease=again)

    assert final is Status.COMPLETED
    seen = {name: (logs / f"{port}.log").read_text().split() for name, port in host.items()}
    assert seen == {
        "web-00": ["deploy", "health"],  # batch 1: finished before the crash, not run again
        "web-01": ["deploy", "deploy", "health"],  # cut short, idempotent: run again
        "web-02": ["deploy", "health"],
    }
