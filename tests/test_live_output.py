"""Live output: a running step's lines reach the event stream as they are printed, masked
whole-line, bounded per attempt; over a real sshd target and a real SSE client."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from opsconductor.db import auth, executions
from opsconductor.db.connection import Database
from opsconductor.engine import Engine, live
from opsconductor.plan import parse_plan
from opsconductor.status_machine import Status
from opsconductor.submission import Request, submit
from tests.api.live import live_server, sse_messages
from tests.helpers import add_ssh_assets, admin

#: A port of the lab that tests/test_ssh.py does not use.
PORT = 20


async def _token(db: Database) -> dict[str, str]:
    async with db.transaction() as conn:
        token = (await auth.create_token(conn, "default", "viewer")).token
        await auth.grant(conn, "default", "viewer", "admin", granted_by="test")
    return {"Authorization": f"Bearer {token}"}


async def _submit(db: Database, prefix: str, **step: Any) -> Any:
    plan = {
        "name": "live",
        "steps": [{"name": "s", "type": "command", "targets": {"tags": {"role": prefix}}, **step}],
    }
    request = Request(parse_plan(plan), "default", await admin(db, "tester"))
    return (await submit(db, request)).execution.id


async def test_lines_arrive_over_sse_one_by_one_before_the_step_ends(
    db: Database, ssh_lab: Any
) -> None:
    await add_ssh_assets(db, ssh_lab, [ssh_lab.ports[PORT]], prefix="live")
    headers = await _token(db)
    command = "for i in 1 2 3 4; do echo line $i; echo warn $i >&2; sleep 1; done"
    execution_id = await _submit(db, "live", command=command, timeout_s=60)
    arrivals: list[tuple[float, dict[str, Any]]] = []
    loop = asyncio.get_running_loop()
    async with live_server(db) as served, httpx.AsyncClient(base_url=served.base) as http:
        url = f"/api/v1/executions/{execution_id}/stream"
        async with http.stream("GET", url, headers=headers) as response:
            assert response.status_code == 200
            running = None
            async for message in sse_messages(response):
                if running is None:  # subscribed (the replay came): now start the run
                    running = asyncio.create_task(
                        Engine(db, actor_id="t").run("default", execution_id)
                    )
                if message.event == "end":
                    break
                arrivals.append((loop.time(), message.data))
            assert running is not None and await running == Status.COMPLETED

    finished = next(t for t, e in arrivals if e["event_type"] == "step_finished")
    outputs = [(t, e["payload"]) for t, e in arrivals if e["event_type"] == "step_output"]
    stdout = [(t, p) for t, p in outputs if p["stream"] == "stdout"]
    assert [line for _, p in stdout for line in p["lines"]] == [f"line {i}" for i in (1, 2, 3, 4)]
    stderr = [line for _, p in outputs if p["stream"] == "stderr" for line in p["lines"]]
    assert stderr == [f"warn {i}" for i in (1, 2, 3, 4)]
    # Line by line: each printed a second apart arrived in an event of its own, and the
    # first long before the step ended (it sleeps 3 s more after printing it).
    assert len(stdout) == 4
    assert all(t < finished for t, _ in outputs)
    assert finished - stdout[0][0] > 1.5
    assert {p["target"] for _, p in outputs} == {"live-00"} and stdout[0][1]["step"] == "s"


async def test_live_lines_are_masked_whole_when_printed_in_pieces(
    db: Database, ssh_lab: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPSC_SECRET_ENV_LIVE_TOKEN", "tok-3n-value-77")
    monkeypatch.setattr(live, "FLUSH_BYTES", 20_000)
    monkeypatch.setattr(live, "TOTAL_BYTES", 50_000)
    await add_ssh_assets(db, ssh_lab, [ssh_lab.ports[PORT + 1]], prefix="livemask")
    # The secret leaves in two writes 0.8 s apart: a chunk boundary inside the value, and
    # a flush (every 0.5 s) in between. Then bursts of 30 kB, 0.6 s apart: each flush takes
    # 20 kB (the rest is counted as skipped), and after 50 kB the live view stops.
    command = (
        'printf "token: %s" "${T%%-value-77}"; sleep 0.8; printf -- "-value-77 done\\n"; '
        "for i in 1 2 3 4 5; do head -c 30000 /dev/zero | tr '\\0' x | fold -w 999; echo; "
        "sleep 0.6; done"
    )
    execution_id = await _submit(
        db,
        "livemask",
        command=command,
        env={"T": {"secret": "env:OPSC_SECRET_ENV_LIVE_TOKEN"}},
        timeout_s=60,
    )
    assert await Engine(db, actor_id="t").run("default", execution_id) == Status.COMPLETED
    async with db.connection() as conn:
        events = await executions.events(conn, execution_id)
    outputs = [e.payload for e in events if e.event_type == "step_output"]
    lines = [line for p in outputs for line in p["lines"]]
    assert lines[0].startswith("token: ****"), lines[0]
    assert "tok-3n" not in json.dumps(outputs) and "value-77" not in json.dumps(outputs)
    assert any(p.get("skipped") for p in outputs)
    assert outputs[-1].get("truncated") is True
    assert [p for p in outputs if p.get("truncated")] == [outputs[-1]]  # said once
    shown = sum(len(line) + 1 for line in lines)
    assert 20_000 < shown <= 50_000
