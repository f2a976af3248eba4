"""A schedule acts as the person who created it, with their roles as of each fire: a role
revoked after the schedule was added stops its runs (the slot records why)."""

from __future__ import annotations

import asyncio

import pytest

from opsconductor.db import auth
from opsconductor.db.connection import Database
from opsconductor.plan import parse_plan
from opsconductor.services import jobs, schedules
from opsconductor.services.caller import delegated

pytestmark = pytest.mark.integration


async def test_a_revoked_role_stops_the_schedule_runs(db: Database) -> None:
    async with db.transaction() as conn:
        await auth.ensure_actor(conn, "default", "olga")
        await auth.grant(conn, "default", "olga", "operator", granted_by="test")
    olga = await delegated(db, "default", "olga")
    plan = parse_plan(
        {
            "name": "noop",
            "steps": [{"name": "n", "type": "noop", "targets": {"hostnames": ["localhost"]}}],
        }
    )
    await jobs.save(db, olga, "tick", plan)
    added = await schedules.add(db, olga, "every-second", "tick", "* * * * * *")

    async def fire_now() -> list[tuple[object, ...]]:
        async with db.connection() as conn:
            await conn.execute(
                "UPDATE execution.schedules SET next_fire_at = date_trunc('second', now()) "
                "WHERE id = %s",
                (added.id,),
            )
        await schedules.fire_due(db, grace_s=60)
        async with db.connection() as conn:
            cur = await conn.execute(
                "SELECT execution_id, error FROM execution.schedule_fires "
                "WHERE schedule_id = %s ORDER BY slot DESC LIMIT 1",
                (added.id,),
            )
            row = await cur.fetchone()
        assert row is not None
        return [row["execution_id"], row["error"]]

    execution_id, error = await fire_now()
    assert execution_id is not None and error is None
    async with db.transaction() as conn:
        await auth.revoke_role(conn, "default", "olga", "operator")
    await asyncio.sleep(1.1)  # the next second: a slot not fired yet
    execution_id, error = await fire_now()
    assert execution_id is None
    assert "olga" in str(error) and "jobs" in str(error)
