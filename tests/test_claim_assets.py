"""The claim reads a run's assets by their key (migration 0039), whatever the inventory's
size: one index probe per target, never a scan of the tenant's assets."""

from __future__ import annotations

import uuid

import psycopg

from opsconductor.db import assets, queue
from opsconductor.db.connection import Database
from opsconductor.inventory import Asset
from opsconductor.plan import parse_plan
from opsconductor.submission import Request, submit
from tests.helpers import explain_plans

INVENTORY = 300


async def test_the_claim_probes_a_runs_assets_by_key(db: Database, database_url: str) -> None:
    async with db.connection() as conn:
        await assets.ensure_tenant(conn, "default")
        for i in range(INVENTORY):
            await assets.add(
                conn, "default", Asset(f"host-{i:03d}", f"h{i}.example", "10.0.0.1", "prod")
            )
    plan = parse_plan(
        {
            "name": "p",
            "steps": [
                {"name": "a", "type": "noop", "targets": {"assets": ["host-007", "host-250"]}},
                {"name": "b", "type": "noop", "targets": {"assets": ["host-250"]}},
            ],
        }
    )
    await submit(db, Request(plan, "default", "admin", uuid.uuid4().hex, enqueue=True))
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("ANALYZE execution.assets")  # with statistics a scan was the plan
        plans = explain_plans(conn)
        rows = conn.execute(
            "SELECT (c.e).id, c.start_context FROM execution.claim_batch('w', 5, 60, 'w') c"
        ).fetchall()
    assert len(rows) == 1
    found = [a["asset_id"] for a in rows[0][1]["assets"]]
    assert found == ["host-007", "host-250"]  # each once, in id order, as before
    claim = [p for p in plans if "WITH picked AS" in p]
    assert claim, plans
    assert "Index Scan using assets_pkey on assets" in claim[0]
    assert "Seq Scan on assets" not in claim[0]
    assert "Seq Scan" not in claim[0]  # no table of the claim is read whole


async def test_a_claimed_run_is_told_of_missing_assets(db: Database) -> None:
    """A target gone from the inventory is absent from the context (the engine fails the
    run with missing_assets), not an error of the claim."""
    async with db.connection() as conn:
        await assets.ensure_tenant(conn, "default")
        await assets.add(conn, "default", Asset("here", "here.example", "10.0.0.1", "prod"))
        await assets.add(conn, "default", Asset("gone", "gone.example", "10.0.0.2", "prod"))
    plan = parse_plan(
        {
            "name": "p",
            "steps": [{"name": "a", "type": "noop", "targets": {"assets": ["here", "gone"]}}],
        }
    )
    await submit(db, Request(plan, "default", "admin", uuid.uuid4().hex, enqueue=True))
    async with db.connection() as conn:
        await conn.execute("DELETE FROM execution.assets WHERE asset_id = 'gone'")
    (lease,) = await queue.claim(db, "w", limit=5, begin_as="w")
    assert lease.context is not None
    assert sorted(lease.context.assets) == ["here"]
