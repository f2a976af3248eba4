"""Versioned migrations, applied in order, each in a transaction, under an advisory lock.

A fresh database receives ``schema.sql`` whole and is recorded at the newest version; an
older one receives the missing files from ``sql/migrations/``. The advisory lock makes two
processes migrating at once take turns: the second finds the work already done.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

from opsconductor.db.connection import Conn, Database

# Any constant works; it only has to be the same in every process.
_LOCK_KEY = 5_118_830_001

_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def available() -> list[Migration]:
    folder = resources.files("opsconductor.db").joinpath("sql", "migrations")
    found = []
    for entry in folder.iterdir():
        match = _FILE.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text()))
    return sorted(found, key=lambda m: m.version)


def schema_sql() -> str:
    return resources.files("opsconductor.db").joinpath("sql", "schema.sql").read_text()


_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS public.opsc_migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)"""


async def migrate(db: Database, *, use_schema_for_fresh: bool = True) -> list[str]:
    """Bring the database to the newest version; return the names of what was applied."""
    migrations = available()
    applied_now: list[str] = []
    async with db.connection() as conn:
        await conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            await conn.execute(_CREATE_TABLE)
            cur = await conn.execute("SELECT version FROM public.opsc_migrations")
            done = {row["version"] for row in await cur.fetchall()}
            if not done and use_schema_for_fresh:
                async with conn.transaction():
                    await conn.execute(schema_sql().encode())
                    for m in migrations:
                        await _record(conn, m)
                return ["schema"]
            for m in migrations:
                if m.version in done:
                    continue
                async with conn.transaction():
                    await conn.execute(m.sql.encode())
                    await _record(conn, m)
                applied_now.append(f"{m.version:04d}_{m.name}")
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied_now


async def pending(db: Database) -> list[Migration]:
    async with db.connection() as conn:
        cur = await conn.execute("SELECT to_regclass('public.opsc_migrations') AS t")
        row = await cur.fetchone()
        if row is None or row["t"] is None:
            return available()
        cur = await conn.execute("SELECT version FROM public.opsc_migrations")
        done = {r["version"] for r in await cur.fetchall()}
    return [m for m in available() if m.version not in done]


async def _record(conn: Conn, m: Migration) -> None:
    await conn.execute(
        "INSERT INTO public.opsc_migrations (version, name) VALUES (%s, %s)", (m.version, m.name)
    )
