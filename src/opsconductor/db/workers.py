"""The worker registry: who runs, where, how busy, last heartbeat; and each worker's life
signal, a session-level advisory lock its own connection holds while the process lives."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from opsconductor.db import queries
from opsconductor.db.connection import Conn
from opsconductor.errors import DatabaseError

Q = queries.load("workers")
Row = dict[str, Any]

#: A worker beats this often...
HEARTBEAT_S = 5.0
#: ...and counts as dead (stale) after missing this many seconds of beats.
STALE_S = 3 * HEARTBEAT_S
#: classid of the life locks (objid: the worker's lock_key); any constant, same everywhere
LIFE_CLASS = 5118


@dataclass(frozen=True)
class Identity:
    worker_id: str
    host: str
    pid: int
    concurrency: int

    @classmethod
    def here(cls, worker_id: str, concurrency: int) -> Identity:
        return cls(worker_id, socket.gethostname(), os.getpid(), concurrency)


async def register(conn: Conn, me: Identity) -> int:
    """Add (or revive) the worker's row; returns its life lock key."""
    cur = await conn.execute(Q["register"], me.__dict__)
    row = await cur.fetchone()
    assert row is not None
    return int(row["lock_key"])


@dataclass
class Life:
    """A held life lock, on the connection that also LISTENs for queue wake-ups."""

    conn: psycopg.AsyncConnection[dict[str, Any]]
    #: a reaper declared this worker dead while its lock was free (its work was taken back)
    declared_dead: bool
    since: float = field(default_factory=time.monotonic)

    async def notifications(self) -> AsyncIterator[str]:
        """Wake-up payloads until the connection (and with it the lock) is lost."""
        try:
            async for notify in self.conn.notifies():
                yield notify.payload
        except psycopg.Error as exc:
            raise DatabaseError(f"lost the worker's session: {exc}") from exc


@asynccontextmanager
async def life(
    url: str, worker_id: str, channel: str, *, take_within_s: float = 15.0
) -> AsyncIterator[Life]:
    """Connect, take the worker's life lock and LISTEN on ``channel``. Every wait is bounded:
    the connect (5 s), each statement (5 s), and taking the lock (``take_within_s``: after
    a cut-off the server may take a moment to end the old session that still holds it)."""
    try:
        async with await psycopg.AsyncConnection.connect(
            url, autocommit=True, connect_timeout=5, row_factory=dict_row
        ) as conn:
            await conn.execute(Q["session_settings"])
            until = time.monotonic() + take_within_s
            while True:
                cur = await conn.execute(
                    Q["take_life_lock"], {"life_class": LIFE_CLASS, "worker_id": worker_id}
                )
                row = await cur.fetchone()
                if row is None:
                    raise DatabaseError(f"worker {worker_id} is not registered")
                if row["got"]:
                    break
                if time.monotonic() > until:
                    raise DatabaseError(f"the life lock of worker {worker_id} stays taken")
                await asyncio.sleep(0.05)
            await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
            yield Life(conn, declared_dead=row["died_at"] is not None)
    except psycopg.Error as exc:
        raise DatabaseError(f"lost the worker's session: {exc}") from exc


@dataclass(frozen=True)
class Watch:
    """One reaper round's look at the workers."""

    #: this caller is the round's reaper (the others look no further)
    got: bool
    #: workers whose life lock was free two rounds running: dead
    dead: list[str]
    #: expired leases or locks, or leases of workers declared dead, wait for a sweep
    sweep_due: bool


async def watch(conn: Conn, reaper_key: int, confirm_s: float) -> Watch:
    cur = await conn.execute(
        Q["watch"],
        {"reaper_key": reaper_key, "life_class": LIFE_CLASS, "confirm_s": confirm_s},
    )
    row = await cur.fetchone()
    assert row is not None
    return Watch(bool(row["got"]), list(row["dead"] or []), bool(row["sweep_due"]))


async def declare_dead(conn: Conn, worker_ids: list[str]) -> list[Row]:
    """Inside the reaper's transaction: mark those whose life lock is still free dead."""
    if not worker_ids:
        return []
    cur = await conn.execute(
        Q["declare_dead"], {"worker_ids": worker_ids, "life_class": LIFE_CLASS}
    )
    return await cur.fetchall()


async def heartbeat(conn: Conn, worker_id: str, in_flight: int) -> None:
    await conn.execute(Q["heartbeat"], {"worker_id": worker_id, "in_flight": in_flight})


async def stopped(conn: Conn, worker_id: str) -> None:
    await conn.execute(Q["stopped"], {"worker_id": worker_id})


async def listing(conn: Conn, stale_s: float = STALE_S) -> list[Row]:
    """Running and recently stopped workers, each with ``state`` alive/stale/stopped."""
    cur = await conn.execute(Q["list_workers"], {"stale_s": stale_s})
    return await cur.fetchall()


#: Default of how long a worker's row stays after its last beat (Settings.worker_retention_s).
RETENTION_S = 86400.0


async def prune(conn: Conn, retention_s: float = RETENTION_S) -> int:
    """Delete the rows of workers silent for longer than ``retention_s``; how many went.
    Never less than the stale threshold: a live worker's row is never pruned."""
    cur = await conn.execute(Q["prune_workers"], {"retention_s": max(retention_s, STALE_S)})
    return cur.rowcount
