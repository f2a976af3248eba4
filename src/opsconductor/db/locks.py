"""Storage of per-asset lease locks (``execution_locks``): acquire, heartbeat, release, reap.

The policy (sorted order, bounded wait, heartbeat task) is in ``opsconductor.locking``.
"""

from __future__ import annotations

import uuid
from typing import Any

from opsconductor.db import batching, queries
from opsconductor.db.batching import Executor
from opsconductor.db.connection import Conn

Q = queries.load("locks")
Row = dict[str, Any]


async def try_acquire(
    conn: Executor,
    tenant_id: str,
    asset_id: str,
    *,
    owner_tag: str,
    execution_id: uuid.UUID | None,
    ttl_s: float,
) -> bool:
    """Take the lock if it is free, expired or already ours; never waits."""
    item = {
        "tenant_id": tenant_id,
        "asset_id": asset_id,
        "owner_tag": owner_tag,
        "execution_id": execution_id,
        "ttl_s": ttl_s,
    }
    return bool(await batching.run(conn, Q["try_acquire"], [item]))


async def holder(conn: Conn, tenant_id: str, asset_id: str) -> Row | None:
    cur = await conn.execute(Q["holder"], {"tenant_id": tenant_id, "asset_id": asset_id})
    return await cur.fetchone()


async def heartbeat(
    conn: Conn, tenant_id: str, asset_ids: list[str], *, owner_tag: str, ttl_s: float
) -> set[str]:
    """Extend our leases; returns the assets still ours (a missing one was lost)."""
    cur = await conn.execute(
        Q["heartbeat"],
        {"tenant_id": tenant_id, "asset_ids": asset_ids, "owner_tag": owner_tag, "ttl_s": ttl_s},
    )
    return {row["asset_id"] for row in await cur.fetchall()}


async def release(conn: Executor, tenant_id: str, asset_ids: list[str], *, owner_tag: str) -> None:
    items = [{"tenant_id": tenant_id, "asset_id": a, "owner_tag": owner_tag} for a in asset_ids]
    await batching.run(conn, Q["release"], items)


async def reap_expired(conn: Conn) -> list[Row]:
    """Delete the locks whose lease ran out (hung or cut-off holders) or whose worker was
    declared dead; returns what was reaped (``holder_died``: the second kind)."""
    cur = await conn.execute(Q["reap_expired"])
    return await cur.fetchall()


async def list_for(conn: Conn, tenant_id: str) -> list[Row]:
    cur = await conn.execute(Q["list_locks"], {"tenant_id": tenant_id})
    return await cur.fetchall()
