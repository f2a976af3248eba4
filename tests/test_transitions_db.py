"""Compare-and-set transitions in PostgreSQL: one winner, an event per move, same transaction."""

from __future__ import annotations

import asyncio
import uuid

import psycopg
import pytest

from opsconductor.db import executions
from opsconductor.db.connection import Database
from opsconductor.errors import IllegalTransition, StaleStatus
from opsconductor.status_machine import Status
from opsconductor.submission import Request, submit
from tests.plans import command_step, plan_of


async def _new_execution(db: Database, key: str | None = None) -> uuid.UUID:
    plan = plan_of(command_step("a", "true"))
    submitted = await submit(db, Request(plan, "default", "alice", key))
    return uuid.UUID(str(submitted.execution.id))


async def _status_events(db: Database, execution_id: uuid.UUID) -> list[tuple[str, str, str]]:
    async with db.connection() as conn:
        rows = await executions.events(conn, execution_id)
    return [
        (r.from_status, r.to_status, r.actor_id) for r in rows if r.event_type == "status_changed"
    ]


async def test_transition_records_an_event_with_actor_and_reason(db: Database) -> None:
    execution_id = await _new_execution(db)
    async with db.connection() as conn:
        await executions.transition(
            conn, execution_id, Status.APPROVED, Status.RUNNING, actor_id="w1"
        )
        await executions.transition(
            conn, execution_id, Status.RUNNING, Status.FAILED, actor_id="w1", reason="step x failed"
        )
        row = await executions.get(conn, "default", str(execution_id))
        events = await executions.events(conn, execution_id)
    assert row.status == "failed"
    assert row.status_reason == "step x failed"
    assert row.started_at is not None and row.finished_at is not None
    assert await _status_events(db, execution_id) == [
        ("approved", "running", "w1"),
        ("running", "failed", "w1"),
    ]
    assert events[-1].payload == {"reason": "step x failed"}


async def test_illegal_transition_changes_nothing(db: Database) -> None:
    execution_id = await _new_execution(db)
    async with db.connection() as conn:
        with pytest.raises(IllegalTransition):
            await executions.transition(
                conn, execution_id, Status.APPROVED, Status.COMPLETED, actor_id="w1"
            )
        row = await executions.get(conn, "default", str(execution_id))
    assert row.status == "approved"
    assert await _status_events(db, execution_id) == []


async def test_stale_current_status_is_refused(db: Database) -> None:
    execution_id = await _new_execution(db)
    async with db.connection() as conn:
        await executions.transition(
            conn, execution_id, Status.APPROVED, Status.RUNNING, actor_id="w1"
        )
        with pytest.raises(StaleStatus, match="is running, not approved"):
            await executions.transition(
                conn, execution_id, Status.APPROVED, Status.CANCELLED, actor_id="w2"
            )


async def test_two_connections_race_and_exactly_one_wins(database_url: str, db: Database) -> None:
    execution_id = await _new_execution(db)
    # Two independent connections, both holding a transaction open on the same row: the
    # second blocks on the row lock, then re-checks ``status = approved`` and finds it gone.
    async with (
        await psycopg.AsyncConnection.connect(database_url) as a,
        await psycopg.AsyncConnection.connect(database_url) as b,
    ):
        from psycopg.rows import dict_row

        a.row_factory = dict_row  # type: ignore[assignment]
        b.row_factory = dict_row  # type: ignore[assignment]
        await a.execute("BEGIN")
        await b.execute("BEGIN")
        await executions.transition(
            a,
            execution_id,
            Status.APPROVED,
            Status.RUNNING,  # type: ignore[arg-type]
            actor_id="a",
        )
        loser = asyncio.ensure_future(
            executions.transition(
                b,
                execution_id,
                Status.APPROVED,
                Status.CANCELLED,  # type: ignore[arg-type]
                actor_id="b",
            )
        )
        await asyncio.sleep(0.2)
        assert not loser.done()  # b waits for a's row lock: it cannot slip in
        await a.execute("COMMIT")
        with pytest.raises(StaleStatus):
            await loser
        await b.execute("ROLLBACK")
    assert await _status_events(db, execution_id) == [("approved", "running", "a")]


async def test_many_concurrent_writers_one_winner(db: Database) -> None:
    execution_id = await _new_execution(db)

    async def attempt(target: Status, actor: str) -> str:
        async with db.connection() as conn:
            try:
                await executions.transition(
                    conn, execution_id, Status.APPROVED, target, actor_id=actor
                )
            except StaleStatus:
                return "lost"
        return "won"

    results = await asyncio.gather(
        *(attempt(Status.RUNNING if i % 2 else Status.CANCELLED, f"w{i}") for i in range(10))
    )
    assert results.count("won") == 1
    assert len(await _status_events(db, execution_id)) == 1


async def test_cancelled_sets_who_and_when_together(db: Database) -> None:
    execution_id = await _new_execution(db)
    async with db.connection() as conn:
        await executions.transition(
            conn, execution_id, Status.APPROVED, Status.CANCELLED, actor_id="bob"
        )
        row = await executions.get(conn, "default", str(execution_id))
        assert row.cancelled_by == "bob" and row.cancelled_at is not None
        with pytest.raises(Exception, match="cancelled_together"):
            await conn.execute(
                "UPDATE execution.executions SET cancelled_at = NULL WHERE id = %s",
                (execution_id,),
            )
