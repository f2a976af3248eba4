"""``become: true`` on a real sshd target whose user has sudo *with a password*: the step
runs as root, and the password (from the secret store) reaches sudo's stdin only.

While the step runs, every process of this machine (the target is on loopback, so sshd,
the login shell, sudo and the command are here) is searched: the password is on no command
line and in no environment. Afterwards every column of every table, the captured logs, the
API's execution, steps and events and the SSE stream are searched for it in every form.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from opsconductor import secret_store
from opsconductor.db import auth, steps
from opsconductor.db.connection import Database
from opsconductor.engine import Engine
from opsconductor.plan import parse_plan
from opsconductor.secret_store import SecretResolver
from opsconductor.status_machine import Status
from opsconductor.submission import Request, submit
from tests.api.live import collect_until_end, live_server
from tests.helpers import add_ssh_assets, admin
from tests.security.test_masking_sinks import _every_column, _needles, _strings


def _processes_holding(needle: bytes) -> list[str]:
    """``pid:file`` of every process whose command line or environment holds ``needle``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        for name in ("cmdline", "environ"):
            try:
                if needle in (proc / name).read_bytes():
                    found.append(f"{proc.name}:{name}")
            except OSError:  # gone already, or a kernel thread
                continue
    return found


def _exists(path: Path) -> bool:
    return path.exists()


def _take_owner(path: Path) -> int:
    """The uid that wrote ``path``; removes it (tests leave nothing behind)."""
    uid = path.stat().st_uid
    path.unlink()
    return uid


async def test_become_runs_as_root_and_the_password_reaches_no_sink(
    db: Database,
    sudo_lab: Any,
    database_url: str,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    password = sudo_lab.password
    await secret_store.put(db, tmp_path, "default", "kv/sudo/lab", password, "tester")
    await add_ssh_assets(db, sudo_lab, sudo_lab.ports, prefix="sudo")
    async with db.transaction() as conn:
        token = (await auth.create_token(conn, "default", "viewer")).token
        await auth.grant(conn, "default", "viewer", "admin", granted_by="test")
    headers = {"Authorization": f"Bearer {token}"}
    plan = {
        "name": "as root",
        "steps": [
            {
                "name": "whoami",
                "type": "command",
                "targets": {"tags": {"role": "sudo"}},
                # The sleep gives the process scan below its time; the marker file proves
                # the wait is over the command, not before it.
                "command": "id -u; id -un; echo started > /tmp/$OPSC_MARK; sleep 3",
                "env": {"OPSC_MARK": f"opsc-become-{sudo_lab.username}"},
                "become": True,
                "become_password": {"secret": "kv/sudo/lab"},
                "timeout_s": 60,
            }
        ],
    }
    request = Request(parse_plan(plan), "default", await admin(db, "tester"))
    execution_id = (await submit(db, request)).execution.id
    marker = Path(f"/tmp/opsc-become-{sudo_lab.username}")
    assert not _exists(marker)
    engine = Engine(db, actor_id="tester", secrets=SecretResolver(db, tmp_path))
    async with live_server(db) as live, httpx.AsyncClient(base_url=live.base) as http:
        base = f"/api/v1/executions/{execution_id}"
        reader = asyncio.create_task(collect_until_end(http, f"{base}/stream", headers))
        running = asyncio.create_task(engine.run("default", execution_id))
        while not _exists(marker):  # the command's own sign of life
            assert not running.done(), await running
            await asyncio.sleep(0.05)
        holders = _processes_holding(password.encode())
        assert await running == Status.COMPLETED
        sse = await asyncio.wait_for(reader, 30)
        api = {
            "execution": (await http.get(base, headers=headers)).text,
            "steps": (await http.get(f"{base}/steps", headers=headers)).text,
            "events": (await http.get(f"{base}/events", headers=headers)).text,
        }
    assert holders == [], "the sudo password is on a command line or in an environment"
    assert _take_owner(marker) == 0  # written by root
    async with db.connection() as conn:
        rows = await steps.list_for(conn, execution_id)
    assert rows[0].status == "completed", rows[0]
    assert rows[0].output.split() == ["0", "root"]

    logs = capfd.readouterr()
    haystacks = {
        "database": _every_column(database_url),
        "logs": logs.out + logs.err,
        "sse": "\n".join(json.dumps(m.data) + "\n" + "\n".join(_strings(m.data)) for m in sse),
        **{f"api {k}": v + "\n" + "\n".join(_strings(json.loads(v))) for k, v in api.items()},
    }
    for needle in _needles(password):
        for sink, text in haystacks.items():
            assert needle not in text, f"the sudo password ({needle!r}) reached {sink}"
    events = json.loads(api["events"])["events"]
    kinds = [e["event_type"] for e in events]
    assert "secret_resolved" in kinds  # fetched just in time, and audited
