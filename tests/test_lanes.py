"""A Database's lanes (db/connection.py): the worker's claim runs on connections of its own,
so a server connection plans it once, not once per pooled connection."""

from __future__ import annotations

import asyncio
import uuid

from opsconductor.db import queue
from opsconductor.db.connection import Database
from opsconductor.plan import parse_plan
from opsconductor.submission import Request, submit
from tests.helpers import admin

PLAN = parse_plan(
    {"name": "p", "steps": [{"name": "a", "type": "noop", "targets": {"hostnames": ["localhost"]}}]}
)


async def _backend(db: Database, lane: str) -> int:
    async with db.lane(lane) as conn:
        row = await (await conn.execute("SELECT pg_backend_pid() AS pid")).fetchone()
    assert row is not None
    return int(row["pid"])


async def test_a_lane_keeps_its_server_connection(database_url: str) -> None:
    async with Database(database_url, max_size=4, lanes=("claim",)) as db:
        seen = {await _backend(db, "claim") for _ in range(20)}
        assert len(seen) == 1
        async with db.connection() as conn:  # the pool's connections are others
            row = await (await conn.execute("SELECT pg_backend_pid() AS pid")).fetchone()
        assert row is not None and row["pid"] not in seen


async def test_claims_run_on_the_claim_lane_not_the_pool(database_url: str) -> None:
    async with Database(database_url, max_size=1, lanes=("claim",)) as db:
        await admin(db, "alice")
        await submit(db, Request(PLAN, "default", "alice", uuid.uuid4().hex, enqueue=True))
        async with db.connection():  # the pool's only connection is taken
            leases = await asyncio.wait_for(queue.claim(db, "w", limit=5), timeout=20)
        assert len(leases) == 1


async def test_without_the_lane_a_claim_uses_the_pool(database_url: str) -> None:
    async with Database(database_url, max_size=2) as db:
        await admin(db, "alice")
        await submit(db, Request(PLAN, "default", "alice", uuid.uuid4().hex, enqueue=True))
        assert len(await queue.claim(db, "w", limit=5)) == 1
        assert await _backend(db, "claim") > 0  # lane() of an unknown name: the pool's
