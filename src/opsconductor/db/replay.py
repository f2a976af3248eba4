"""Reads of the event streams: the replay of what a client missed, from its cursor."""

from __future__ import annotations

from typing import Any

from opsconductor.db import queries
from opsconductor.db.connection import Conn
from opsconductor.records import Event

Q = queries.load("streams")


async def events_after(
    conn: Conn, tenant_id: str, execution_id: str | None, after: int, limit: int
) -> list[Event]:
    """Events after ``after``, oldest first: of one execution, or of the whole tenant."""
    if execution_id is not None:
        params: dict[str, Any] = {"execution_id": execution_id, "after": after, "limit": limit}
        cur = await conn.execute(Q["replay_execution"], params)
    else:
        params = {"tenant_id": tenant_id, "after": after, "limit": limit}
        cur = await conn.execute(Q["replay_tenant"], params)
    return [Event.from_row(row) for row in await cur.fetchall()]


async def latest_event_id(conn: Conn, tenant_id: str) -> int:
    cur = await conn.execute(Q["latest_event_id"], {"tenant_id": tenant_id})
    return int((await cur.fetchone() or {"id": 0})["id"])
