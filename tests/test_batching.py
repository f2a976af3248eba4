"""Set-based batching (db/batching.py) against a real PostgreSQL: concurrent calls share a
statement, each caller gets its own rows, a refused item fails only its caller."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from opsconductor.db import batching
from opsconductor.db.connection import Database
from opsconductor.errors import DatabaseError

# Each item answers its value, the value's inverse (1/0 is refused by the server) and the
# transaction that ran it, so a test can see which calls shared a statement.
ECHO = """
SELECT t.ord, t.v, 100 / t.v AS inverse, txid_current() AS tx
FROM jsonb_to_recordset(%(items)s::jsonb) AS t(ord int, v int)
"""

INSERT = """
INSERT INTO batch_probe (v) SELECT t.v FROM jsonb_to_recordset(%(items)s::jsonb) AS t(v int)
"""


async def echo(db: Database, *values: int, key: object = None) -> list[dict[str, object]]:
    return await db.batch.run(ECHO, [{"v": v} for v in values], key=key)


async def test_concurrent_calls_share_a_statement_and_get_their_own_rows(db: Database) -> None:
    answers = await asyncio.gather(*(echo(db, v, v + 1000) for v in range(1, 41)))
    for v, rows in enumerate(answers, start=1):
        assert [row["v"] for row in rows] == [v, v + 1000]
    statements = {row["tx"] for rows in answers for row in rows}
    assert len(statements) <= 3  # 40 calls: the first alone, then the rest together


async def test_a_refused_item_fails_only_its_caller(db: Database) -> None:
    five, zero, twenty = await asyncio.gather(
        *(echo(db, v) for v in (5, 0, 20)), return_exceptions=True
    )
    assert isinstance(five, list) and [row["inverse"] for row in five] == [20]
    assert isinstance(zero, DatabaseError) and "division by zero" in str(zero)
    assert isinstance(twenty, list) and [row["inverse"] for row in twenty] == [5]


async def test_calls_with_the_same_key_never_share_a_statement(db: Database) -> None:
    answers = await asyncio.gather(*(echo(db, v, key="same") for v in range(1, 6)))
    assert len({rows[0]["tx"] for rows in answers}) == 5


async def test_a_cancelled_caller_s_item_is_not_sent(db: Database) -> None:
    async with db.connection() as conn:
        await conn.execute("CREATE TABLE batch_probe (v int)")
    cancelled = asyncio.create_task(db.batch.run(INSERT, [{"v": 1}]))
    await asyncio.sleep(0)  # it has handed its item in; the batch starts on the next turn
    cancelled.cancel()
    await db.batch.run(INSERT, [{"v": 2}])
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    async with db.connection() as conn:
        rows = await (await conn.execute("SELECT v FROM batch_probe")).fetchall()
    assert [row["v"] for row in rows] == [2]


async def test_on_a_connection_the_statement_runs_for_one_caller(db: Database) -> None:
    async with db.transaction() as conn:
        rows = await batching.run(conn, ECHO, [{"v": 4}, {"v": 50}])
    assert [(row["ord"], row["inverse"]) for row in rows] == [(1, 25), (1, 2)]


async def test_a_call_made_as_the_last_flushers_end_is_still_run(db: Database) -> None:
    """Both flushers of a statement finish in one turn of the loop, and in that same turn,
    before their tasks' done-callbacks ran, another caller hands in an item (under load a
    turn handles many sockets: two answers and an SSH target's end). The call must still
    be run: it waited forever, and its ``opsc run`` with it, when the flushers counted as
    busy until their done-callbacks took them out."""
    gate, both_in, at_gate = asyncio.Event(), asyncio.Event(), 0

    @contextlib.asynccontextmanager
    async def held() -> AsyncIterator[Any]:
        nonlocal at_gate
        async with db.connection() as conn:
            yield conn
        at_gate += 1
        if at_gate == 2:
            both_in.set()
        await gate.wait()  # the statement ran; its answer waits for the gate

    batcher = batching.Batcher(held)
    # The same key: two statements, so both flushers are busy at once.
    first, second = (asyncio.create_task(batcher.run(ECHO, [{"v": v}], key="same")) for v in (1, 2))
    await asyncio.wait_for(both_in.wait(), 10)

    async def late() -> list[dict[str, object]]:
        await gate.wait()  # woken after both flushers, in the same turn of the loop
        return await batcher.run(ECHO, [{"v": 4}])

    third = asyncio.create_task(late())
    await asyncio.sleep(0)  # it waits at the gate, behind the flushers
    gate.set()
    assert [r["inverse"] for r in await asyncio.wait_for(third, 10)] == [25]
    assert [(await first)[0]["v"], (await second)[0]["v"]] == [1, 2]
