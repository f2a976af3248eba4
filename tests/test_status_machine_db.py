"""The status machines live twice, in status_machine.py and in PostgreSQL (migration 0011):
the two tables must be the same, or one of them would refuse a move the other allows."""

from __future__ import annotations

from typing import Any

import psycopg

from opsconductor import status_machine
from opsconductor.db.connection import Database
from opsconductor.submission import Request, submit
from tests.plans import command_step, plan_of


async def new_execution(db: Database) -> str:
    plan = plan_of(command_step("a", "true"))
    return str((await submit(db, Request(plan, "default", "alice"))).execution.id)


async def _pairs(db: Database, function: str) -> set[tuple[str | None, str]]:
    async with db.connection() as conn:
        cur = await conn.execute(f"SELECT from_status::text, to_status::text FROM {function}()")
        return {(row["from_status"], row["to_status"]) for row in await cur.fetchall()}


async def test_the_execution_table_in_the_database_is_the_python_one(db: Database) -> None:
    python = status_machine.pairs(status_machine.INITIAL, status_machine.TRANSITIONS)
    assert await _pairs(db, "execution.execution_transitions") == python
    assert (None, "approved") in python and ("approved", "pending_approval") in python


async def test_the_step_attempt_table_in_the_database_is_the_python_one(db: Database) -> None:
    python = status_machine.pairs(status_machine.STEP_INITIAL, status_machine.STEP_TRANSITIONS)
    assert await _pairs(db, "execution.step_transitions") == python


async def test_every_status_the_schema_allows_is_known_to_the_python_machines(
    db: Database,
) -> None:
    async with db.connection() as conn:
        cur = await conn.execute(
            "SELECT unnest(enum_range(NULL::execution.execution_status))::text AS s"
        )
        enum = {row["s"] for row in await cur.fetchall()}
    assert enum == {str(s) for s in status_machine.Status}


def test_initial_statuses_are_what_submission_creates() -> None:
    created = {status_machine.initial_status(level) for level in range(4)}
    # a bulk submission stores a level-0 plan for the workers queued at once (db/bulk.py)
    assert created | {status_machine.Status.QUEUED} == status_machine.INITIAL
    # terminal means the same in both machines' shapes: no way out
    assert all(s not in status_machine.TRANSITIONS for s in status_machine.TERMINAL)


# -- the triggers themselves: every move written raw, legal or not (migration 0031 put the
# legal moves in the triggers' WHEN clauses; the PL/pgSQL check runs only to refuse) ------

_EXECUTION_COPY = """
INSERT INTO execution.executions
SELECT * FROM jsonb_populate_record(NULL::execution.executions, (
    SELECT to_jsonb(e) || jsonb_build_object(
        'id', gen_random_uuid(), 'idempotency_key', gen_random_uuid()::text,
        'status', %(status)s::text, 'approval_level', %(level)s::int)
    FROM execution.executions e WHERE e.id = %(id)s))
"""
_STEP_COPY = """
INSERT INTO execution.execution_steps
    (execution_id, tenant_id, step_index, step_name, step_type, target_asset_id, status, attempt)
SELECT execution_id, tenant_id, step_index, step_name, step_type, target_asset_id,
       %(status)s, %(attempt)s
FROM execution.execution_steps WHERE execution_id = %(id)s AND attempt = 1
"""


async def _accepted(conn: Any, sql: str, params: dict[str, object]) -> bool:
    try:
        async with conn.transaction():  # a savepoint: a refusal undoes only this write
            await conn.execute(sql, params)
    except psycopg.errors.CheckViolation as exc:
        assert "status_machine" in str(exc.diag.constraint_name), exc
        return False
    return True


async def _forced(conn: Any, sql: str, params: dict[str, object]) -> None:
    """A row put in any status, triggers off (as a replica applies rows)."""
    await conn.execute("SET LOCAL session_replication_role = replica")
    await conn.execute(sql, params)
    await conn.execute("SET LOCAL session_replication_role = origin")


async def _every_move(
    conn: Any, update: str, row_id: str, statuses: list[str], legal: set[tuple[str | None, str]]
) -> None:
    """Each (was, to) pair written raw to the row: accepted exactly when it is legal."""
    for was in statuses:
        for to in statuses:
            if was == to:
                continue
            await _forced(conn, update, {"id": row_id, "status": was})
            params = {"id": row_id, "status": to}
            assert await _accepted(conn, update, params) is ((was, to) in legal), (was, to)


async def test_every_raw_execution_move_is_refused_unless_the_machine_allows_it(
    db: Database,
) -> None:
    execution_id = await new_execution(db)
    legal = status_machine.pairs(status_machine.INITIAL, status_machine.TRANSITIONS)
    statuses = [str(s) for s in status_machine.Status]
    async with db.connection() as conn, conn.transaction(force_rollback=True):
        for level in range(4):
            for to in statuses:
                # queued at creation only without a human approval (migration 0029)
                expected = (None, to) in legal and not (to == "queued" and level != 0)
                params = {"id": execution_id, "status": to, "level": level}
                assert await _accepted(conn, _EXECUTION_COPY, params) is expected, (level, to)
        update = "UPDATE execution.executions SET status = %(status)s WHERE id = %(id)s"
        await _every_move(conn, update, execution_id, statuses, legal)


async def test_every_raw_step_attempt_move_is_refused_unless_the_machine_allows_it(
    db: Database,
) -> None:
    execution_id = await new_execution(db)
    legal = status_machine.pairs(status_machine.STEP_INITIAL, status_machine.STEP_TRANSITIONS)
    statuses = [str(s) for s in status_machine.StepStatus]
    async with db.connection() as conn, conn.transaction(force_rollback=True):
        for n, to in enumerate(statuses, start=2):
            params = {"id": execution_id, "status": to, "attempt": n}
            assert await _accepted(conn, _STEP_COPY, params) is ((None, to) in legal), to
        update = (
            "UPDATE execution.execution_steps SET status = %(status)s"
            " WHERE execution_id = %(id)s AND attempt = 1"
        )
        await _every_move(conn, update, execution_id, statuses, legal)
