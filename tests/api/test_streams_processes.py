"""Fan-out across processes: an engine in one process (``opsc run``), two API servers
(``opsc serve``) in two others; an SSE client on one and a WebSocket client on the other
see every event of the execution, live, in order; ``opsc watch --url`` follows it too."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from websockets.asyncio.client import connect

from tests.api.live import Sse, collect_until_end, sse_messages
from tests.served import opsc

PLAN = """
name: three slow steps
steps:
{steps}
"""
STEP = """  - name: step {n}
    type: command
    action_class: read
    targets: {{hostnames: [localhost]}}
    command: sleep 0.4; echo step {n}
"""


def _serve(env: dict[str, str]) -> tuple[str, subprocess.Popen[str]]:
    """An API server without its in-process worker pool: events come from elsewhere."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "opsconductor.cli", "serve", "--port", "0", "--workers", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        found = re.search(r"listening on (http://127\.0\.0\.1:\d+/api/v1)", line)
        if found:
            return found[1], proc
    proc.kill()
    raise AssertionError(proc.stderr.read() if proc.stderr else "server did not start")


@pytest.fixture
def two_servers(cli_env: dict[str, str]) -> Iterator[tuple[dict[str, str], list[str], str]]:
    env = {**cli_env, "OPSC_TENANT": "acme"}
    assert opsc(env, "tenant", "local-exec", "on").returncode == 0  # its steps run locally
    made = opsc(env, "tokens", "create", "tester", "--role", "admin")
    token = re.search(r"^(opsc_\S+)$", made.stdout, re.MULTILINE)
    assert token, made.stdout + made.stderr
    servers = [_serve(env), _serve(env)]
    try:
        yield env, [url for url, _ in servers], token[1]
    finally:
        for _, proc in servers:
            proc.terminate()
            proc.wait(timeout=30)


async def _ws_events(url: str, token: str) -> list[dict[str, Any]]:
    async with connect(url, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        return [json.loads(m) async for m in ws]


async def test_events_of_an_engine_process_reach_sse_and_websocket_clients_on_other_servers(
    two_servers: tuple[dict[str, str], list[str], str], tmp_path: Path, database_url: str
) -> None:
    env, (api_a, api_b), token = two_servers
    auth = {"Authorization": f"Bearer {token}"}
    plan = tmp_path / "plan.yaml"
    plan.write_text(PLAN.format(steps="".join(STEP.format(n=n) for n in range(3))))
    async with httpx.AsyncClient(timeout=30) as http:
        # The tenant stream on server A names the execution as soon as it is submitted.
        async with http.stream("GET", f"{api_a}/stream", headers=auth) as tenant:
            engine = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "opsconductor.cli", "run", str(plan),
                env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            first: Sse = await asyncio.wait_for(anext(sse_messages(tenant)), 30)
        assert first.data["event_type"] == "submitted"
        execution_id = first.data["execution_id"]
        sse = asyncio.create_task(
            collect_until_end(http, f"{api_a}/executions/{execution_id}/stream", auth)
        )
        ws_url = api_b.replace("http", "ws") + f"/executions/{execution_id}/ws"
        ws = asyncio.create_task(_ws_events(ws_url, token))
        # a shell logged in to node B (opsc login stores the token) follows it there
        shell = {**env, "XDG_CONFIG_HOME": str(Path(env["OPSC_HOME"]) / "watcher")}
        done = opsc(shell, "login", api_b.removesuffix("/api/v1"), stdin=token)
        assert done.returncode == 0, done.stderr
        watch = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "opsconductor.cli", "watch", execution_id,
            env=shell, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        got_sse, got_ws = await asyncio.wait_for(asyncio.gather(sse, ws), 60)
        out, err = await asyncio.wait_for(engine.communicate(), 60)
        assert engine.returncode == 0, out.decode() + err.decode()
        watched, watch_err = await asyncio.wait_for(watch.communicate(), 60)

    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT id, created_at FROM execution.execution_events WHERE execution_id = %s "
            "ORDER BY id",
            (execution_id,),
        ).fetchall()
    expected = [r[0] for r in rows]
    assert [m.id for m in got_sse if m.event == "message"] == expected
    assert got_sse[-1].event == "end" and got_sse[-1].data["status"] == "completed"
    assert [m["event"]["id"] for m in got_ws if m["type"] == "event"] == expected
    assert got_ws[-1] == {"type": "end", "status": "completed"}
    kinds = [m["event"]["event_type"] for m in got_ws if m["type"] == "event"]
    assert kinds.count("step_finished") == 3
    assert watch.returncode == 0, watched.decode() + watch_err.decode()
    text = watched.decode()
    assert "three slow steps" in text and "finished: completed" in text
    for n in range(3):
        assert f"step {n} @ localhost" in text, text


def _expected_ids(database_url: str, execution_id: str) -> list[int]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT id FROM execution.execution_events WHERE execution_id = %s ORDER BY id",
            (execution_id,),
        ).fetchall()
    return [r[0] for r in rows]


async def test_events_of_a_worker_process_stream_live_and_opsc_workers_lists_it(
    two_servers: tuple[dict[str, str], list[str], str], tmp_path: Path, database_url: str
) -> None:
    env, (api_a, api_b), token = two_servers
    auth = {"Authorization": f"Bearer {token}"}
    plan = tmp_path / "plan.yaml"
    plan.write_text(PLAN.format(steps="".join(STEP.format(n=n) for n in range(3))))
    queued = opsc(env, "submit", str(plan))
    assert queued.returncode == 0, queued.stderr
    execution_id = queued.stdout.strip().splitlines()[-1]
    async with httpx.AsyncClient(timeout=30) as http:
        sse = asyncio.create_task(
            collect_until_end(http, f"{api_a}/executions/{execution_id}/stream", auth)
        )
        ws_url = api_b.replace("http", "ws") + f"/executions/{execution_id}/ws"
        ws = asyncio.create_task(_ws_events(ws_url, token))
        await asyncio.sleep(0.5)  # both clients wait before the worker starts: events go live
        worker = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "opsconductor.cli", "worker", "--concurrency", "3",
            env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        try:
            got_sse, got_ws = await asyncio.wait_for(asyncio.gather(sse, ws), 60)
            listed = opsc(env, "workers")
        finally:
            worker.terminate()
            await asyncio.wait_for(worker.wait(), 60)
    expected = _expected_ids(database_url, execution_id)
    assert [m.id for m in got_sse if m.event == "message"] == expected
    assert got_sse[-1].data == {"status": "completed"}
    assert [m["event"]["id"] for m in got_ws if m["type"] == "event"] == expected
    assert listed.returncode == 0, listed.stderr
    assert re.search(rf"{worker.pid}\s.*alive\s.*/3", listed.stdout), listed.stdout
    after = opsc(env, "workers")
    assert re.search(rf"{worker.pid}\s.*stopped", after.stdout), after.stdout
