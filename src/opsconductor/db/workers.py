"""The worker registry: who runs, where, how busy, last heartbeat."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any

from opsconductor.db import queries
from opsconductor.db.connection import Conn

Q = queries.load("workers")
Row = dict[str, Any]

#: A worker beats this often...
HEARTBEAT_S = 5.0
#: ...and counts as dead (stale) after missing this many seconds of beats.
STALE_S = 3 * HEARTBEAT_S


@dataclass(frozen=True)
class Identity:
    worker_id: str
    host: str
    pid: int
    concurrency: int

    @classmethod
    def here(cls, worker_id: str, concurrency: int) -> Identity:
        return cls(worker_id, socket.gethostname(), os.getpid(), concurrency)


async def register(conn: Conn, me: Identity) -> None:
    await conn.execute(Q["register"], me.__dict__)


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
