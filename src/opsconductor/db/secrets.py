"""Storage of sealed secrets and tenant masking patterns. Values never pass through here
in clear: callers hand over ciphertext (see ``opsconductor.secret_store``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from opsconductor.db import queries
from opsconductor.db.connection import Conn
from opsconductor.errors import BadInput

Q = queries.load("secrets")
Row = dict[str, Any]


@dataclass(frozen=True)
class Sealed:
    """A secret's row as stored: opened by ``secret_store.StoreBackend.open``."""

    key_id: str
    nonce: bytes
    ciphertext: bytes


async def put(
    conn: Conn,
    tenant_id: str,
    path: str,
    *,
    key_id: str,
    nonce: bytes,
    ciphertext: bytes,
    actor_id: str,
) -> bool:
    """Insert or replace; True if the path is new."""
    try:
        cur = await conn.execute(
            Q["put_secret"],
            {
                "tenant_id": tenant_id,
                "path": path,
                "key_id": key_id,
                "nonce": nonce,
                "ciphertext": ciphertext,
                "actor_id": actor_id,
            },
        )
    except psycopg.errors.CheckViolation:
        raise BadInput(
            f"secret path {path!r}: use letters, digits and . _ @ / - (max 255), "
            "starting with a letter or digit"
        ) from None
    row = await cur.fetchone()
    return bool(row and row["created"])


async def get(conn: Conn, tenant_id: str, path: str) -> Row | None:
    cur = await conn.execute(Q["get_secret"], {"tenant_id": tenant_id, "path": path})
    return await cur.fetchone()


async def list_all(conn: Conn, tenant_id: str) -> list[Row]:
    cur = await conn.execute(Q["list_secrets"], {"tenant_id": tenant_id})
    return await cur.fetchall()


async def delete(conn: Conn, tenant_id: str, path: str) -> bool:
    cur = await conn.execute(Q["delete_secret"], {"tenant_id": tenant_id, "path": path})
    return await cur.fetchone() is not None


async def lock_all(conn: Conn) -> list[Row]:
    """Every sealed row of every tenant, locked until the caller's transaction ends."""
    cur = await conn.execute(Q["lock_all_secrets"])
    return await cur.fetchall()


async def reseal(
    conn: Conn, tenant_id: str, path: str, *, key_id: str, nonce: bytes, ciphertext: bytes
) -> None:
    await conn.execute(
        Q["reseal_secret"],
        {
            "tenant_id": tenant_id,
            "path": path,
            "key_id": key_id,
            "nonce": nonce,
            "ciphertext": ciphertext,
        },
    )


async def put_pattern(conn: Conn, tenant_id: str, name: str, pattern: str, actor_id: str) -> None:
    try:
        await conn.execute(
            Q["put_pattern"],
            {"tenant_id": tenant_id, "name": name, "pattern": pattern, "actor_id": actor_id},
        )
    except psycopg.errors.CheckViolation:
        raise BadInput(
            f"pattern name {name!r}: use 1-63 lower-case letters, digits, - or _"
        ) from None


async def patterns(conn: Conn, tenant_id: str) -> list[Row]:
    cur = await conn.execute(Q["list_patterns"], {"tenant_id": tenant_id})
    return await cur.fetchall()


async def delete_pattern(conn: Conn, tenant_id: str, name: str) -> bool:
    cur = await conn.execute(Q["delete_pattern"], {"tenant_id": tenant_id, "name": name})
    return await cur.fetchone() is not None
