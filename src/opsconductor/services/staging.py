"""Staged enablement of a tenant (staging.py): read it, change it (tenant admins:
``tenant:manage``, like the tenant's record-only switch it refines; every change is an
audited ``staging_changed`` event)."""

from __future__ import annotations

from opsconductor.db import assets
from opsconductor.db import staging as rows
from opsconductor.db.connection import Database
from opsconductor.services.caller import Caller
from opsconductor.staging import LevelMode, Staging, check_level


async def get(db: Database, who: Caller) -> Staging:
    who.require("assets", "view")  # as the tenant's other settings
    async with db.connection() as conn:
        await assets.ensure_tenant(conn, who.tenant_id)
        return await rows.get(conn, who.tenant_id)


async def set_level(db: Database, who: Caller, level: int, mode: LevelMode) -> Staging:
    """What executions of one approval level do: run for real, record-only, or refused."""
    who.require("tenant", "manage")
    check_level(level)
    async with db.transaction() as conn:
        await assets.ensure_tenant(conn, who.tenant_id)
        return await rows.change(conn, who.tenant_id, who.actor_id, level=level, mode=mode)


async def set_canary(db: Database, who: Caller, percent: int) -> Staging:
    """The share (0-100) of executions eligible to run for real that do."""
    who.require("tenant", "manage")
    Staging(canary_percent=percent)  # BadInput naming the share when out of range
    async with db.transaction() as conn:
        await assets.ensure_tenant(conn, who.tenant_id)
        return await rows.change(conn, who.tenant_id, who.actor_id, canary=percent)
