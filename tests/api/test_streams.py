"""Event streams on a real socket: SSE replay and follow, Last-Event-ID resume, 200 clients,
WebSocket, browser-style auth, tenant isolation, slow clients dropped to a resync."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from opsconductor.db import executions
from opsconductor.db.connection import Database
from tests.api.live import collect_until_end, live_server, sse_messages
from tests.api.support import Api, command_plan

LOCAL = {"hostnames": ["localhost"]}


async def _pending(api: Api, headers: dict[str, str], name: str = "waits") -> dict[str, Any]:
    """An execution that waits for approval, so its stream stays open until we end it."""
    plan = command_plan(("true", "read", LOCAL), name=name, approval_level=1)
    r = await api.client.post("/api/v1/executions", json=plan, headers=headers)
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "pending_approval"
    return dict(r.json())


async def _note(db: Database, execution: dict[str, Any], n: int, **extra: Any) -> int:
    async with db.connection() as conn:
        row = {"id": execution["id"], "tenant_id": execution["tenant_id"]}
        return await executions.append_event(conn, row, "note", "tester", {"n": n, **extra})


async def _notes(db: Database, execution: dict[str, Any], count: int, blob: str) -> None:
    """``count`` events in one statement (one commit, ``count`` notifications)."""
    async with db.connection() as conn:
        await conn.execute(
            "INSERT INTO execution.execution_events"
            " (execution_id, tenant_id, event_type, actor_id, payload)"
            " SELECT %s, %s, 'note', 'tester', jsonb_build_object('n', g, 'blob', %s::text)"
            " FROM generate_series(1, %s) AS g",
            (execution["id"], execution["tenant_id"], blob, count),
        )


async def _event_ids(db: Database, execution_id: str, after: int = 0) -> list[int]:
    async with db.connection() as conn:
        return [int(r.id) for r in await executions.events(conn, execution_id, after)]  # type: ignore[arg-type]


async def _until(predicate: Any, timeout_s: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def _ids(messages: list[Any]) -> list[int]:
    return [m.id for m in messages if m.event == "message"]


async def test_sse_replays_history_then_follows_live_until_the_final_status(
    api: Api, db: Database
) -> None:
    headers = await api.login("acme", "alice", "operator")
    execution = await _pending(api, headers)
    async with live_server(db) as live, httpx.AsyncClient(base_url=live.base) as http:
        url = f"/api/v1/executions/{execution['id']}/stream"
        reader = asyncio.create_task(collect_until_end(http, url, headers))
        hub = live.app.state.events
        await _until(lambda: hub.feeds() == 1)
        for n in range(3):
            await _note(db, execution, n, password="password=hunter2")
        cancelled = await http.post(f"/api/v1/executions/{execution['id']}/cancel", headers=headers)
        assert cancelled.status_code == 200
        got = await asyncio.wait_for(reader, 10)
    assert _ids(got) == await _event_ids(db, execution["id"])
    assert got[0].data["event_type"] == "submitted"
    notes = [m.data for m in got if m.data.get("event_type") == "note"]
    assert [n["payload"]["n"] for n in notes] == [0, 1, 2]
    assert "hunter2" not in json.dumps(notes)  # masked at the sink
    assert got[-1].event == "end" and got[-1].data == {"status": "cancelled"}


async def test_reconnect_with_last_event_id_replays_exactly_the_missed_events(
    api: Api, db: Database
) -> None:
    headers = await api.login("acme", "alice", "operator")
    execution = await _pending(api, headers)
    for n in range(5):
        await _note(db, execution, n)
    url = f"/api/v1/executions/{execution['id']}/stream"
    async with live_server(db) as live, httpx.AsyncClient(base_url=live.base) as http:
        first: list[int] = []
        async with http.stream("GET", url, headers=headers) as response:
            async for message in sse_messages(response):
                assert message.id is not None
                first.append(message.id)
                if len(first) == 4:
                    break  # the client goes away mid-stream
        missed = [await _note(db, execution, n) for n in range(5, 12)]
        resumed: list[int] = []
        again = {**headers, "Last-Event-ID": str(first[-1])}
        async with http.stream("GET", url, headers=again) as response:
            async for message in sse_messages(response):
                assert message.id is not None
                resumed.append(message.id)
                if message.id == missed[-1]:
                    break
    everything = await _event_ids(db, execution["id"])
    assert first == everything[:4]
    assert resumed == everything[4:]  # no gap, no duplicate
    assert set(missed) <= set(resumed)


async def test_two_hundred_sse_clients_all_receive_every_event(api: Api, db: Database) -> None:
    headers = await api.login("acme", "alice", "operator")
    execution = await _pending(api, headers)
    clients = 200
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with (
        live_server(db) as live,
        httpx.AsyncClient(base_url=live.base, limits=limits, timeout=30) as http,
    ):
        url = f"/api/v1/executions/{execution['id']}/stream"
        readers = [
            asyncio.create_task(collect_until_end(http, url, headers)) for _ in range(clients)
        ]
        hub = live.app.state.events
        await _until(lambda: hub.feeds() == clients, timeout_s=60)
        for n in range(20):
            await _note(db, execution, n)
        r = await http.post(f"/api/v1/executions/{execution['id']}/cancel", headers=headers)
        assert r.status_code == 200
        results = await asyncio.wait_for(asyncio.gather(*readers), 60)
    expected = await _event_ids(db, execution["id"])
    assert len(expected) == 22  # submitted, 20 notes, cancelled
    for got in results:
        assert _ids(got) == expected
        assert got[-1].event == "end"


async def test_websocket_follows_an_execution_and_closes_after_its_end(
    api: Api, db: Database
) -> None:
    headers = await api.login("acme", "alice", "operator")
    token = headers["Authorization"].removeprefix("Bearer ")
    execution = await _pending(api, headers)
    async with live_server(db) as live:
        ws_url = live.base.replace("http", "ws") + f"/api/v1/executions/{execution['id']}/ws"
        async with connect(f"{ws_url}?token={token}") as ws:
            first = json.loads(await ws.recv())
            assert first["type"] == "event" and first["event"]["event_type"] == "submitted"
            await _note(db, execution, 1)
            assert json.loads(await ws.recv())["event"]["payload"] == {"n": 1}
            async with httpx.AsyncClient(base_url=live.base) as http:
                await http.post(f"/api/v1/executions/{execution['id']}/cancel", headers=headers)
            messages = [json.loads(m) async for m in ws]
            assert messages[-1] == {"type": "end", "status": "cancelled"}
            assert messages[-2]["event"]["to_status"] == "cancelled"
        assert ws.close_code == 1000
        # Resume after the note: only what came later.
        note_id = (await _event_ids(db, execution["id"]))[1]
        async with connect(f"{ws_url}?after={note_id}", additional_headers=headers) as ws:
            rest = [json.loads(m) async for m in ws]
        assert [m["event"]["id"] for m in rest if m["type"] == "event"] == (
            await _event_ids(db, execution["id"], note_id)
        )
        async with connect(f"{ws_url}?token=opsc_wrong") as ws:
            with pytest.raises(ConnectionClosed):
                await ws.recv()
        assert ws.close_code == 4401


async def test_stream_auth_by_header_query_or_cookie_and_tenant_isolation(
    api: Api, db: Database
) -> None:
    headers = await api.login("acme", "alice", "operator")
    token = headers["Authorization"].removeprefix("Bearer ")
    other = await api.login("globex", "bob", "operator")
    execution = await _pending(api, headers)
    url = f"/api/v1/executions/{execution['id']}/stream"
    async with live_server(db) as live, httpx.AsyncClient(base_url=live.base) as http:
        assert (await http.get(url)).status_code == 401
        assert (await http.get(url, headers=other)).status_code == 404
        for kwargs in ({"params": {"token": token}}, {"cookies": {"opsc_token": token}}):
            async with http.stream("GET", url, **kwargs) as response:  # type: ignore[arg-type]
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/event-stream")
                first = await anext(sse_messages(response))
                assert first.data["event_type"] == "submitted"


async def test_tenant_stream_carries_only_the_callers_tenant_from_the_present_on(
    api: Api, db: Database
) -> None:
    acme = await api.login("acme", "alice", "operator")
    globex = await api.login("globex", "bob", "operator")
    before = await _pending(api, acme)
    async with live_server(db) as live, httpx.AsyncClient(base_url=live.base) as http:
        got: list[Any] = []

        async def read() -> None:
            async with http.stream("GET", "/api/v1/stream", headers=acme) as response:
                async for message in sse_messages(response):
                    got.append(message)
                    if message.data.get("payload", {}).get("n") == 2:
                        return

        reader = asyncio.create_task(read())
        await _until(lambda: live.app.state.events.feeds() == 1)
        theirs = await _pending(api, globex)
        await _note(db, theirs, 1)
        ours = await _pending(api, acme, name="later")
        await _note(db, ours, 2)
        await asyncio.wait_for(reader, 10)
    executions_seen = {m.data["execution_id"] for m in got}
    assert executions_seen == {str(ours["id"])}  # not the history, not the other tenant
    assert str(before["id"]) not in executions_seen


async def test_a_slow_client_is_dropped_to_a_resync_and_does_not_block_others(
    api: Api, db: Database
) -> None:
    headers = await api.login("acme", "alice", "operator")
    execution = await _pending(api, headers)
    path = f"/api/v1/executions/{execution['id']}/stream"
    async with live_server(db, stream_buffer=256) as live:
        hub = live.app.state.events
        port = int(live.base.rsplit(":", 1)[1])
        # The slow client: a socket with a tiny receive window that reads nothing for now.
        slow = socket.socket()
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.connect(("127.0.0.1", port))
        request = f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {headers['Authorization']}"
        slow.sendall(f"{request}\r\n\r\n".encode())
        await _until(lambda: hub.feeds() == 1)
        async with httpx.AsyncClient(base_url=live.base, timeout=30) as http:
            fast = asyncio.create_task(collect_until_end(http, path, headers))
            await _until(lambda: hub.feeds() == 2)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 60
            while not hub.lagging():  # 200 KB a round until the slow one's socket is full
                assert loop.time() < deadline, "the slow client never fell behind"
                await _notes(db, execution, 50, blob="x" * 4000)
                await asyncio.sleep(0.02)
            assert hub.lagging() == 1
            await http.post(f"{path.removesuffix('/stream')}/cancel", headers=headers)
            got = await asyncio.wait_for(fast, 60)
        assert _ids(got) == await _event_ids(db, execution["id"])  # the fast one got all
        assert got[-1].event == "end"
        # The slow client now reads: what it got, then a resync naming its cursor.
        slow.setblocking(False)
        raw = b""
        while not raw.endswith(b"\r\n0\r\n\r\n"):  # the last chunk: the server ended it
            chunk = await asyncio.wait_for(loop.sock_recv(slow, 1 << 16), 10)
            assert chunk, f"closed without a resync after {len(raw)} bytes: {raw[-300:]!r}"
            raw += chunk
        slow.close()
    text = raw.decode()
    ids = [int(line[4:]) for line in text.splitlines() if line.startswith("id: ")]
    resync = json.loads(text.split("event: resync\n")[1].split("\n")[0].removeprefix("data: "))
    assert resync["last_event_id"] == ids[-1]
    assert "resume" in resync["detail"]
    assert ids == (await _event_ids(db, execution["id"]))[: len(ids)]  # no gap before it
