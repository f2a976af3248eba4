"""Stream test helpers: the app on a real uvicorn socket, and an SSE reader."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn

from opsconductor.api.app import create_app
from opsconductor.db.connection import Database


@dataclass
class Live:
    base: str
    app: Any


@asynccontextmanager
async def live_server(db: Database, **options: Any) -> AsyncIterator[Live]:
    """The real app served by uvicorn on a free loopback port, in this event loop."""
    app = create_app(db, **options)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, log_level="warning", timeout_graceful_shutdown=2
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield Live(f"http://127.0.0.1:{port}", app)
    finally:
        server.should_exit = True
        await task


@dataclass(frozen=True)
class Sse:
    event: str
    id: int | None
    data: dict[str, Any]


async def sse_messages(response: httpx.Response) -> AsyncIterator[Sse]:
    """Parse a text/event-stream body; comments (keepalives) and ``retry:`` are skipped."""
    event, ident, data = "message", None, []
    async for line in response.aiter_lines():
        if line == "":
            if data:
                yield Sse(event, ident, json.loads("\n".join(data)))
            event, ident, data = "message", None, []
        elif line.startswith(":") or line.startswith("retry:"):
            continue
        else:
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                event = value
            elif field == "id":
                ident = int(value)
            elif field == "data":
                data.append(value)


async def collect_until_end(
    client: httpx.AsyncClient, url: str, headers: dict[str, str]
) -> list[Sse]:
    """Every message of one SSE connection, through its ``end`` (or ``resync``)."""
    got: list[Sse] = []
    async with client.stream("GET", url, headers=headers) as response:
        assert response.status_code == 200, await response.aread()
        async for message in sse_messages(response):
            got.append(message)
            if message.event in ("end", "resync"):
                break
    return got
