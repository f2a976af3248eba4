"""Storage of inbound webhooks and of every delivery made to them."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from psycopg.types.json import Jsonb

from opsconductor.db import queries
from opsconductor.db.connection import Conn
from opsconductor.db.secrets import Sealed
from opsconductor.hooks import Delivery, Hook

Q = queries.load("hooks")


async def insert(
    conn: Conn,
    hook_id: str,
    tenant_id: str,
    job_name: str,
    job_version: int | None,
    secret_path: str,
    mapping: dict[str, str],
    params: dict[str, Any],
    actor_id: str,
) -> Hook:
    cur = await conn.execute(
        Q["insert_hook"],
        {
            "id": hook_id,
            "tenant_id": tenant_id,
            "job_name": job_name,
            "job_version": job_version,
            "secret_path": secret_path,
            "mapping": Jsonb(mapping),
            "params": Jsonb(params),
            "actor_id": actor_id,
        },
    )
    row = await cur.fetchone()
    assert row is not None
    return Hook.from_row(row)


async def get(conn: Conn, hook_id: str) -> tuple[Hook, Sealed | None] | None:
    """The hook and its sealed signing secret (None once it is gone)."""
    cur = await conn.execute(Q["get_hook"], {"id": hook_id})
    row = await cur.fetchone()
    if row is None:
        return None
    sealed = None
    if row["sealed_key_id"] is not None:
        sealed = Sealed(
            row["sealed_key_id"], bytes(row["sealed_nonce"]), bytes(row["sealed_ciphertext"])
        )
    return Hook.from_row(row), sealed


async def list_all(conn: Conn, tenant_id: str, job_name: str | None) -> list[Hook]:
    cur = await conn.execute(Q["list_hooks"], {"tenant_id": tenant_id, "job_name": job_name})
    return [Hook.from_row(r) for r in await cur.fetchall()]


async def delete(conn: Conn, tenant_id: str, hook_id: str) -> str | None:
    """The deleted hook's secret path; None if there was no such hook."""
    cur = await conn.execute(Q["delete_hook"], {"tenant_id": tenant_id, "id": hook_id})
    row = await cur.fetchone()
    return None if row is None else str(row["secret_path"])


async def seen(conn: Conn, hook_id: str, signature: str, delivery_id: str | None) -> bool:
    cur = await conn.execute(
        Q["seen"], {"hook_id": hook_id, "signature": signature, "delivery_id": delivery_id}
    )
    return await cur.fetchone() is not None


@dataclass(frozen=True)
class NewDelivery:
    hook_id: str
    tenant_id: str
    accepted: bool
    status_code: int
    reason: str | None = None
    signature: str | None = None
    delivery_id: str | None = None
    body_sha256: str | None = None
    execution_id: uuid.UUID | None = None


async def record(conn: Conn, new: NewDelivery) -> int | None:
    """The delivery's id; None for an accepted one that is a replay (nothing stored)."""
    cur = await conn.execute(Q["insert_delivery"], vars(new))
    row = await cur.fetchone()
    return None if row is None else int(row["id"])


@dataclass(frozen=True)
class Refusal:
    """A refused delivery to the hook of this id (its tenant is read with the insert)."""

    hook_id: str
    status_code: int
    reason: str
    signature: str | None
    delivery_id: str | None
    body_sha256: str


async def record_refusal(conn: Conn, refused: Refusal, cap: int) -> bool:
    """Record a refused delivery unless the hook has ``cap`` refusals of the last minute
    already (or no longer exists); whether it was recorded."""
    cur = await conn.execute(Q["insert_refusal"], {**vars(refused), "cap": cap})
    return await cur.fetchone() is not None


async def set_execution(conn: Conn, delivery: int, execution_id: uuid.UUID) -> None:
    await conn.execute(Q["set_delivery_execution"], {"id": delivery, "execution_id": execution_id})


async def deliveries(conn: Conn, tenant_id: str, hook_id: str, limit: int) -> list[Delivery]:
    cur = await conn.execute(
        Q["deliveries"], {"tenant_id": tenant_id, "hook_id": hook_id, "limit": limit}
    )
    return [Delivery.from_row(r) for r in await cur.fetchall()]
