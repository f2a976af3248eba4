"""Re-running the failed over real sshd hosts, end to end through ``opsc``: ``opsc rerun ID
--failed`` touches exactly the hosts that failed, and ``opsc show``/``run`` say why they
failed, grouped (tests/sshlab.py: each port of the lab is one host)."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

from opsconductor.db import steps
from opsconductor.db.connection import Database
from opsconductor.services import executions, history
from opsconductor.services.caller import local_admin
from opsconductor.status_machine import Status
from tests.conftest import allow_local
from tests.helpers import add_ssh_assets, run_plan
from tests.served import logged_in, opsc, serving

TIMES = "\N{MULTIPLICATION SIGN}"
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def rollout(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A two-step rollout: every host logs each step it runs in ``hosts/<port>.log`` (the
    server port is the host: commands are not templates); the health check fails where no
    ``ready/<port>`` file exists."""
    logs, ready = tmp_path / "hosts", tmp_path / "ready"
    logs.mkdir()
    ready.mkdir()
    plan = tmp_path / "rollout.yaml"
    port = "${SSH_CONNECTION##* }"
    log = f"{logs}/{port}.log"
    plan.write_text(
        "name: web rollout\nsteps:\n"
        "  - name: deploy\n    type: command\n    action_class: modify\n"
        "    targets: {tags: {role: web}}\n"
        f"    command: 'echo deploy >> {log}'\n"
        "  - name: health\n    type: command\n    action_class: read\n"
        "    targets: {tags: {role: web}}\n"
        f"    command: 'echo health >> {log}; echo checking >&2; test -f {ready}/{port} || "
        '{ echo "health check failed: service not ready" >&2; exit 1; }\'\n'
    )
    return plan, logs, ready


def execution_id(text: str) -> str:
    found = re.search(rf"\b({UUID})\b", text)
    assert found, text
    return found[1]


async def test_rerun_failed_touches_exactly_the_failed_hosts(
    db: Database, cli_env: dict[str, str], ssh_lab: Any, tmp_path: Path
) -> None:
    await add_ssh_assets(db, ssh_lab, ssh_lab.ports[0:4], prefix="web")
    host = {f"web-{n:02d}": str(port) for n, port in enumerate(ssh_lab.ports[0:4])}
    plan, logs, ready = rollout(tmp_path)
    for name in ("web-00", "web-02"):
        (ready / host[name]).touch()

    first = opsc(cli_env, "run", str(plan))
    assert first.returncode == 1, first.stdout + first.stderr
    old = execution_id(first.stdout)
    assert "partial" in first.stdout
    # The end summary groups the two identical failures, with the cause from stderr.
    grouped = f"exit 1: health check failed: service not ready {TIMES}2: web-01, web-03"
    assert f"step 'health' — {grouped}" in first.stdout, first.stdout
    assert "| checking" in first.stdout  # the last lines of stderr, not only the last
    before = {n: (logs / f"{port}.log").read_text() for n, port in host.items()}
    assert all(text.count("deploy") == 1 for text in before.values())

    shown = opsc(cli_env, "show", old)
    assert shown.returncode == 0, shown.stderr
    assert grouped in shown.stdout

    for name in ("web-01", "web-03"):
        (ready / host[name]).touch()  # the operator fixed them
    again = opsc(cli_env, "rerun", old, "--failed")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "on 2 targets: web-01, web-03" in again.stderr
    new = execution_id(again.stdout)
    assert new != old and "completed" in again.stdout
    assert f"re-runs the failed targets of {old}" in again.stdout

    after = {n: (logs / f"{port}.log").read_text() for n, port in host.items()}
    assert after["web-00"] == before["web-00"] and after["web-02"] == before["web-02"]
    for n in ("web-01", "web-03"):  # the whole plan again, on these two only
        assert after[n] == before[n] + "deploy\nhealth\n", after[n]

    async with db.connection() as conn:
        cur = await conn.execute(
            "SELECT id, rerun_of, retry_of, plan_hash, status FROM execution.executions"
            " ORDER BY created_at"
        )
        rows = await cur.fetchall()
        attempts = await steps.list_for(conn, uuid.UUID(new))
    assert [(str(r["id"]), r["status"]) for r in rows] == [(old, "partial"), (new, "completed")]
    assert rows[1]["rerun_of"] == uuid.UUID(old) and rows[1]["retry_of"] is None
    assert rows[1]["plan_hash"] != rows[0]["plan_hash"]  # a new hash: a new approval
    assert sorted({(a.step_name, a.target_asset_id) for a in attempts}) == [
        ("deploy", "web-01"),
        ("deploy", "web-03"),
        ("health", "web-01"),
        ("health", "web-03"),
    ]

    nothing = opsc(cli_env, "rerun", new, "--failed")
    assert nothing.returncode == 1
    assert "every target completed every step" in nothing.stderr
    unflagged = opsc(cli_env, "rerun", old)
    assert unflagged.returncode == 2 and "--failed" in unflagged.stderr


async def test_record_only_is_marked_wherever_opsc_shows_a_status(
    db: Database, cli_env: dict[str, str], ssh_lab: Any, tmp_path: Path
) -> None:
    await add_ssh_assets(db, ssh_lab, ssh_lab.ports[0:2], prefix="web")
    plan, logs, _ = rollout(tmp_path)
    dark = opsc(cli_env, "run", "--record-only", str(plan))
    assert dark.returncode == 0, dark.stdout + dark.stderr
    assert list(logs.iterdir()) == []  # nothing was touched
    ident = execution_id(dark.stdout)
    # The run's summary and opsc show: marked after the status, and said in words.
    for text in (dark.stdout, opsc(cli_env, "show", ident).stdout):
        assert "completed (record-only) [record-only: nothing was touched]" in text, text
    real = opsc(cli_env, "run", str(plan))
    listed = opsc(cli_env, "list")
    assert listed.returncode == 0, listed.stderr
    rows = {line.split("│")[1].strip(): line for line in listed.stdout.splitlines() if "│" in line}
    assert "completed (record-only)" in rows[ident]
    assert "record-only" not in rows[execution_id(real.stdout)]
    refused = opsc(cli_env, "rerun", ident, "--failed")
    assert refused.returncode == 1 and "record-only" in refused.stderr


async def test_pruning_the_original_keeps_its_rerun(db: Database, tmp_path: Path) -> None:
    """The link is for reading: history prune may remove the re-run original (the re-run
    holds its own plan snapshot), and the kept re-run loses only the link."""
    async with db.connection() as conn:
        await allow_local(conn, "default")
    plan = {
        "name": "flaky",
        "steps": [
            {
                "name": "check",
                "type": "command",
                "action_class": "read",
                "targets": {"hostnames": ["localhost"]},
                "command": "echo nope >&2; exit 4",
            }
        ],
    }
    status, _, old = await run_plan(db, plan)
    assert status == Status.FAILED
    who = await local_admin(db, "default")
    done = await executions.rerun_failed(db, who, str(old), enqueue=True)
    assert done.created and done.execution.rerun_of == old
    report = await history.prune(
        db, who, export=tmp_path / "export.jsonl", before=done.execution.created_at
    )
    assert report.executions == 1
    async with db.connection() as conn:
        cur = await conn.execute("SELECT id, rerun_of FROM execution.executions")
        assert [(r["id"], r["rerun_of"]) for r in await cur.fetchall()] == [
            (done.execution.id, None)
        ]


async def test_rerun_through_the_server_after_login(
    db: Database, cli_env: dict[str, str], ssh_lab: Any, tmp_path: Path
) -> None:
    await add_ssh_assets(db, ssh_lab, ssh_lab.ports[0:2], prefix="web")
    plan, logs, ready = rollout(tmp_path)
    (ready / str(ssh_lab.ports[0])).touch()
    with serving(cli_env) as (url, _):
        shell = logged_in(cli_env, url, "alice", "admin", config=tmp_path / "alice")
        first = opsc(shell, "run", str(plan))
        assert first.returncode == 1, first.stdout + first.stderr
        old = execution_id(first.stdout)
        assert f"service not ready {TIMES}1: web-01" in first.stdout, first.stdout
        (ready / str(ssh_lab.ports[1])).touch()
        again = opsc(shell, "rerun", old[:8], "--failed")
        assert again.returncode == 0, again.stdout + again.stderr
        assert "on 1 target: web-01" in again.stderr
        assert f"re-runs the failed targets of {old}" in again.stdout
    assert (logs / f"{ssh_lab.ports[0]}.log").read_text() == "deploy\nhealth\n"
    assert (logs / f"{ssh_lab.ports[1]}.log").read_text() == "deploy\nhealth\n" * 2
