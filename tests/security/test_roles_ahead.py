"""The engine reads the actor's roles while a step's lock is taken (engine/roles_ahead.py).
Those roles serve only a lock taken at the first try: a role revoked while the step waited
for its host must stop the step, as it did when the roles were read after the lock."""

from __future__ import annotations

import asyncio

from opsconductor.db import assets, auth, executions, locks
from opsconductor.db.connection import Database
from opsconductor.inventory import Asset
from opsconductor.status_machine import Status
from tests.plans import plan_of
from tests.safety_support import engine, lock_rows, state, submit_plan

NOOP = {"name": "touch", "type": "noop", "targets": {"assets": ["node-a"]}}


async def _events(db: Database, execution_id: object) -> list[str]:
    async with db.connection() as conn:
        cur = await conn.execute(
            "SELECT event_type FROM execution.execution_events WHERE execution_id = %s ORDER BY id",
            (execution_id,),
        )
        return [row["event_type"] for row in await cur.fetchall()]


async def test_a_role_revoked_while_the_step_waited_for_its_lock_stops_it(db: Database) -> None:
    async with db.connection() as conn:
        await assets.add(conn, "default", Asset("node-a", "node-a", "127.0.0.1", "staging"))
        # another holder has the host: the step's first try fails, then it waits
        assert await locks.try_acquire(
            conn, "default", "node-a", owner_tag="other:run", execution_id=None, ttl_s=600
        )
    execution_id = await submit_plan(db, plan_of(NOOP), actor="bob")
    run = asyncio.create_task(engine(db, "w1", poll_s=3.0, wait_s=60).run("default", execution_id))
    for _ in range(600):  # the run has begun (its lock and roles are read right after)
        if (await state(db, execution_id))[0].status is Status.RUNNING:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)  # its first try failed: the next is ~2 s away
    async with db.transaction() as conn:
        assert await auth.revoke_role(conn, "default", "bob", "admin")
    async with db.connection() as conn:
        await locks.release(conn, "default", ["node-a"], owner_tag="other:run")
    final = await asyncio.wait_for(run, timeout=120)
    assert final is Status.FAILED
    events = await _events(db, execution_id)
    assert "rbac_violation" in events
    assert "step_started" not in events  # nothing ran on the host
    assert await lock_rows(db) == []


async def test_a_lock_taken_at_once_checks_with_the_roles_read_beside_it(db: Database) -> None:
    """Granted: it runs; never granted: it is refused before any attempt starts."""
    async with db.connection() as conn:
        await assets.add(conn, "default", Asset("node-a", "node-a", "127.0.0.1", "staging"))
    allowed = await submit_plan(db, plan_of(NOOP), actor="carol")
    assert await engine(db, "w1").run("default", allowed) is Status.COMPLETED
    async with db.transaction() as conn:
        assert await auth.revoke_role(conn, "default", "carol", "admin")
    refused = await submit_plan(db, plan_of(NOOP), actor="dave")
    async with db.transaction() as conn:  # submitted by an admin who lost the role since
        assert await auth.revoke_role(conn, "default", "dave", "admin")
    assert await engine(db, "w1").run("default", refused) is Status.FAILED
    assert "rbac_violation" in await _events(db, refused)
    assert "step_started" not in await _events(db, refused)
    async with db.connection() as conn:
        execution = await executions.get(conn, "default", str(refused))
    assert execution.status is Status.FAILED
