"""Storage of per-tenant connector settings (record-only, host key policy) and of the
tenant's trusted SSH host keys."""

from __future__ import annotations

from dataclasses import dataclass

from opsconductor.db import queries
from opsconductor.db.connection import Conn, Database
from opsconductor.errors import NotFound

Q = queries.load("connectors")

HOST_KEY_POLICIES = ("strict", "accept-new")


@dataclass(frozen=True)
class TenantSettings:
    record_only: bool
    host_key_policy: str


async def tenant_settings(conn: Conn, tenant_id: str) -> TenantSettings:
    cur = await conn.execute(Q["tenant_settings"], {"tenant_id": tenant_id})
    row = await cur.fetchone()
    if row is None:
        raise NotFound(f"tenant {tenant_id!r} not found")
    return TenantSettings(bool(row["record_only"]), str(row["host_key_policy"]))


async def set_record_only(conn: Conn, tenant_id: str, on: bool) -> None:
    await conn.execute(Q["set_record_only"], {"tenant_id": tenant_id, "record_only": on})


async def set_host_key_policy(conn: Conn, tenant_id: str, policy: str) -> None:
    await conn.execute(Q["set_host_key_policy"], {"tenant_id": tenant_id, "policy": policy})


async def known_host_keys(conn: Conn, tenant_id: str, host: str, port: int) -> list[str]:
    cur = await conn.execute(
        Q["known_host_keys"], {"tenant_id": tenant_id, "host": host, "port": port}
    )
    return [row["public_key"] for row in await cur.fetchall()]


async def add_known_host(
    conn: Conn, tenant_id: str, host: str, port: int, public_key: str, added_by: str
) -> bool:
    """Trust ``public_key`` for host:port; False when it was trusted already."""
    cur = await conn.execute(
        Q["add_known_host"],
        {
            "tenant_id": tenant_id,
            "host": host,
            "port": port,
            "public_key": public_key,
            "added_by": added_by,
        },
    )
    return await cur.fetchone() is not None


async def list_known_hosts(conn: Conn, tenant_id: str) -> list[dict[str, object]]:
    cur = await conn.execute(Q["list_known_hosts"], {"tenant_id": tenant_id})
    return list(await cur.fetchall())


async def remove_known_hosts(conn: Conn, tenant_id: str, host: str, port: int) -> int:
    cur = await conn.execute(
        Q["remove_known_hosts"], {"tenant_id": tenant_id, "host": host, "port": port}
    )
    return len(await cur.fetchall())


class KnownHosts:
    """The tenant's known_hosts as the SSH connector sees it: look up, and (under the
    ``accept-new`` policy only) remember a first key."""

    def __init__(self, db: Database, tenant_id: str, policy: str, actor_id: str) -> None:
        self.db = db
        self.tenant_id = tenant_id
        self.accept_new = policy == "accept-new"
        self.actor_id = actor_id

    async def keys(self, host: str, port: int) -> list[str]:
        async with self.db.connection() as conn:
            return await known_host_keys(conn, self.tenant_id, host, port)

    async def remember(self, host: str, port: int, public_key: str) -> None:
        async with self.db.connection() as conn:
            await add_known_host(
                conn, self.tenant_id, host, port, public_key, f"accept-new:{self.actor_id}"
            )
