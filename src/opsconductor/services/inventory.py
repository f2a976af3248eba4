"""The tenant's inventory (``assets:*``), its trusted SSH host keys and its settings."""

from __future__ import annotations

from typing import Any

import asyncssh

from opsconductor.db import assets, connectors
from opsconductor.db import workers as worker_rows
from opsconductor.db.connection import Database
from opsconductor.errors import BadInput, NotFound
from opsconductor.inventory import Asset
from opsconductor.services.caller import Caller

Row = dict[str, Any]


async def list_assets(db: Database, who: Caller) -> list[Asset]:
    who.require("assets", "view")
    async with db.connection() as conn:
        await assets.ensure_tenant(conn, who.tenant_id)
        return await assets.list_all(conn, who.tenant_id)


async def get_asset(db: Database, who: Caller, asset_id: str) -> Asset:
    who.require("assets", "view")
    async with db.connection() as conn:
        found = await assets.get(conn, who.tenant_id, asset_id)
    if found is None:
        raise NotFound(f"asset {asset_id!r} not found")
    return found


async def add_asset(db: Database, who: Caller, asset: Asset) -> Asset:
    who.require("assets", "manage")
    async with db.connection() as conn:
        await assets.ensure_tenant(conn, who.tenant_id)
        return await assets.add(conn, who.tenant_id, asset)


async def update_asset(db: Database, who: Caller, asset: Asset) -> Asset:
    who.require("assets", "manage")
    async with db.connection() as conn:
        updated = await assets.update(conn, who.tenant_id, asset)
    if updated is None:
        raise NotFound(f"asset {asset.asset_id!r} not found")
    return updated


async def import_assets(db: Database, who: Caller, found: list[Asset]) -> tuple[int, int]:
    """Add or update, all or nothing; (added, updated)."""
    who.require("assets", "manage")
    async with db.transaction() as conn:
        await assets.ensure_tenant(conn, who.tenant_id)
        new = [await assets.upsert(conn, who.tenant_id, a) for a in found]
    return sum(new), len(new) - sum(new)


async def remove_asset(db: Database, who: Caller, asset_id: str) -> None:
    who.require("assets", "manage")
    async with db.connection() as conn:
        if not await assets.delete(conn, who.tenant_id, asset_id):
            raise NotFound(f"asset {asset_id!r} not found")


# -- trusted host keys: who trusts a key decides where credentials are sent -----------------


async def known_hosts(db: Database, who: Caller) -> list[Row]:
    who.require("assets", "view")
    async with db.connection() as conn:
        return [dict(r) for r in await connectors.list_known_hosts(conn, who.tenant_id)]


def parse_host_key(public_key: str) -> str:
    """``type base64`` of an OpenSSH public key, or BadInput naming the field."""
    try:
        key = asyncssh.import_public_key(public_key)
    except (asyncssh.KeyImportError, ValueError, TypeError) as exc:
        raise BadInput(f"public_key: not an OpenSSH public key ({exc})") from None
    kind, blob = key.export_public_key("openssh").decode().split()[:2]
    return f"{kind} {blob}"


async def trust_host_key(db: Database, who: Caller, host: str, port: int, public_key: str) -> None:
    who.require("assets", "manage")
    public_key = parse_host_key(public_key)
    if not host.strip() or any(c.isspace() or c in ",[]" for c in host):
        raise BadInput(f"host: {host!r} is not a host name or address")
    async with db.connection() as conn:
        await assets.ensure_tenant(conn, who.tenant_id)
        await connectors.add_known_host(
            conn, who.tenant_id, host, port, " ".join(public_key.split()[:2]), who.actor_id
        )


async def forget_host(db: Database, who: Caller, host: str, port: int) -> int:
    who.require("assets", "manage")
    async with db.connection() as conn:
        removed = await connectors.remove_known_hosts(conn, who.tenant_id, host, port)
    if not removed:
        raise NotFound(f"no trusted key for {host}:{port}")
    return removed


# -- tenant settings (tenant admins: ``tenant:manage``) -------------------------------------


async def set_record_only(db: Database, who: Caller, on: bool) -> None:
    who.require("tenant", "manage")
    async with db.connection() as conn:
        await assets.ensure_tenant(conn, who.tenant_id)
        await connectors.set_record_only(conn, who.tenant_id, on)


async def set_host_key_policy(db: Database, who: Caller, policy: str) -> None:
    who.require("tenant", "manage")
    if policy not in connectors.HOST_KEY_POLICIES:
        raise BadInput(f"policy: must be one of {', '.join(connectors.HOST_KEY_POLICIES)}")
    async with db.connection() as conn:
        await assets.ensure_tenant(conn, who.tenant_id)
        await connectors.set_host_key_policy(conn, who.tenant_id, policy)


async def tenant_settings(db: Database, who: Caller) -> connectors.TenantSettings:
    who.require("assets", "view")
    async with db.connection() as conn:
        await assets.ensure_tenant(conn, who.tenant_id)
        return await connectors.tenant_settings(conn, who.tenant_id)


async def workers(db: Database, who: Caller) -> list[Row]:
    """Workers are shared by every tenant: any caller who may view executions sees them."""
    who.require("executions", "view")
    async with db.connection() as conn:
        return await worker_rows.listing(conn)
