"""The status machines live twice, in status_machine.py and in PostgreSQL (migration 0011):
the two tables must be the same, or one of them would refuse a move the other allows."""

from __future__ import annotations

from opsconductor import status_machine
from opsconductor.db.connection import Database


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
