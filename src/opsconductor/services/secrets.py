"""The built-in secret store (write-only) and the tenant's masking patterns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from opsconductor import masking, secret_store
from opsconductor.db import assets
from opsconductor.db import secrets as secret_rows
from opsconductor.db.connection import Database
from opsconductor.errors import NotFound
from opsconductor.services.caller import Caller

Row = dict[str, Any]


async def put(db: Database, who: Caller, home: Path, path: str, value: str) -> bool:
    """Seal ``value`` under ``path``; True if new. The value never comes back out."""
    who.require("secrets", "manage")
    async with db.connection() as conn:
        await assets.ensure_tenant(conn, who.tenant_id)
    return await secret_store.put(db, home, who.tenant_id, path, value, who.actor_id)


async def list_paths(db: Database, who: Caller) -> list[Row]:
    who.require("secrets", "manage")
    async with db.connection() as conn:
        return await secret_rows.list_all(conn, who.tenant_id)


async def delete(db: Database, who: Caller, path: str) -> None:
    who.require("secrets", "manage")
    if not await secret_store.delete(db, who.tenant_id, path):
        raise NotFound(f"secret {path!r} not found")


async def rotate_key(db: Database, who: Caller, home: Path) -> int:
    """Re-seal every tenant's secrets under a new master key: the installation's key."""
    who.require_installation_admin("rotating the master key")
    return await secret_store.rotate_key(db, home)


async def add_pattern(db: Database, who: Caller, name: str, pattern: str) -> None:
    who.require("secrets", "manage")
    masking.validate_pattern(pattern)
    async with db.connection() as conn:
        await assets.ensure_tenant(conn, who.tenant_id)
        await secret_rows.put_pattern(conn, who.tenant_id, name, pattern, who.actor_id)


async def patterns(db: Database, who: Caller) -> list[Row]:
    who.require("secrets", "manage")
    async with db.connection() as conn:
        return await secret_rows.patterns(conn, who.tenant_id)


async def remove_pattern(db: Database, who: Caller, name: str) -> None:
    who.require("secrets", "manage")
    async with db.connection() as conn:
        if not await secret_rows.delete_pattern(conn, who.tenant_id, name):
            raise NotFound(f"masking pattern {name!r} not found")
