"""The tenant's inventory (``assets:*``), its trusted SSH host keys and its settings."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opsconductor.config import load_settings
from opsconductor.connectors import tenant_files
from opsconductor.connectors.outcome import StepInputError
from opsconductor.db import assets, connectors
from opsconductor.db import workers as worker_rows
from opsconductor.db.connection import Database
from opsconductor.errors import BadInput, NotFound
from opsconductor.host_keys import HostKey
from opsconductor.inventory import Asset
from opsconductor.services.caller import Caller

if TYPE_CHECKING:  # YAML and the inventory parsers: imports only
    from opsconductor.inventory_ansible import Parsed
    from opsconductor.inventory_import import ImportPlan

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


async def import_assets(
    db: Database, who: Caller, parsed: Parsed, *, update: bool = False
) -> ImportPlan:
    """Add the new assets; replace the changed ones only with ``update`` (else they are
    reported, untouched). All or nothing. Key files become ``file:`` credentials when they
    are in the tenant's files root."""
    from opsconductor.inventory_import import plan_import

    who.require("assets", "manage")
    found, key_warnings = key_credentials(parsed, load_settings().files_root / who.tenant_id)
    async with db.transaction() as conn:
        await assets.ensure_tenant(conn, who.tenant_id)
        existing = {a.asset_id: a for a in await assets.list_all(conn, who.tenant_id)}
        plan = plan_import(existing, found)
        for asset in plan.new:
            await assets.add(conn, who.tenant_id, asset)
        if update:
            for asset, _ in plan.changed.values():
                await assets.update(conn, who.tenant_id, asset)
    return dataclasses.replace(plan, warnings=parsed.warnings + key_warnings + plan.warnings)


def key_credentials(parsed: Parsed, root: Path) -> tuple[list[Asset], list[str]]:
    """The assets, with ``credential_ref: file:NAME`` where their key file is readable in
    the tenant's files root ``root`` (named relative to it, or by a path that leads there);
    a warning for every other key file. Nothing is copied: a key file is a secret the
    operator places (``opsc files put``), not one an import spreads."""
    found, warnings = [], []
    for asset in parsed.assets:
        key = parsed.key_files.get(asset.asset_id)
        if key is None:
            found.append(asset)
            continue
        ref, problem = _key_ref(key, root)
        if problem is not None:
            warnings.append(f"{asset.asset_id}: key file {key}: {problem}")
        found.append(asset if ref is None else dataclasses.replace(asset, credential_ref=ref))
    return found, warnings


def _key_ref(key: str, root: Path) -> tuple[str | None, str | None]:
    expanded = os.path.expanduser(key)
    candidates = [expanded] if os.path.isabs(expanded) else [str(root / expanded), expanded]
    refused = None
    for candidate in candidates:
        if not os.path.lexists(candidate):
            continue
        try:
            inside = tenant_files.source(root, os.path.abspath(candidate), "key")
        except StepInputError as exc:
            refused = refused or str(exc)  # the first: the root's own (a link out of it)
            continue
        try:
            with inside.open("rb") as handle:
                handle.read(1)
        except OSError as exc:
            return None, f"unreadable ({exc.strerror}): not imported"
        return f"file:{inside.relative_to(os.path.realpath(root))}", None
    if refused is None:
        return None, "unreadable (No such file or directory): not imported"
    if candidates[0] != expanded and os.path.lexists(candidates[0]):
        return None, f"not imported: {refused.removeprefix('key: ')}"
    try:
        with open(expanded, "rb") as handle:
            handle.read(1)
    except OSError as exc:
        return None, f"unreadable ({exc.strerror}): not imported"
    return None, (
        f"outside this tenant's files root {root}: not imported; copy it in with "
        f"'opsc files put {key} NAME' and set credential_ref file:NAME (or re-import with "
        "the key file named NAME)"
    )


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


def parse_host_key(public_key: str) -> HostKey:
    """An OpenSSH public key, or BadInput naming the field."""
    try:
        return HostKey.parse(public_key)
    except BadInput as exc:
        raise BadInput(f"public_key: {exc}") from None


def _check_host(host: str) -> None:
    if not host.strip() or any(c.isspace() or c in ",[]" for c in host):
        raise BadInput(f"host: {host!r} is not a host name or address")


async def trust_host_key(
    db: Database, who: Caller, host: str, port: int, public_key: str, *, via: str = "key"
) -> connectors.Trusted:
    """A first key for host:port; HostKeyChanged (409) when a different one is stored."""
    who.require("assets", "manage")
    key = parse_host_key(public_key)
    _check_host(host)
    async with db.connection() as conn:
        await assets.ensure_tenant(conn, who.tenant_id)
        return await connectors.trust_host_key(
            conn, who.tenant_id, who.actor_id, host, port, key, via=via
        )


async def replace_host_key(
    db: Database,
    who: Caller,
    host: str,
    port: int,
    public_key: str,
    fingerprint: str,
    *,
    keep_other_types: bool = False,
    via: str = "key",
) -> connectors.Replaced:
    """Replace host:port's keys (a rotation): ``fingerprint`` is the one the caller verified
    out of band and must be ``public_key``'s; recorded as ``host_key_replaced``."""
    who.require("assets", "manage")
    key = parse_host_key(public_key)
    _check_host(host)
    async with db.connection() as conn:
        return await connectors.replace_host_key(
            conn,
            who.tenant_id,
            who.actor_id,
            host,
            port,
            key,
            stated_fingerprint=fingerprint,
            keep_other_types=keep_other_types,
            via=via,
        )


async def forget_host(db: Database, who: Caller, host: str, port: int) -> int:
    who.require("assets", "manage")
    async with db.connection() as conn:
        removed = await connectors.remove_host_keys(conn, who.tenant_id, who.actor_id, host, port)
    if not removed:
        raise NotFound(f"no trusted key for {host}:{port}")
    return len(removed)


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


async def set_local_execution(
    db: Database, who: Caller, tenant_id: str, *, on: bool, network: bool = False
) -> None:
    """Let a tenant's local steps run (sandboxed) on the control plane's host, or not: the
    installation's decision, never a tenant's (no API route leads here)."""
    who.require_installation_admin("local execution")
    async with db.transaction() as conn:
        await assets.ensure_tenant(conn, tenant_id)
        await connectors.set_local_execution(conn, tenant_id, who.actor_id, on=on, network=network)


async def bootstrap_local_execution(db: Database, who: Caller) -> bool:
    """The single-user embedded install: local execution on for the local administrator's
    tenant if nobody ever decided; True if it was turned on now."""
    who.require_installation_admin("local execution")
    async with db.transaction() as conn:
        return await connectors.bootstrap_local_execution(conn, who.tenant_id, who.actor_id)


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
