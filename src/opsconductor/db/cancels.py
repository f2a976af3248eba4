"""Storage of cancel requests and of the engine's cancel checks."""

from __future__ import annotations

import uuid
from typing import Any

from opsconductor.db import batching, queries
from opsconductor.db.batching import Executor
from opsconductor.db.connection import Conn

Q = queries.load("cancel")
Row = dict[str, Any]


async def request(conn: Conn, execution_id: uuid.UUID, actor_id: str) -> Row | None:
    """Record a request on a running execution; None if it is not running or already asked."""
    cur = await conn.execute(Q["request_cancel"], {"id": execution_id, "actor_id": actor_id})
    return await cur.fetchone()


async def check(conn: Executor, execution_id: uuid.UUID) -> Row | None:
    """One cancel check: counted in ``cancel_checks_performed``; returns who asked, if anyone."""
    rows = await batching.run(conn, Q["check_cancel"], [{"id": execution_id}], key=execution_id)
    return rows[0] if rows else None


async def drop_from_queue(conn: Conn, execution_id: uuid.UUID) -> None:
    await conn.execute(Q["drop_from_queue"], {"id": execution_id})
