"""Storage of notification channels, the outbox of their deliveries (with every try) and
the dispatcher's cursor in ``execution_events`` (see sql/notifications.sql)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg.types.json import Jsonb

from opsconductor.db import audit, queries
from opsconductor.db.connection import Conn
from opsconductor.errors import BadInput
from opsconductor.notifications import (
    Channel,
    Delivery,
    DeliveryAttempt,
    DeliveryState,
    EventKind,
    rules_json,
)

Q = queries.load("notifications")
Row = dict[str, Any]


async def add_channel(
    conn: Conn,
    tenant_id: str,
    actor_id: str,
    *,
    name: str,
    kind: str,
    config: dict[str, Any],
    secret_ref: str | None,
    events: tuple[EventKind, ...],
) -> Channel:
    """Create it and its audit event in the caller's transaction."""
    cur = await conn.execute(
        Q["add_channel"],
        {
            "tenant_id": tenant_id,
            "name": name,
            "kind": kind,
            "config": Jsonb(config),
            "secret_ref": secret_ref,
            "events": [e.value for e in events],
            "actor_id": actor_id,
        },
    )
    row = await cur.fetchone()
    if row is None:
        raise BadInput(f"name: a notification channel {name!r} exists already (remove it first)")
    channel = Channel.from_row(row)
    await audit.record(
        conn,
        tenant_id,
        actor_id,
        "notification_channel_added",
        {
            "name": name,
            "kind": kind,
            "target": channel.target,
            "secret_ref": secret_ref,
            "events": [e.value for e in events],
        },
    )
    return channel


async def list_channels(conn: Conn, tenant_id: str) -> list[Channel]:
    cur = await conn.execute(Q["list_channels"], {"tenant_id": tenant_id})
    return [Channel.from_row(r) for r in await cur.fetchall()]


async def get_channel(conn: Conn, tenant_id: str, name: str) -> Channel | None:
    cur = await conn.execute(Q["get_channel"], {"tenant_id": tenant_id, "name": name})
    row = await cur.fetchone()
    return None if row is None else Channel.from_row(row)


async def remove_channel(conn: Conn, tenant_id: str, actor_id: str, name: str) -> bool:
    """Remove it (its deliveries go with it) and record who did."""
    cur = await conn.execute(Q["remove_channel"], {"tenant_id": tenant_id, "name": name})
    row = await cur.fetchone()
    if row is None:
        return False
    await audit.record(
        conn,
        tenant_id,
        actor_id,
        "notification_channel_removed",
        {"name": name, "kind": row["kind"]},
    )
    return True


@dataclass(frozen=True)
class CursorState:
    done_id: int
    horizon_id: int | None
    #: every transaction that drew an id up to ``horizon_id`` has ended
    settled: bool


async def lock_cursor(conn: Conn) -> CursorState | None:
    """The cursor, locked for this transaction; None when another dispatcher holds it."""
    cur = await conn.execute(Q["lock_cursor"])
    row = await cur.fetchone()
    if row is None:
        return None
    return CursorState(int(row["done_id"]), row["horizon_id"], bool(row["settled"]))


async def fill(conn: Conn, after: int) -> int:
    """Outbox rows for the subscribed events after ``after``; how many are new. Without
    any channel the events are not read at all (the cursor still moves)."""
    cur = await conn.execute(Q["any_channel"])
    row = await cur.fetchone()
    if row is None or not row["found"]:
        return 0
    cur = await conn.execute(Q["fill"], {"rules": Jsonb(rules_json()), "after": after})
    return cur.rowcount


async def move_cursor(conn: Conn, done_id: int) -> None:
    """Everything up to ``done_id`` is filled; the next horizon is the newest id drawn."""
    cur = await conn.execute(Q["last_drawn_event_id"])
    row = await cur.fetchone()
    horizon = int(row["id"]) if row else done_id
    await conn.execute(Q["move_cursor"], {"done_id": done_id, "horizon_id": horizon})


async def add_test_delivery(conn: Conn, channel: Channel, lease_s: float) -> int:
    """A test message, already claimed by the caller for ``lease_s``."""
    cur = await conn.execute(
        Q["add_test_delivery"],
        {"channel_id": channel.id, "tenant_id": channel.tenant_id, "lease_s": lease_s},
    )
    row = await cur.fetchone()
    assert row is not None  # INSERT ... RETURNING
    return int(row["id"])


async def claim_due(conn: Conn, *, limit: int, lease_s: float) -> list[int]:
    cur = await conn.execute(Q["claim_due"], {"limit": limit, "lease_s": lease_s})
    return [int(r["id"]) for r in await cur.fetchall()]


async def delivery_context(conn: Conn, delivery_id: int) -> Row | None:
    cur = await conn.execute(Q["delivery_context"], {"id": delivery_id})
    return await cur.fetchone()


async def record_attempt(
    conn: Conn,
    delivery_id: int,
    *,
    ok: bool,
    detail: str,
    backoff_s: float,
    max_attempts: int,
    final: bool = False,
) -> DeliveryState:
    """Log one try; delivered, failed for good (attempts spent, or ``final``), or pending
    again after ``backoff_s``."""
    cur = await conn.execute(
        Q["record_attempt"],
        {
            "id": delivery_id,
            "ok": ok,
            "detail": detail[:1000],
            "backoff_s": backoff_s,
            "max_attempts": max_attempts,
            "final": final,
        },
    )
    row = await cur.fetchone()
    return DeliveryState(row["state"]) if row else DeliveryState.FAILED


async def list_deliveries(
    conn: Conn, tenant_id: str, channel: str | None, limit: int
) -> list[Delivery]:
    cur = await conn.execute(
        Q["list_deliveries"], {"tenant_id": tenant_id, "channel": channel, "limit": limit}
    )
    return [Delivery.from_row(r) for r in await cur.fetchall()]


async def list_attempts(conn: Conn, delivery_ids: list[int]) -> list[DeliveryAttempt]:
    cur = await conn.execute(Q["list_attempts"], {"ids": delivery_ids})
    return [DeliveryAttempt.from_row(r) for r in await cur.fetchall()]
