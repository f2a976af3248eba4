"""Set-based batching: the same statement, called by many executions at about the same
moment, runs once for all of them.

A worker running many executions sends the same few statements for each (status change,
asset lock, step start and end). One by one, each costs a round trip, a plan execution and a
commit (a WAL flush) on both sides. The hot statements are therefore written set-based: they
read their input from one JSON array (``jsonb_to_recordset(%(items)s::jsonb)``), one row per
item, numbered by ``ord``, and answer rows tagged with the ``ord`` they belong to. (JSON, not
one array parameter per column: one C-speed ``json.dumps`` instead of a Python-level array
dumper per element.) A ``Batcher`` gathers the calls that arrive
while the previous batch of that statement is in flight and runs them as one statement.

Nothing is weakened: each caller still awaits the commit of the statement that carries its
item and gets its own rows. A batch the server refuses (one bad item) is run again one call
at a time, so a bad item fails only its caller. Called on a plain connection, the same
statement runs for one caller (inside that caller's transaction, if it has one).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import deque
from collections.abc import Callable, Hashable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from opsconductor.errors import DatabaseError

Row = dict[str, Any]
Item = Mapping[str, Any]

#: Calls per statement: large enough to amortise the round trip and the commit, small
#: enough to keep one statement (and the row locks it holds) short.
MAX_BATCH = 256
#: Batches of one statement in flight at once: while one commits, the next fills.
MAX_FLUSHES = 2


@dataclass
class _Call:
    items: Sequence[Item]
    key: Hashable | None
    done: asyncio.Future[list[Row]]


class Batcher:
    """``await batcher.run(query, items)``: run a set-based statement for ``items``, in one
    statement with the items of every other caller of the same query at that moment."""

    def __init__(
        self,
        connection: Callable[[], AbstractAsyncContextManager[Any]],
        *,
        max_batch: int = MAX_BATCH,
        max_flushes: int = MAX_FLUSHES,
    ) -> None:
        self.connection = connection
        self.max_batch = max_batch
        self.max_flushes = max_flushes
        self._waiting: dict[str, deque[_Call]] = {}
        self._flushers: dict[str, set[asyncio.Task[None]]] = {}

    async def run(
        self, query: str, items: Sequence[Item], *, key: Hashable | None = None
    ) -> list[Row]:
        """The rows answered for ``items``. Calls with the same ``key`` never share a
        statement (an execution's status must not be changed twice in one)."""
        if not items:
            return []
        call = _Call(items, key, asyncio.get_running_loop().create_future())
        self._waiting.setdefault(query, deque()).append(call)
        flushers = self._flushers.setdefault(query, set())
        if len(flushers) < self.max_flushes:
            # Starts on the next turn of the loop, so the callers of this turn join in.
            task = asyncio.create_task(self._flush(query))
            flushers.add(task)
            # Also here, for a task cancelled before it began (its finally never runs).
            task.add_done_callback(flushers.discard)
        return await call.done

    async def wait_idle(self) -> None:
        """Until every call handed in so far has been answered (before closing the pool)."""
        while busy := [t for tasks in self._flushers.values() for t in tasks]:
            await asyncio.gather(*busy, return_exceptions=True)

    async def _flush(self, query: str) -> None:
        try:
            while batch := self._take(query):
                await self._run(query, batch)
        finally:
            # Out of the count in the same step as its last (empty) take, not in a
            # done-callback a turn later: a call handed in between saw every flusher busy,
            # started none, and waited forever (a hung ``opsc run``).
            task = asyncio.current_task()
            assert task is not None
            self._flushers[query].discard(task)

    def _take(self, query: str) -> list[_Call]:
        waiting = self._waiting[query]
        batch: list[_Call] = []
        keys: set[Hashable] = set()
        while waiting and len(batch) < self.max_batch:
            call = waiting[0]
            if call.key is not None and call.key in keys:
                break  # the next batch takes it
            waiting.popleft()
            if not call.done.done():  # a cancelled caller's item is not sent at all
                batch.append(call)
                keys.add(call.key)
        return batch

    async def _run(self, query: str, batch: list[_Call]) -> None:
        try:
            async with self.connection() as conn:
                rows = await execute(conn, query, [call.items for call in batch])
        except DatabaseError as exc:
            if len(batch) > 1 and _refused(exc):
                await self._one_by_one(query, batch)
            else:
                _fail(batch, exc)
            return
        except BaseException as exc:  # never leave a caller waiting on a dead batch
            _fail(batch, DatabaseError(f"batched statement not run: {exc!r}"))
            raise
        for call, answered in zip(batch, split(rows, len(batch)), strict=True):
            _answer(call, answered)

    async def _one_by_one(self, query: str, batch: list[_Call]) -> None:
        for call in batch:
            try:
                async with self.connection() as conn:
                    rows = await execute(conn, query, [call.items])
            except DatabaseError as exc:
                _fail([call], exc)
            else:
                _answer(call, rows)


#: Where the hot statements run: a connection (one caller, maybe in a transaction) or the
#: ``Database.batch`` batcher (many callers, one statement).
Executor = psycopg.AsyncConnection[Row] | Batcher


async def run(
    executor: Executor, query: str, items: Sequence[Item], *, key: Hashable | None = None
) -> list[Row]:
    """Run the set-based ``query`` for ``items`` on either kind of executor."""
    if isinstance(executor, Batcher):
        return await executor.run(query, items, key=key)
    if not items:
        return []
    return await execute(executor, query, [items])


async def fetch(executor: Executor, query: str, params: Mapping[str, Any]) -> list[Row]:
    """A plain (not set-based) statement on either kind of executor: the batcher lends a
    pooled connection for it."""
    if isinstance(executor, Batcher):
        async with executor.connection() as conn:
            return await fetch(conn, query, params)
    cursor = await executor.execute(query, params)
    return await cursor.fetchall() if cursor.description is not None else []


async def execute(
    conn: psycopg.AsyncConnection[Row], query: str, calls: Sequence[Sequence[Item]]
) -> list[Row]:
    """One statement for every item of every call; call ``n`` (from 1) is ``ord = n``.
    Prepared at its first use on a connection: the hot statements run on every pooled
    connection, and unprepared each call sent, parsed and planned the whole text again."""
    cursor = await conn.execute(query, {"items": encode(calls)}, prepare=True)
    return await cursor.fetchall() if cursor.description is not None else []


def encode(calls: Sequence[Sequence[Item]]) -> str:
    """The statement's one parameter: every item as a JSON object, with its call's ``ord``."""
    return as_json([{**item, "ord": n} for n, items in enumerate(calls, start=1) for item in items])


def as_json(rows: Sequence[Item]) -> str:
    """Items as one JSON array (``jsonb_to_recordset``): one C-speed ``json.dumps``."""
    return json.dumps(rows, default=_plain, separators=(",", ":"))


def _plain(value: Any) -> Any:
    if type(value) is uuid.UUID:  # the most frequent (execution ids), checked first
        return str(value)
    if isinstance(value, Jsonb):
        return value.obj
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot send {type(value).__name__} in a batched statement")


def split(rows: list[Row], n: int) -> list[list[Row]]:
    """Rows by the call they answer (their ``ord``); rows without one answer nobody."""
    answers: list[list[Row]] = [[] for _ in range(n)]
    for row in rows:
        ord_ = row.get("ord")
        if ord_ is not None:
            answers[ord_ - 1].append(row)
    return answers


def _refused(exc: DatabaseError) -> bool:
    """The server refused the statement (the error has an SQLSTATE): nothing of it
    committed, so each call may run again alone. Without one (connection lost, maybe while
    committing) nobody knows what committed: the callers get the error, as they would alone."""
    cause = exc.__cause__
    return isinstance(cause, psycopg.Error) and cause.sqlstate is not None


def _answer(call: _Call, rows: list[Row]) -> None:
    if not call.done.done():
        call.done.set_result(rows)


def _fail(batch: list[_Call], exc: BaseException) -> None:
    for call in batch:
        if not call.done.done():
            call.done.set_exception(exc)
