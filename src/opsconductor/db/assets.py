"""Storage of the inventory."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.types.json import Jsonb

from opsconductor.db import queries
from opsconductor.db.connection import Conn, Database
from opsconductor.errors import BadInput
from opsconductor.inventory import Asset

if TYPE_CHECKING:  # the plan models (pydantic) only where a plan is submitted
    from opsconductor.plan import Targets

Q = queries.load("assets")


async def ensure_tenant(conn: Conn, tenant_id: str) -> None:
    try:
        await conn.execute(Q["ensure_tenant"], {"tenant_id": tenant_id})
    except psycopg.errors.CheckViolation:
        raise BadInput(
            f"tenant {tenant_id!r}: use 1-63 lower-case letters, digits, '-' or '_'"
        ) from None


async def list_all(conn: Conn, tenant_id: str) -> list[Asset]:
    cur = await conn.execute(Q["list_assets"], {"tenant_id": tenant_id})
    return [Asset.from_row(row) for row in await cur.fetchall()]


async def matching(
    conn: Conn, tenant_id: str, selectors: Mapping[str, Targets]
) -> dict[str, list[Asset]]:
    """The assets each selector matches, keyed like ``selectors``: the cost follows the
    matches, not the size of the inventory. Selectors that name asset ids only (the common
    case of a bulk submission: a plan per host) share one primary-key lookup."""
    found: dict[str, list[Asset]] = {}
    by_id_only = {
        key: selector
        for key, selector in selectors.items()
        if selector.assets is not None
        and selector.hostnames is None
        and selector.environment is None
        and selector.tags is None
    }
    if by_id_only:
        from opsconductor.plan import Targets

        wanted = sorted({a for selector in by_id_only.values() for a in selector.assets or ()})
        cur = await conn.execute(
            Q["select_targets"],
            selection_params(tenant_id, Targets(assets=wanted)),
            prepare=False,
        )
        known = {row["asset_id"]: Asset.from_row(row) for row in await cur.fetchall()}
        for key, selector in by_id_only.items():
            found[key] = [known[a] for a in dict.fromkeys(selector.assets or ()) if a in known]
    for key, selector in selectors.items():
        if key in found:
            continue
        cur = await conn.execute(
            Q["select_targets"],
            selection_params(tenant_id, selector),
            # A generic (prepared) plan would keep every "part not given" branch and scan.
            prepare=False,
        )
        found[key] = [Asset.from_row(row) for row in await cur.fetchall()]
    return found


def selection_params(tenant_id: str, selector: Targets) -> dict[str, Any]:
    return {
        "tenant_id": tenant_id,
        "asset_ids": selector.assets,
        "hostnames": selector.hostnames,
        "environment": selector.environment,
        "tags": None if selector.tags is None else Jsonb(selector.tags),
    }


def _params(tenant_id: str, asset: Asset) -> dict[str, Any]:
    return {
        **{k: getattr(asset, k) for k in Asset.__dataclass_fields__},
        "tenant_id": tenant_id,
        "tags": Jsonb(dict(asset.tags)),
        "vars": Jsonb(dict(asset.vars)),
    }


async def add(conn: Conn, tenant_id: str, asset: Asset) -> Asset:
    return await _write(conn, "insert_asset", tenant_id, asset)


async def get(conn: Conn, tenant_id: str, asset_id: str) -> Asset | None:
    cur = await conn.execute(Q["get_asset"], {"tenant_id": tenant_id, "asset_id": asset_id})
    row = await cur.fetchone()
    return None if row is None else Asset.from_row(row)


async def update(conn: Conn, tenant_id: str, asset: Asset) -> Asset | None:
    """Replace every field of an existing asset but its id; None if it does not exist."""
    try:
        return await _write(conn, "update_asset", tenant_id, asset)
    except LookupError:
        return None


async def upsert(conn: Conn, tenant_id: str, asset: Asset) -> bool:
    """Insert or replace by asset id (imports are re-runnable); True when it was new."""
    return bool((await _write_row(conn, "upsert_asset", tenant_id, asset))["inserted"])


async def _write(conn: Conn, query: str, tenant_id: str, asset: Asset) -> Asset:
    return Asset.from_row(await _write_row(conn, query, tenant_id, asset))


async def _write_row(conn: Conn, query: str, tenant_id: str, asset: Asset) -> dict[str, Any]:
    try:
        cur = await conn.execute(Q[query], _params(tenant_id, asset))
    except psycopg.errors.UniqueViolation as exc:
        what = "hostname" if "hostname" in str(exc) else "asset id"
        raise BadInput(f"asset {asset.asset_id!r}: {what} already exists") from None
    except psycopg.errors.CheckViolation as exc:
        constraint = exc.diag.constraint_name or ""
        field = constraint.removeprefix("assets_").removesuffix("_check") or "asset"
        raise BadInput(f"asset {asset.asset_id!r}: invalid {field}") from None
    row = await cur.fetchone()
    if row is None:
        raise LookupError(asset.asset_id)
    return dict(row)


async def delete(conn: Conn, tenant_id: str, asset_id: str) -> bool:
    cur = await conn.execute(Q["delete_asset"], {"tenant_id": tenant_id, "asset_id": asset_id})
    return await cur.fetchone() is not None


#: bastions behind bastions followed at most this deep (connectors/ssh_reach.py refuses more)
MAX_BASTIONS = 8


async def with_bastions(
    db: Database, tenant_id: str, found: Mapping[str, Asset]
) -> dict[str, Asset]:
    """``found`` and the bastions their ``proxy_jump`` names, transitively (a missing one
    fails only the steps on targets behind it, when they connect)."""
    known = dict(found)
    wanted = {a.proxy_jump for a in known.values() if a.proxy_jump} - set(known)
    if not wanted:  # the common case: no round trip
        return known
    gone: set[str] = set()
    async with db.connection() as conn:
        for _ in range(MAX_BASTIONS):
            for asset_id in sorted(wanted):
                bastion = await get(conn, tenant_id, asset_id)
                if bastion is not None:
                    known[asset_id] = bastion
            gone |= wanted - set(known)
            wanted = {a.proxy_jump for a in known.values() if a.proxy_jump} - set(known) - gone
            if not wanted:
                break
    return known
