"""Target selection in SQL (db/assets.py ``matching``) chooses exactly what the pure rule
(inventory.select) chooses, and uses indexes: its cost follows the matches, not the
inventory's size."""

from __future__ import annotations

import json

import pytest

from opsconductor.db import assets
from opsconductor.db.connection import Database
from opsconductor.inventory import Asset, resolve_plan, resolve_selected, select, selectors
from opsconductor.plan import Targets, parse_plan

INVENTORY = [
    Asset("web-2", "web2.example", "10.0.0.2", "staging", tags={"role": "web", "tier": "a"}),
    Asset("web-1", "web1.example", "10.0.0.1", "staging", tags={"role": "web", "tier": "b"}),
    Asset("Web-3", "web3.example", "10.0.0.3", "prod", tags={"role": "web"}),
    Asset("web-9", "web9.example", "10.0.0.9", "prod", tags={"role": "web", "x": "1"}),
    Asset("db-1", "db1.example", "10.0.1.1", "staging", tags={"role": "db"}),
    Asset("bastion", "bastion", "10.0.9.9", "prod", connection_type="ssh"),
]

SELECTORS = [
    {"tags": {"role": "web"}},
    {"tags": {"role": "web"}, "environment": "staging"},
    {"tags": {"role": "web", "tier": "a"}},
    {"tags": {"role": "nope"}},
    {"hostnames": ["db1.example", "web9.example", "missing"]},
    {"assets": ["web-2", "db-1", "nope"]},
    {"environment": "prod", "assets": ["web-1"]},
    {"environment": "prod"},
    {"assets": ["Web-3", "web-1"], "hostnames": ["web3.example"]},
]


async def _seed(db: Database, tenant: str, inventory: list[Asset]) -> None:
    async with db.connection() as conn:
        await assets.ensure_tenant(conn, tenant)
        for asset in inventory:
            await assets.add(conn, tenant, asset)


async def test_sql_selection_matches_the_pure_rule(db: Database) -> None:
    await _seed(db, "t1", INVENTORY)
    # Another tenant's look-alike must never be chosen.
    await _seed(
        db, "t2", [Asset("web-1", "web1.example", "10.9.9.9", "staging", tags={"role": "web"})]
    )
    wanted = {json.dumps(s): Targets.model_validate(s) for s in SELECTORS}
    async with db.connection() as conn:
        found = await assets.matching(conn, "t1", wanted)
    for key, selector in wanted.items():
        got = sorted(found[key], key=lambda a: a.asset_id)
        assert got == select(selector, INVENTORY), key


async def test_a_plan_resolves_alike_from_sql_and_from_the_whole_inventory(db: Database) -> None:
    await _seed(db, "t1", INVENTORY)
    plan = parse_plan(
        {
            "name": "p",
            "steps": [
                {"name": "a", "type": "noop", "targets": {"tags": {"role": "web"}}},
                {"name": "b", "type": "noop", "targets": {"environment": "staging"}},
                {"name": "c", "type": "noop", "targets": {"tags": {"role": "web"}}},
            ],
        }
    )
    async with db.connection() as conn:
        matched = await assets.matching(conn, "t1", selectors(plan))
    assert len(matched) == 2  # two distinct selectors, looked up once each
    assert resolve_selected(plan, matched) == resolve_plan(plan, INVENTORY)


@pytest.mark.parametrize(
    ("selector", "index"),
    [
        ({"assets": ["host-77"]}, "assets_pkey"),
        ({"hostnames": ["host-77.example"]}, "assets_tenant_id_hostname_key"),
        ({"environment": "rare"}, "assets_environment_idx"),
        ({"tags": {"role": "r7"}}, "assets_tags_idx"),
    ],
)
async def test_selection_uses_an_index(
    db: Database, selector: dict[str, object], index: str
) -> None:
    async with db.connection() as conn:
        await assets.ensure_tenant(conn, "t1")
        await conn.execute(
            "INSERT INTO execution.assets"
            " (tenant_id, asset_id, hostname, address, environment, tags)"
            " SELECT 't1', 'host-' || g, 'host-' || g || '.example', '10.0.0.1',"
            " CASE WHEN g = 5 THEN 'rare' ELSE 'dev' END, jsonb_build_object('role', 'r' || g)"
            " FROM generate_series(1, 20000) g"
        )
        await conn.execute("ANALYZE execution.assets")
        targets = Targets.model_validate(selector)
        cur = await conn.execute(
            b"EXPLAIN (FORMAT JSON) " + assets.Q["select_targets"].encode(),
            assets.selection_params("t1", targets),
            prepare=False,
        )
        row = await cur.fetchone()
        assert row is not None
    plan_text = json.dumps(next(iter(row.values())))
    assert index in plan_text, plan_text
    assert "Seq Scan" not in plan_text, plan_text
