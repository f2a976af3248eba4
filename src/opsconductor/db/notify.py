"""Live event fan-out: one ``LISTEN`` connection per process, fanned out in memory.

Every insert into ``execution_events`` notifies ``opsc_execution_events`` (trigger, payload
``"<event id> <execution id> <tenant id>"``), whichever process wrote it. Two kinds of
listeners hang off the one connection:

* waiters (the long-poll) are woken per execution and re-read the table themselves, and also
  re-read at a slow period, so a lost notification costs latency, never an event;
* feeds (SSE and WebSocket streams) get the event rows pushed. The hub fetches each row once
  per process, however many clients follow it, masks it and serialises it once, then offers
  it to every matching feed's bounded buffer without waiting: a slow client only ever
  overflows its own buffer, after which it is told to resync from its cursor.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import psycopg
import structlog

from opsconductor import masking
from opsconductor.db import queries
from opsconductor.db.connection import Database
from opsconductor.records import Event

CHANNEL = "opsc_execution_events"
RECONNECT_S = 1.0
#: Events a stream client may fall behind by before it is dropped to a resync.
DEFAULT_BUFFER = 1024

Q = queries.load("streams")
log = structlog.get_logger("opsconductor.notify")


@dataclass(frozen=True)
class StreamEvent:
    """One event as every stream sends it: the masked row, serialised once."""

    id: int
    execution_id: str
    tenant_id: str
    event_type: str
    to_status: str | None
    data: str


def stream_event(event: Event) -> StreamEvent:
    """The masked, JSON-ready form of an ``execution_events`` row (masked again here, at the
    stream sink, although rows are stored masked)."""
    body = {
        "id": event.id,
        "execution_id": str(event.execution_id),
        "tenant_id": event.tenant_id,
        "event_type": event.event_type,
        "from_status": event.from_status,
        "to_status": event.to_status,
        "actor_id": event.actor_id,
        "payload": masking.DEFAULT.mask_data(event.payload),
        "created_at": event.created_at.isoformat(),
    }
    return StreamEvent(
        id=event.id,
        execution_id=body["execution_id"],
        tenant_id=event.tenant_id,
        event_type=event.event_type,
        to_status=event.to_status,
        data=json.dumps(body, separators=(",", ":"), default=str),
    )


def still_wanted() -> None:
    """A cancellation that lands inside a query may be absorbed by psycopg (returned as a
    query error, or not at all); a loop must not outlive its own cancellation."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class Overflow:
    """Marker a feed returns once it has dropped events: the client must resync."""


OVERFLOW = Overflow()


@dataclass(eq=False)
class Feed:
    """One stream client's subscription: a tenant, optionally narrowed to one execution."""

    tenant_id: str
    execution_id: str | None
    buffer: int
    _queue: asyncio.Queue[StreamEvent] = field(init=False)
    _overflowed: asyncio.Event = field(init=False, default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self._queue = asyncio.Queue(self.buffer)

    def matches(self, execution_id: str, tenant_id: str) -> bool:
        if self.execution_id is not None:
            return self.execution_id == execution_id
        return self.tenant_id == tenant_id

    @property
    def overflowed(self) -> bool:
        return self._overflowed.is_set()

    def offer(self, event: StreamEvent) -> None:
        """Never waits: a full buffer marks the feed overflowed and drops the event."""
        if self.overflowed:
            return
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self.drop()

    def drop(self) -> None:
        self._overflowed.set()

    async def next(self, timeout_s: float) -> StreamEvent | Overflow | None:
        """The next event, ``OVERFLOW`` once events were dropped, None after ``timeout_s``."""
        if self.overflowed:
            return OVERFLOW
        if not self._queue.empty():
            return self._queue.get_nowait()
        getter = asyncio.ensure_future(self._queue.get())
        dropped = asyncio.ensure_future(self._overflowed.wait())
        try:
            await asyncio.wait({getter, dropped}, timeout=timeout_s, return_when="FIRST_COMPLETED")
        finally:
            dropped.cancel()
            if not getter.done():
                getter.cancel()
        if self.overflowed:
            return OVERFLOW
        return getter.result() if getter.done() and not getter.cancelled() else None


class EventHub:
    def __init__(self, url: str, db: Database | None = None, buffer: int = DEFAULT_BUFFER):
        self.url = url
        self.db = db
        self.buffer = buffer
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._feeds: set[Feed] = set()
        self._arrived: list[tuple[int, str, str]] = []
        self._news = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.listening = asyncio.Event()
        self._subscribed = asyncio.Condition()
        #: the server is stopping (``end_all``): long polls answer what they have
        self.closing = False

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._listen(), name="event-hub")]
        if self.db is not None:
            self._tasks.append(loop.create_task(self._fan_out(), name="event-fan-out"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def _listen(self) -> None:
        while True:
            still_wanted()
            try:
                conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
                async with conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self.listening.set()
                    async for note in conn.notifies():
                        self._arrive(note.payload)
            except psycopg.Error as exc:
                still_wanted()
                log.warning("event listener lost its connection", error=str(exc))
            self.listening.clear()
            self._wake_all()  # let waiters re-read while we reconnect
            for feed in list(self._feeds):  # notifications may be lost: re-read from cursors
                feed.drop()
            await asyncio.sleep(RECONNECT_S)

    def _arrive(self, payload: str) -> None:
        event_id, _, rest = payload.partition(" ")
        if not event_id.isdigit():  # a writer on the pre-0007 schema sends the execution id
            self._wake(event_id)
            return
        execution_id, _, tenant_id = rest.partition(" ")
        self._wake(execution_id)
        if any(feed.matches(execution_id, tenant_id) for feed in self._feeds):
            self._arrived.append((int(event_id), execution_id, tenant_id))
            self._news.set()

    async def _fan_out(self) -> None:
        """Fetch what arrived in one query, in arrival (= commit) order, and offer it."""
        assert self.db is not None
        while True:
            still_wanted()
            await self._news.wait()
            self._news.clear()
            batch, self._arrived = self._arrived, []
            try:
                async with self.db.connection() as conn:
                    cur = await conn.execute(Q["events_by_id"], {"ids": [b[0] for b in batch]})
                    found = [Event.from_row(row) for row in await cur.fetchall()]
                rows = {event.id: event for event in found}
            except Exception as exc:  # any failure: the affected clients re-read themselves
                still_wanted()
                log.warning("event fan-out could not read events", error=str(exc), exc_info=exc)
                self._drop_matching(batch)
                continue
            for event_id, _, _ in batch:
                if event_id in rows:
                    self._offer(stream_event(rows[event_id]))

    def _offer(self, event: StreamEvent) -> None:
        for feed in self._feeds:
            if feed.matches(event.execution_id, event.tenant_id):
                feed.offer(event)

    def _drop_matching(self, batch: list[tuple[int, str, str]]) -> None:
        for feed in self._feeds:
            if any(feed.matches(e, t) for _, e, t in batch):
                feed.drop()

    @contextlib.contextmanager
    def feed(self, tenant_id: str, execution_id: str | None = None) -> Iterator[Feed]:
        """Subscribe a stream client; subscribe *before* replaying from the table, so an
        event committed during the replay is in the buffer (duplicates are skipped by id)."""
        if self.db is None:
            raise RuntimeError("this EventHub has no database to fetch events from")
        made = Feed(tenant_id, execution_id, self.buffer)
        self._feeds.add(made)
        try:
            yield made
        finally:
            self._feeds.discard(made)

    def feeds(self) -> int:
        return len(self._feeds)

    def end_all(self) -> None:
        """The server is stopping: every stream ends now with a resync (its client resumes
        elsewhere by Last-Event-ID) and every long poll answers; otherwise they would hold
        their connections, and the stop, for as long as they last."""
        self.closing = True
        for feed in self._feeds:
            feed.drop()
        self._wake_all()

    def lagging(self) -> int:
        """Feeds that overflowed and wait for their client to take the resync."""
        return sum(feed.overflowed for feed in self._feeds)

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
