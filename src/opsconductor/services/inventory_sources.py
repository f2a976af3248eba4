"""A tenant's dynamic inventory sources: add, list, remove (tenant admins: ``tenant:manage``;
adding and removing are audited), sync on demand (with a dry run) and on their schedule.

A sync reads the source first (an ``ansible-inventory`` run, or the NetBox API with the
token resolved from the secret store just for the read), then, in one transaction under
the source's lock, compares with the stored assets and applies (inventory_sources.py).
"""

from __future__ import annotations

from pathlib import Path

import structlog

from opsconductor.config import load_settings
from opsconductor.connectors import tenant_files
from opsconductor.connectors.outcome import StepInputError
from opsconductor.db import assets, audit
from opsconductor.db import inventory_sources as rows
from opsconductor.db.connection import Database
from opsconductor.errors import BadInput, NotFound, OpsError, SecretError, SourceError
from opsconductor.inventory import Asset
from opsconductor.inventory_sources import (
    InventorySource,
    SourceKind,
    SyncPlan,
    SyncResult,
    check_name,
    check_url,
    parse_every,
    plan_sync,
)
from opsconductor.services.caller import Caller

log = structlog.get_logger("opsconductor.inventory_sources")
_MAX_ERROR = 2000


async def add_source(
    db: Database,
    who: Caller,
    *,
    name: str,
    kind: str,
    environment: str = "dev",
    path: str | None = None,
    url: str | None = None,
    token_ref: str | None = None,
    every: str | None = None,
) -> InventorySource:
    who.require("tenant", "manage")
    check_name(name)
    try:
        source_kind = SourceKind(kind)
    except ValueError:
        raise BadInput("kind: must be 'ansible' or 'netbox'") from None
    if source_kind is SourceKind.ANSIBLE:
        if not path or url or token_ref:
            raise BadInput("path: an ansible source needs --path (and no --url or --token-ref)")
        _inventory_path(who.tenant_id, path, BadInput)
    else:
        if not url or path:
            raise BadInput("url: a netbox source needs --url (and no --path)")
        url = check_url(url)
        if token_ref is not None and (
            not token_ref.strip() or any(c.isspace() for c in token_ref) or len(token_ref) > 255
        ):
            raise BadInput("token_ref: the path of a secret (opsc secrets set PATH), not a token")
    if not environment or len(environment) > 63:
        raise BadInput("environment: 1-63 characters")
    every_s = None if every is None else parse_every(every)
    async with db.transaction() as conn:
        await assets.ensure_tenant(conn, who.tenant_id)
        return await rows.add(
            conn,
            who.tenant_id,
            who.actor_id,
            name=name,
            kind=source_kind,
            environment=environment,
            path=path,
            url=url,
            token_ref=token_ref,
            every_s=every_s,
        )


async def list_sources(db: Database, who: Caller) -> list[InventorySource]:
    who.require("tenant", "manage")
    async with db.connection() as conn:
        return await rows.list_all(conn, who.tenant_id)


async def remove_source(db: Database, who: Caller, name: str) -> None:
    """The source goes; its assets stay (owned by nobody: no sync removes them now)."""
    who.require("tenant", "manage")
    async with db.transaction() as conn:
        if not await rows.remove(conn, who.tenant_id, who.actor_id, name):
            raise NotFound(f"inventory source {name!r} not found")


async def sync(db: Database, who: Caller, name: str, *, dry_run: bool = False) -> SyncPlan:
    """What the source changes in the inventory; applied unless ``dry_run``."""
    who.require("tenant", "manage")
    async with db.connection() as conn:
        source = await rows.get(conn, who.tenant_id, name)
    if source is None:
        raise NotFound(f"inventory source {name!r} not found")
    return await _sync(db, source, who.actor_id, dry_run=dry_run)


async def run_due(db: Database, actor_id: str, *, at_most: int = 10) -> int:
    """The installation's scheduled syncs (a worker's, no tenant's caller): claim due
    sources one by one and sync each; a failure is recorded on its source. How many ran."""
    done = 0
    while done < at_most:
        async with db.connection() as conn:
            source = await rows.claim_due(conn)
        if source is None:
            break
        done += 1
        try:
            await _sync(db, source, actor_id, dry_run=False)
        except OpsError as exc:
            log.warning(
                "inventory sync failed",
                tenant_id=source.tenant_id,
                source=source.name,
                error=str(exc)[:_MAX_ERROR],
            )
    return done


async def _sync(db: Database, source: InventorySource, actor_id: str, *, dry_run: bool) -> SyncPlan:
    try:
        found, warnings = await _read(db, source)
        async with db.transaction() as conn:
            await rows.lock(conn, source.tenant_id, source.name)
            existing = await rows.assets_with_owner(conn, source.tenant_id)
            plan = plan_sync(source.name, source.kind, existing, found, warnings)
            if not dry_run:
                await rows.apply(conn, source.tenant_id, source.name, plan)
                await rows.record_result(
                    conn, source.tenant_id, source.name, SyncResult.OK, None, plan.counts()
                )
                await audit.record(
                    conn,
                    source.tenant_id,
                    actor_id,
                    "inventory_synced",
                    {
                        "name": source.name,
                        **plan.counts(),
                        "added_ids": [a.asset_id for a in plan.added][:1000],
                        "changed_ids": sorted(plan.changed)[:1000],
                        "removed_ids": [a.asset_id for a in plan.removed][:1000],
                    },
                )
        return plan
    except (SourceError, SecretError, BadInput, OSError) as exc:
        if not dry_run:
            async with db.connection() as conn:
                await rows.record_result(
                    conn, source.tenant_id, source.name, SyncResult.FAILED, str(exc)[:_MAX_ERROR]
                )
        if isinstance(exc, SourceError):
            raise
        raise SourceError(f"inventory source {source.name!r}: {exc}") from None


async def _read(db: Database, source: InventorySource) -> tuple[list[Asset], list[str]]:
    """The assets the source lists now, and the warnings of their mapping."""
    if source.kind is SourceKind.ANSIBLE:
        from opsconductor.connectors import ansible_inventory
        from opsconductor.connectors.access import TenantAccess
        from opsconductor.db import connectors
        from opsconductor.inventory_ansible_list import read_list
        from opsconductor.services.inventory import key_credentials

        assert source.path is not None  # the table's check
        settings = load_settings()
        root = settings.files_root / source.tenant_id
        path = _inventory_path(source.tenant_id, source.path, SourceError)
        async with db.connection() as conn:
            tenant = await connectors.tenant_settings(conn, source.tenant_id)
        access = TenantAccess.of(settings, source.tenant_id, tenant)
        text = await ansible_inventory.list_inventory(
            path, root, access, plugins=settings.inventory_plugins
        )
        parsed = read_list(text, source.environment, source.name)
        found, key_warnings = key_credentials(parsed, root)
        return found, parsed.warnings + key_warnings
    from opsconductor.connectors import netbox
    from opsconductor.inventory_netbox import to_assets
    from opsconductor.secret_store import SecretResolver

    assert source.url is not None  # the table's check
    token = None
    if source.token_ref is not None:
        resolver = SecretResolver(db, load_settings().home)
        token = (await resolver.resolve(source.tenant_id, source.token_ref)).value
    listed = await netbox.list_objects(source.url, token)
    return to_assets(listed, source.environment)


def _inventory_path(tenant_id: str, path: str, error: type[BadInput] | type[SourceError]) -> Path:
    """``path`` confined to the tenant's files root (a file or a directory there)."""
    root = load_settings().files_root / tenant_id
    try:
        found = tenant_files.source(root, path, "path")
    except StepInputError as exc:
        raise error(str(exc)) from None
    if not found.exists():
        raise error(f"path: {path!r} does not exist in this tenant's files root {root}")
    return found
