"""An event's execution must exist (migration 0038): what the foreign key from
execution_events to executions guaranteed, now checked once per statement (with the
notifications' trigger) and kept by triggers on executions."""

from __future__ import annotations

import asyncio
import uuid

import psycopg
import pytest
from psycopg.rows import dict_row

from opsconductor.db.connection import Database
from opsconductor.submission import Request, submit
from tests.plans import command_step, plan_of

INSERT = (
    "INSERT INTO execution.execution_events (execution_id, tenant_id, event_type, actor_id) "
    "SELECT x, 'default', 'note', 'tester' FROM unnest(%s::uuid[]) AS x"
)


async def new_execution(db: Database) -> uuid.UUID:
    plan = plan_of(command_step("a", "true"))
    request = Request(plan, "default", "alice", uuid.uuid4().hex)  # its own, not a replay
    return uuid.UUID(str((await submit(db, request)).execution.id))


async def events_of(db: Database, *ids: uuid.UUID) -> int:
    async with db.connection() as conn:
        cur = await conn.execute(
            "SELECT count(*) AS n FROM execution.execution_events WHERE execution_id = ANY(%s)",
            (list(ids),),
        )
        row = await cur.fetchone()
    assert row is not None
    return int(row["n"])


async def test_an_event_of_no_execution_is_refused_and_so_is_its_whole_statement(
    db: Database, database_url: str
) -> None:
    real = await new_execution(db)
    before = await events_of(db, real)
    ghost = uuid.uuid4()
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        for ids in ([ghost], [real, ghost, real]):
            with pytest.raises(psycopg.errors.ForeignKeyViolation):
                await conn.execute(INSERT, (ids,))
        assert await events_of(db, real, ghost) == before
        await conn.execute(INSERT, ([real, real],))
    assert await events_of(db, real) == before + 2


async def test_an_executions_events_go_with_it_and_no_others(db: Database) -> None:
    gone, kept = await new_execution(db), await new_execution(db)
    assert gone != kept
    assert await events_of(db, gone) > 0
    kept_events = await events_of(db, kept)
    async with db.connection() as conn:
        for table in ("execution_steps", "execution_queue"):
            await conn.execute(f"DELETE FROM execution.{table} WHERE execution_id = %s", (gone,))
        await conn.execute("DELETE FROM execution.executions WHERE id = %s", (gone,))
    assert await events_of(db, gone) == 0
    assert await events_of(db, kept) == kept_events > 0


async def test_truncating_the_executions_truncates_their_events(db: Database) -> None:
    first = await new_execution(db)
    async with db.connection() as conn:
        await conn.execute("TRUNCATE execution.executions CASCADE")
        cur = await conn.execute("SELECT count(*) AS n FROM execution.execution_events")
        row = await cur.fetchone()
    assert row is not None and row["n"] == 0
    assert await events_of(db, first) == 0


async def test_an_execution_with_events_keeps_its_id(db: Database, database_url: str) -> None:
    real = await new_execution(db)
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.ForeignKeyViolation, match="execution_events"):
            await conn.execute(
                "UPDATE execution.executions SET id = %s WHERE id = %s", (uuid.uuid4(), real)
            )
    assert await events_of(db, real) > 0


async def test_an_event_waits_for_a_delete_of_its_execution_and_then_is_refused(
    db: Database, database_url: str
) -> None:
    real = await new_execution(db)
    async with (
        await psycopg.AsyncConnection.connect(database_url) as deleter,
        await psycopg.AsyncConnection.connect(database_url, row_factory=dict_row) as writer,
    ):
        for table in ("execution_steps", "execution_queue"):
            await deleter.execute(f"DELETE FROM execution.{table} WHERE execution_id = %s", (real,))
        await deleter.execute("DELETE FROM execution.executions WHERE id = %s", (real,))
        insert = asyncio.ensure_future(writer.execute(INSERT, ([real],)))
        await asyncio.sleep(0.5)
        assert not insert.done()  # it waits for the delete's transaction (FOR KEY SHARE)
        await deleter.commit()
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            await insert
    assert await events_of(db, real) == 0


async def test_a_delete_waits_for_an_uncommitted_event_and_then_takes_it_along(
    db: Database, database_url: str
) -> None:
    real = await new_execution(db)
    async with (
        await psycopg.AsyncConnection.connect(database_url) as writer,
        await psycopg.AsyncConnection.connect(database_url) as deleter,
    ):
        await writer.execute(INSERT, ([real],))  # not committed: the execution is key-share locked

        async def delete() -> None:
            for table in ("execution_steps", "execution_queue"):
                await deleter.execute(
                    f"DELETE FROM execution.{table} WHERE execution_id = %s", (real,)
                )
            await deleter.execute("DELETE FROM execution.executions WHERE id = %s", (real,))
            await deleter.commit()

        deleting = asyncio.ensure_future(delete())
        await asyncio.sleep(0.5)
        assert not deleting.done()
        await writer.commit()
        await deleting
    assert await events_of(db, real) == 0  # no orphan: the committed event went too
