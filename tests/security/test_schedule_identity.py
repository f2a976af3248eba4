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


def _noop(name: str) -> dict[str, object]:
    return {
        "name": name,
        "steps": [{"name": "n", "type": "noop", "targets": {"hostnames": ["localhost"]}}],
    }


async def test_a_version_saved_later_does_not_run_under_the_creators_name(db: Database) -> None:
    """A schedule runs as its creator. It runs the version chosen when it was added, so a
    version someone else saves later does not run under the creator's roles, unless the
    creator chose to follow the latest."""
    from opsconductor.errors import BadInput, NotFound

    async with db.transaction() as conn:
        for actor in ("olga", "bob"):
            await auth.ensure_actor(conn, "default", actor)
            await auth.grant(conn, "default", actor, "operator", granted_by="test")
    olga, bob = await delegated(db, "default", "olga"), await delegated(db, "default", "bob")
    await jobs.save(db, olga, "tick", parse_plan(_noop("olga's")))
    # Once a year: made due by hand below, each fires exactly one slot however slow the
    # machine (every second, a second boundary crossed before the round fired two).
    yearly = "0 0 1 1 *"
    pinned = await schedules.add(db, olga, "pinned", "tick", yearly)
    following = await schedules.add(db, olga, "following", "tick", yearly, follow_latest=True)
    assert (pinned.job_version, following.job_version) == (1, None)
    await jobs.save(db, bob, "tick", parse_plan(_noop("bob's")))
    with pytest.raises(NotFound, match="no version 7"):
        await schedules.add(db, olga, "nope", "tick", "* * * * * *", version=7)
    with pytest.raises(BadInput, match="version"):
        await schedules.add(db, olga, "both", "tick", "* * * * * *", version=1, follow_latest=True)

    async with db.connection() as conn:
        await conn.execute(
            "UPDATE execution.schedules SET next_fire_at = date_trunc('second', now())"
        )
    await schedules.fire_due(db, grace_s=60)
    async with db.connection() as conn:
        cur = await conn.execute(
            "SELECT s.name, e.job_version, e.plan_name, e.actor_id "
            "FROM execution.schedule_fires f JOIN execution.schedules s ON s.id = f.schedule_id "
            "JOIN execution.executions e ON e.id = f.execution_id ORDER BY s.name"
        )
        ran = [tuple(r.values()) for r in await cur.fetchall()]
    assert ran == [("following", 2, "bob's", "olga"), ("pinned", 1, "olga's", "olga")]
