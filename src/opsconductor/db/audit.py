"""Storage of the tenant-level audit trail (``audit_events``): administrative actions that
belong to no execution. Append-only; the table refuses UPDATE and DELETE."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from psycopg.types.json import Jsonb

from opsconductor.db import queries
from opsconductor.db.connection import Conn

Q = queries.load("audit")
Row = dict[str, Any]


async def record(
    conn: Conn, tenant_id: str, actor_id: str, event_type: str, payload: Mapping[str, Any]
) -> Row:
    """Append one event; run it in the transaction of the change it records, so there is
    never a change without its event (or an event for a change that rolled back)."""
    cur = await conn.execute(
        Q["record"],
        {
            "tenant_id": tenant_id,
            "actor_id": actor_id,
            "event_type": event_type,
            "payload": Jsonb(dict(payload)),
        },
    )
    row = await cur.fetchone()
    assert row is not None  # INSERT ... RETURNING always returns the row
    return row


async def list_events(
    conn: Conn, tenant_id: str, event_type: str | None = None, limit: int = 100
) -> list[Row]:
    """The newest events first."""
    cur = await conn.execute(
        Q["list_events"], {"tenant_id": tenant_id, "event_type": event_type, "limit": limit}
    )
    return list(await cur.fetchall())
