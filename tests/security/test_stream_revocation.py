"""A stream authorised when it opened must not outlive its token: SSE, WebSocket and the
long-poll re-check the token every few seconds and end when it is revoked."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from opsconductor.db import auth, executions
from opsconductor.db.connection import Database
from tests.api import conftest as api_fixtures
from tests.api.live import live_server, sse_messages
from tests.api.support import Api, command_plan

api = api_fixtures.api  # the API fixture of tests/api, here too
LOCAL = {"hostnames": ["localhost"]}
#: Generous: the server re-checks every 5 s; this only says "ends, and soon".
ENDS_WITHIN_S = 15.0


async def _waiting(api: Api, headers: dict[str, str]) -> dict[str, Any]:
    plan = command_plan(("true", "read", LOCAL), name="waits", approval_level=1)
    r = await api.client.post("/api/v1/executions", json=plan, headers=headers)
    assert r.status_code == 201, r.text
    return dict(r.json())


async def _revoke_all(db: Database, tenant: str, actor: str) -> None:
    async with db.transaction() as conn:
        for row in await auth.list_tokens(conn, tenant):
            if row["actor_id"] == actor:
                assert await auth.revoke_token(conn, tenant, str(row["token_id"]))


async def _note(db: Database, execution: dict[str, Any], n: int) -> None:
    async with db.connection() as conn:
        row = {"id": execution["id"], "tenant_id": execution["tenant_id"]}
        await executions.append_event(conn, row, "note", "tester", {"n": n})


async def test_sse_ends_with_token_revoked_after_revocation(api: Api, db: Database) -> None:
    headers = await api.login("acme", "mallory", "operator")
    execution = await _waiting(api, headers)
    url = f"/api/v1/executions/{execution['id']}/stream"
    async with live_server(db) as live, httpx.AsyncClient(base_url=live.base, timeout=30) as http:
        got: list[Any] = []

        async def read() -> None:
            async with http.stream("GET", url, headers=headers) as response:
                assert response.status_code == 200
                async for message in sse_messages(response):
                    got.append(message)
                    if message.event == "end":
                        return

        reader = asyncio.create_task(read())
        hub = live.app.state.events
        while hub.feeds() < 1:  # noqa: ASYNC110 (polling the hub, as tests/api does)
            await asyncio.sleep(0.05)
        await _revoke_all(db, "acme", "mallory")
        # Events keep coming (a busy execution), yet the stream stops delivering them.
        for n in range(3):
            await _note(db, execution, n)
        await asyncio.wait_for(reader, ENDS_WITHIN_S)
    assert got[-1].event == "end"
    assert got[-1].data == {"status": None, "reason": "token revoked"}


async def test_websocket_closes_4401_after_revocation(api: Api, db: Database) -> None:
    headers = await api.login("acme", "mallory", "operator")
    token = headers["Authorization"].removeprefix("Bearer ")
    execution = await _waiting(api, headers)
    async with live_server(db) as live:
        ws_url = live.base.replace("http", "ws") + f"/api/v1/executions/{execution['id']}/ws"
        async with connect(f"{ws_url}?token={token}") as ws:
            first = json.loads(await ws.recv())
            assert first["type"] == "event"
            await _revoke_all(db, "acme", "mallory")

            async def rest() -> list[dict[str, Any]]:
                got: list[dict[str, Any]] = []
                with contextlib.suppress(ConnectionClosed):  # 4401 is not a "normal" close
                    while True:
                        got.append(json.loads(await ws.recv()))
                return got

            messages = await asyncio.wait_for(rest(), ENDS_WITHIN_S)
        assert messages[-1] == {"type": "end", "status": None, "reason": "token revoked"}
        assert ws.close_code == 4401


async def test_parked_long_poll_answers_401_after_revocation(api: Api, db: Database) -> None:
    headers = await api.login("acme", "mallory", "operator")
    execution = await _waiting(api, headers)
    url = f"/api/v1/executions/{execution['id']}/events"
    async with live_server(db) as live, httpx.AsyncClient(base_url=live.base, timeout=90) as http:
        first = await http.get(url, headers=headers)
        last = first.json()["last_event_id"]
        parked = asyncio.create_task(
            http.get(url, params={"after": last, "wait": 60}, headers=headers)
        )
        await asyncio.sleep(0.5)
        await _revoke_all(db, "acme", "mallory")
        answer = await asyncio.wait_for(parked, ENDS_WITHIN_S)
    assert answer.status_code == 401
    assert answer.headers["content-type"].startswith("application/problem+json")
