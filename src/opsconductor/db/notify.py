"""Wake-ups for live event feeds: one ``LISTEN`` connection per process, fanned out in memory.

Every insert into ``execution_events`` notifies ``opsc_execution_events`` with the execution
id (trigger from 0003_auth), whichever process wrote it, so a long-poll in the API returns
as soon as a worker anywhere records news. Waiters still re-read the table at a slow period,
so a notification lost while the listener reconnects costs latency, never an event.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator

import psycopg
import structlog

CHANNEL = "opsc_execution_events"
RECONNECT_S = 1.0

log = structlog.get_logger("opsconductor.notify")


class EventHub:
    def __init__(self, url: str) -> None:
        self.url = url
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None
        self.listening = asyncio.Event()
        self._subscribed = asyncio.Condition()

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._listen(), name="event-hub")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _listen(self) -> None:
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
                async with conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self.listening.set()
                    async for note in conn.notifies():
                        self._wake(note.payload)
            except psycopg.Error as exc:
                log.warning("event listener lost its connection", error=str(exc))
            self.listening.clear()
            self._wake_all()  # let waiters re-read while we reconnect
            await asyncio.sleep(RECONNECT_S)

    def _wake(self, execution_id: str) -> None:
        for event in self._waiters.get(execution_id, ()):
            event.set()

    def _wake_all(self) -> None:
        for events in self._waiters.values():
            for event in events:
                event.set()

    def waiting(self, execution_id: str) -> int:
        """How many requests wait on this execution (tests use it to know a poll is parked)."""
        return len(self._waiters.get(execution_id, ()))

    async def until_waiting(self, execution_id: str) -> None:
        """Return once a request waits on this execution (lets tests act at that moment)."""
        async with self._subscribed:
            await self._subscribed.wait_for(lambda: self.waiting(execution_id) > 0)

    @contextlib.asynccontextmanager
    async def subscribe(self, execution_id: str) -> AsyncIterator[asyncio.Event]:
        event = asyncio.Event()
        self._waiters[execution_id].add(event)
        async with self._subscribed:
            self._subscribed.notify_all()
        try:
            yield event
        finally:
            self._waiters[execution_id].discard(event)
            if not self._waiters[execution_id]:
                del self._waiters[execution_id]
