"""What the engine reads to start a run: one statement instead of three."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from opsconductor.db import batching, queries
from opsconductor.db.batching import Executor
from opsconductor.db.connectors import TenantSettings
from opsconductor.errors import NotFound
from opsconductor.inventory import Asset

Q = queries.load("runs")


@dataclass(frozen=True)
class StartContext:
    tenant: TenantSettings
    #: masking patterns, name -> pattern, by name
    patterns: dict[str, str]
    #: the wanted assets still in the inventory, by id
    assets: dict[str, Asset]


async def start_context(conn: Executor, tenant_id: str, asset_ids: Iterable[str]) -> StartContext:
    item = {"tenant_id": tenant_id, "asset_ids": sorted(set(asset_ids))}
    rows = await batching.run(conn, Q["start_context"], [item])
    row = rows[0] if rows else None
    if row is None:
        raise NotFound(f"tenant {tenant_id!r} not found")
    return context_of(row)


def context_of(row: Mapping[str, Any]) -> StartContext:
    """From a ``start_context`` row, or the same object returned by the queue's claim."""
    return StartContext(
        TenantSettings.from_row(row),
        {str(name): str(pattern) for name, pattern in row["masking_patterns"]},
        {a["asset_id"]: Asset.from_row(a) for a in row["assets"]},
    )
