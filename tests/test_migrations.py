"""Migrations: the schema file and the migration chain agree; concurrent runs are safe."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from opsconductor.db import migrations
from opsconductor.db.connection import Database
from tests.conftest import with_dbname

CATALOG_QUERIES = {
    "columns": """
        SELECT table_name, column_name, data_type, udt_name, is_nullable, column_default
        FROM information_schema.columns WHERE table_schema = 'execution'""",
    "constraints": """
        SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)
        FROM pg_constraint WHERE connamespace = 'execution'::regnamespace""",
    "indexes": "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'execution'",
    "enums": """
        SELECT t.typname, e.enumlabel, e.enumsortorder FROM pg_enum e
        JOIN pg_type t ON t.oid = e.enumtypid
        WHERE t.typnamespace = 'execution'::regnamespace""",
    "triggers": """
        SELECT tgrelid::regclass::text, tgname, pg_get_triggerdef(oid) FROM pg_trigger
        WHERE NOT tgisinternal AND tgrelid::regclass::text LIKE 'execution.%'""",
    "functions": """
        SELECT proname, pg_get_functiondef(oid) FROM pg_proc
        WHERE pronamespace = 'execution'::regnamespace""",
    "policies": "SELECT * FROM execution.timeout_policies",
    "tenants": "SELECT tenant_id FROM execution.tenants",
    "assets": "SELECT tenant_id, asset_id, connection_type FROM execution.assets",
    "versions": "SELECT version, name FROM public.opsc_migrations",
}


@pytest.fixture
def empty_urls(pg_server: str) -> Iterator[list[str]]:
    names = [f"opsc_m_{uuid.uuid4().hex[:10]}" for _ in range(2)]
    with psycopg.connect(pg_server, autocommit=True) as admin:
        for name in names:
            admin.execute(f'CREATE DATABASE "{name}"')
    yield [with_dbname(pg_server, n) for n in names]
    with psycopg.connect(pg_server, autocommit=True) as admin:
        for name in names:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _catalog(url: str) -> dict[str, Any]:
    with psycopg.connect(url) as conn:
        return {
            k: sorted(map(repr, conn.execute(q).fetchall())) for k, q in CATALOG_QUERIES.items()
        }


async def test_schema_file_and_migration_chain_build_the_same_database(
    empty_urls: list[str],
) -> None:
    fresh, chained = empty_urls
    async with Database(fresh, max_size=1) as db:
        assert await migrations.migrate(db) == ["schema"]
    async with Database(chained, max_size=1) as db:
        applied = await migrations.migrate(db, use_schema_for_fresh=False)
    assert applied == [f"{m.version:04d}_{m.name}" for m in migrations.available()]
    a, b = _catalog(fresh), _catalog(chained)
    for key in CATALOG_QUERIES:
        assert a[key] == b[key], f"{key} differ between schema.sql and the migrations"
    assert len(a["policies"]) == 9


async def test_migrating_twice_is_a_no_op(empty_urls: list[str]) -> None:
    async with Database(empty_urls[0], max_size=1) as db:
        await migrations.migrate(db)
        assert await migrations.migrate(db) == []
        assert await migrations.pending(db) == []


async def test_concurrent_migrations_take_turns(empty_urls: list[str]) -> None:
    pools = [Database(empty_urls[0], max_size=1) for _ in range(4)]
    await asyncio.gather(*(p.open() for p in pools))
    try:
        results = await asyncio.gather(*(migrations.migrate(p) for p in pools))
    finally:
        await asyncio.gather(*(p.close() for p in pools))
    assert sorted(map(tuple, results)) == [(), (), (), ("schema",)]
    with psycopg.connect(empty_urls[0]) as conn:
        row = conn.execute("SELECT count(*) FROM execution.timeout_policies").fetchone()
    assert row == (9,)


async def test_pending_lists_everything_on_an_empty_database(empty_urls: list[str]) -> None:
    async with Database(empty_urls[1], max_size=1) as db:
        assert await migrations.pending(db) == migrations.available()
