"""Client side of the SSE stream, for ``opsc watch --url``: follow one execution over the
REST API, resuming with ``Last-Event-ID`` after a resync or a dropped connection."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from opsconductor.errors import BadInput, NotFound, OpsError, PermissionDenied, Unauthenticated

#: Consecutive failed connections before giving up.
MAX_FAILURES = 10
RETRY_S = 1.0


@dataclass(frozen=True)
class Message:
    event: str
    id: int | None
    data: dict[str, Any]


async def messages(response: httpx.Response) -> AsyncIterator[Message]:
    """Parse ``text/event-stream``: blank line ends a message; comments are keepalives."""
    event, ident, data = "message", None, list[str]()
    async for line in response.aiter_lines():
        if not line:
            if data:
                yield Message(event, ident, json.loads("\n".join(data)))
            event, ident, data = "message", None, list[str]()
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            event = value
        elif field == "id" and value.isdigit():
            ident = int(value)
        elif field == "data":
            data.append(value)


def _raise_for(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    detail = response.json().get("detail", response.reason_phrase)
    kinds: dict[int, type[OpsError]] = {401: Unauthenticated, 403: PermissionDenied, 404: NotFound}
    raise kinds.get(response.status_code, BadInput)(f"{response.status_code}: {detail}")


class StreamWatcher:
    """Calls ``on_event`` for every event, in order, exactly once; returns the final status."""

    def __init__(self, base_url: str, token: str, execution_id: str) -> None:
        self.http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(10.0, read=60.0),  # keepalives come every 15 s
        )
        self.execution_id = execution_id
        self.cursor = 0

    async def __aenter__(self) -> StreamWatcher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()

    async def get(self, path: str) -> dict[str, Any]:
        response = await self.http.get(f"/executions/{self.execution_id}{path}")
        _raise_for(response)
        found: dict[str, Any] = response.json()
        return found

    async def follow(self, on_event: Callable[[dict[str, Any]], Awaitable[None]]) -> str:
        failures = 0
        while True:
            try:
                status = await self._once(on_event)
            except httpx.TransportError:
                failures += 1
                if failures >= MAX_FAILURES:
                    raise
                await asyncio.sleep(RETRY_S)
                continue
            if status is not None:
                return status
            failures = 0  # a resync: resume at once from the cursor

    async def _once(self, on_event: Callable[[dict[str, Any]], Awaitable[None]]) -> str | None:
        headers = {"Last-Event-ID": str(self.cursor)} if self.cursor else {}
        url = f"/executions/{self.execution_id}/stream"
        async with self.http.stream("GET", url, headers=headers) as response:
            if response.status_code >= 400:
                await response.aread()
                _raise_for(response)
            async for message in messages(response):
                if message.event == "end":
                    if message.data.get("status") is None:  # ended early: token revoked
                        reason = message.data.get("reason") or "ended by the server"
                        raise Unauthenticated(f"the event stream ended: {reason}")
                    return str(message.data["status"])
                if message.event == "resync":
                    return None
                if message.id is not None and message.id > self.cursor:
                    self.cursor = message.id
                    await on_event(message.data)
        return None  # the server went away: reconnect from the cursor
