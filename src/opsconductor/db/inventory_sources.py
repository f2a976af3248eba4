"""Storage of a tenant's dynamic inventory sources, their schedule, and the assets they own."""

from __future__ import annotations

from collections.abc import Mapping

import psycopg
from psycopg.types.json import Jsonb

from opsconductor.db import assets, audit, queries
from opsconductor.db.connection import Conn
from opsconductor.errors import BadInput
from opsconductor.inventory import Asset
from opsconductor.inventory_sources import InventorySource, SourceKind, SyncPlan, SyncResult

Q = queries.load("inventory_sources")


async def add(
    conn: Conn,
    tenant_id: str,
    actor_id: str,
    *,
    name: str,
    kind: SourceKind,
    environment: str,
    path: str | None = None,
    url: str | None = None,
    token_ref: str | None = None,
    every_s: int | None = None,
) -> InventorySource:
    """The new source, and its ``inventory_source_added`` audit event (the token's
    reference is recorded, never a token). Run it in a transaction."""
    params = {
        "tenant_id": tenant_id,
        "name": name,
        "kind": kind.value,
        "path": path,
        "url": url,
        "token_ref": token_ref,
        "environment": environment,
        "every_s": every_s,
        "actor_id": actor_id,
    }
    try:
        cur = await conn.execute(Q["insert_source"], params)
    except psycopg.errors.UniqueViolation:
        raise BadInput(f"name: inventory source {name!r} already exists") from None
    row = await cur.fetchone()
    assert row is not None  # INSERT ... RETURNING
    found = InventorySource.from_row(row)
    payload = {k: v for k, v in params.items() if k not in ("tenant_id", "actor_id")}
    await audit.record(conn, tenant_id, actor_id, "inventory_source_added", payload)
    return found


async def list_all(conn: Conn, tenant_id: str) -> list[InventorySource]:
    cur = await conn.execute(Q["list_sources"], {"tenant_id": tenant_id})
    return [InventorySource.from_row(row) for row in await cur.fetchall()]


async def get(conn: Conn, tenant_id: str, name: str) -> InventorySource | None:
    cur = await conn.execute(Q["get_source"], {"tenant_id": tenant_id, "name": name})
    row = await cur.fetchone()
    return None if row is None else InventorySource.from_row(row)


async def remove(conn: Conn, tenant_id: str, actor_id: str, name: str) -> bool:
    """Remove a source (its assets stay, owned by nobody); audited. In a transaction."""
    cur = await conn.execute(Q["delete_source"], {"tenant_id": tenant_id, "name": name})
    row = await cur.fetchone()
    if row is None:
        return False
    await audit.record(
        conn, tenant_id, actor_id, "inventory_source_removed", {"name": name, "kind": row["kind"]}
    )
    return True


async def claim_due(conn: Conn) -> InventorySource | None:
    """A source whose scheduled sync is due, its next time already moved on; None if none."""
    cur = await conn.execute(Q["claim_due"])
    row = await cur.fetchone()
    return None if row is None else InventorySource.from_row(row)


async def record_result(
    conn: Conn,
    tenant_id: str,
    name: str,
    result: SyncResult,
    error: str | None = None,
    counts: Mapping[str, int] | None = None,
) -> None:
    await conn.execute(
        Q["record_result"],
        {
            "tenant_id": tenant_id,
            "name": name,
            "result": result.value,
            "error": error,
            "counts": None if counts is None else Jsonb(dict(counts)),
        },
    )


async def lock(conn: Conn, tenant_id: str, name: str) -> None:
    await conn.execute(Q["lock_source"], {"tenant_id": tenant_id, "name": name})


async def assets_with_owner(conn: Conn, tenant_id: str) -> dict[str, tuple[Asset, str | None]]:
    """Every asset of the tenant with the source that owns it (None: nobody)."""
    cur = await conn.execute(Q["owned_assets"], {"tenant_id": tenant_id})
    return {
        row["asset_id"]: (Asset.from_row(row), row["inventory_source"])
        for row in await cur.fetchall()
    }


async def apply(conn: Conn, tenant_id: str, name: str, plan: SyncPlan) -> None:
    """Remove, change and add as ``plan`` says; the added ones become the source's own.
    Run it in the transaction that holds the source's lock and computed the plan."""
    gone = [a.asset_id for a in plan.removed]
    if gone:
        await conn.execute(
            Q["delete_owned"], {"tenant_id": tenant_id, "name": name, "asset_ids": gone}
        )
    for asset, _ in plan.changed.values():
        await assets.update(conn, tenant_id, asset)
    for asset in plan.added:
        await assets.add(conn, tenant_id, asset)
    if plan.added:
        ids = [a.asset_id for a in plan.added]
        await conn.execute(Q["set_owner"], {"tenant_id": tenant_id, "name": name, "asset_ids": ids})
