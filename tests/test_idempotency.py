"""Idempotent submission, against real concurrent connections."""

from __future__ import annotations

import asyncio

from opsconductor.db.connection import Database
from opsconductor.idempotency import derive_key
from opsconductor.submission import Request, submit
from tests.plans import command_step, plan_of

PLAN = plan_of(command_step("a", "true"))


async def _end(db: Database, execution_id: object, status: str, extra: str = "") -> None:
    """End an approved execution as if it had run (through running: the database refuses
    any move its status machine does not allow)."""
    async with db.connection() as conn:
        await conn.execute(
            "UPDATE execution.executions SET status = 'running' WHERE id = %s", (execution_id,)
        )
        await conn.execute(
            f"UPDATE execution.executions SET status = %s{extra} WHERE id = %s",
            (status, execution_id),
        )


async def _count(db: Database) -> int:
    async with db.connection() as conn:
        cur = await conn.execute("SELECT count(*) AS n FROM execution.executions")
        row = await cur.fetchone()
    assert row is not None
    return int(row["n"])


def test_derived_key_depends_on_tenant_actor_and_hash() -> None:
    base = derive_key("t", "alice", "h" * 64)
    assert base == derive_key("t", "alice", "h" * 64)
    assert (
        len(
            {
                base,
                derive_key("t2", "alice", "h" * 64),
                derive_key("t", "bob", "h" * 64),
                derive_key("t", "alice", "g" * 64),
            }
        )
        == 4
    )
    # separators matter: ("ab", "c") and ("a", "bc") must not collide
    assert derive_key("ab", "c", "h") != derive_key("a", "bc", "h")


async def test_twenty_concurrent_identical_submissions_make_one_execution(
    database_url: str,
) -> None:
    # 20 pools of one connection each: 20 real sessions racing on the same key.
    pools = [Database(database_url, min_size=1, max_size=1) for _ in range(20)]
    await asyncio.gather(*(p.open() for p in pools))
    try:
        results = await asyncio.gather(
            *(submit(p, Request(PLAN, "default", "alice")) for p in pools)
        )
    finally:
        await asyncio.gather(*(p.close() for p in pools))
    assert sum(r.created for r in results) == 1
    assert len({r.execution.id for r in results}) == 1
    async with Database(database_url) as db:
        assert await _count(db) == 1
        async with db.connection() as conn:
            cur = await conn.execute(
                "SELECT count(*) AS n FROM execution.execution_events "
                "WHERE event_type = 'duplicate_submission'"
            )
            row = await cur.fetchone()
    assert row is not None and row["n"] == 19


async def test_client_key_deduplicates_even_a_different_plan(db: Database) -> None:
    first = await submit(db, Request(PLAN, "default", "alice", "deploy-42"))
    other = plan_of(command_step("b", "false"))
    second = await submit(db, Request(other, "default", "alice", "deploy-42"))
    assert first.created and not second.created
    assert second.execution.id == first.execution.id


async def test_keys_are_tenant_scoped(db: Database) -> None:
    a = await submit(db, Request(PLAN, "default", "alice", "same-key"))
    b = await submit(db, Request(PLAN, "other-tenant", "alice", "same-key"))
    assert a.created and b.created and a.execution.id != b.execution.id


async def test_failed_key_may_be_retried_and_links_to_the_old_one(db: Database) -> None:
    first = await submit(db, Request(PLAN, "default", "alice"))
    await _end(db, first.execution.id, "failed")
    retry = await submit(db, Request(PLAN, "default", "alice"))
    assert retry.created
    assert retry.retry_of == first.execution.id
    assert retry.execution.retry_of == first.execution.id
    # and the retry itself now deduplicates
    again = await submit(db, Request(PLAN, "default", "alice"))
    assert not again.created and again.execution.id == retry.execution.id


async def test_completed_key_is_not_rerun_inside_the_window(db: Database) -> None:
    first = await submit(db, Request(PLAN, "default", "alice"))
    await _end(db, first.execution.id, "completed")
    again = await submit(db, Request(PLAN, "default", "alice"))
    assert not again.created and again.execution.status == "completed"


async def test_key_is_free_again_after_the_24h_window(db: Database) -> None:
    first = await submit(db, Request(PLAN, "default", "alice"))
    await _end(db, first.execution.id, "completed", ", created_at = now() - interval '25 hours'")
    later = await submit(db, Request(PLAN, "default", "alice"))
    assert later.created and later.execution.id != first.execution.id
    assert later.retry_of is None  # not a retry of a failure, just a new run
    assert await _count(db) == 2
