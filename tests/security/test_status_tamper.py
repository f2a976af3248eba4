"""The status machine holds in the database itself: a raw UPDATE (psql, a script, a bug
in a new statement) cannot move an execution or a step attempt where the machine forbids,
and says why in the error; legal moves still pass."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from opsconductor.db import auth
from opsconductor.db.connection import Database
from opsconductor.engine import Engine
from opsconductor.records import Execution
from opsconductor.submission import Request, submit
from tests.plans import command_step, plan_of


async def _completed(db: Database) -> Execution:
    async with db.transaction() as conn:  # the engine checks the submitter's roles
        await auth.grant(conn, "default", "alice", "operator", granted_by="test")
    plan = plan_of(command_step("look", "true"))
    submitted = await submit(db, Request(plan, "default", "alice", uuid.uuid4().hex))
    assert await Engine(db, actor_id="tester").run("default", submitted.execution.id) == "completed"
    return submitted.execution


async def test_raw_illegal_status_updates_are_refused_by_postgresql(
    db: Database, database_url: str
) -> None:
    execution = await _completed(db)
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.CheckViolation) as caught:
            await conn.execute(
                "UPDATE execution.executions SET status = 'running' WHERE id = %s",
                (execution.id,),
            )
        assert str(caught.value).splitlines()[0] == (
            f"illegal status change for execution {execution.id}: completed -> running; "
            "from completed it may go to nothing (terminal)"
        )
        assert caught.value.diag.constraint_name == "status_machine"
        with pytest.raises(psycopg.errors.CheckViolation, match="completed -> failed"):
            await conn.execute(
                "UPDATE execution.execution_steps SET status = 'failed' WHERE execution_id = %s",
                (execution.id,),
            )
        with pytest.raises(psycopg.errors.CheckViolation, match="a new execution starts as"):
            await conn.execute(
                "INSERT INTO execution.executions (id, tenant_id, actor_id, idempotency_key,"
                " plan_name, plan_snapshot, plan_hash, status, mode, sla_class, approval_level,"
                " priority, estimated_duration_s, trace_id) VALUES (%s, 'default', 'mallory',"
                " 'forged', 'forged', '{}', repeat('0', 64), 'completed', 'immediate', 'fast',"
                " 0, 5, 0, 'forged')",
                (uuid.uuid4(),),
            )
        cur = await conn.execute(
            "SELECT status::text FROM execution.executions WHERE id = %s", (execution.id,)
        )
        assert await cur.fetchone() == ("completed",)
        cur = await conn.execute("SELECT count(*) FROM execution.executions")
        assert await cur.fetchone() == (1,)


async def test_a_pending_approval_cannot_be_skipped_to_running(
    db: Database, database_url: str
) -> None:
    plan = plan_of(command_step("look", "true"), approval_level=2)
    submitted = await submit(db, Request(plan, "default", "alice", uuid.uuid4().hex))
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        for target in ("running", "queued", "completed"):
            with pytest.raises(
                psycopg.errors.CheckViolation, match=f"pending_approval -> {target}"
            ):
                await conn.execute(
                    "UPDATE execution.executions SET status = %s WHERE id = %s",
                    (target, submitted.execution.id),
                )


async def test_legal_raw_updates_pass(db: Database, database_url: str) -> None:
    plan = plan_of(command_step("look", "true"), approval_level=2)
    submitted = await submit(db, Request(plan, "default", "alice", uuid.uuid4().hex))
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        for target in ("approved", "pending_approval", "approved", "queued", "running", "partial"):
            await conn.execute(
                "UPDATE execution.executions SET status = %s WHERE id = %s",
                (target, submitted.execution.id),
            )
        # not a status change: the trigger is not even called
        await conn.execute(
            "UPDATE execution.executions SET status = status, status_reason = 'checked' "
            "WHERE id = %s",
            (submitted.execution.id,),
        )
        cur = await conn.execute(
            "SELECT status::text, status_reason FROM execution.executions WHERE id = %s",
            (submitted.execution.id,),
        )
        assert await cur.fetchone() == ("partial", "checked")


async def test_only_a_plan_needing_no_approval_may_be_created_queued(
    database_url: str, db: Database
) -> None:
    """A bulk submission creates level-0 executions queued (migration 0029); a raw INSERT
    cannot use that to put a plan that needs an approval straight into the queue."""
    insert = (
        "INSERT INTO execution.executions (id, tenant_id, actor_id, idempotency_key,"
        " plan_name, plan_snapshot, plan_hash, status, mode, sla_class, approval_level,"
        " priority, estimated_duration_s, trace_id) VALUES (%s, 'default', 'mallory',"
        " %s, 'forged', '{}', repeat('0', 64), 'queued', 'background', 'fast',"
        " %s, 5, 0, 'forged')"
    )
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await conn.execute(
            "INSERT INTO execution.tenants VALUES ('default') ON CONFLICT DO NOTHING"
        )
        for level in (1, 2, 3):
            with pytest.raises(psycopg.errors.CheckViolation, match="queued at approval level"):
                await conn.execute(insert, (uuid.uuid4(), f"forged-{level}", level))
        cur = await conn.execute("SELECT count(*) FROM execution.executions")
        assert await cur.fetchone() == (0,)
        await conn.execute(insert, (uuid.uuid4(), "level-0", 0))  # what a bulk does
