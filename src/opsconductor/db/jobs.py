"""Storage of jobs and their versions."""

from __future__ import annotations

from typing import Any

from psycopg.types.json import Jsonb

from opsconductor.db import queries
from opsconductor.db.connection import Conn
from opsconductor.jobs import Job, JobSummary, JobVersion
from opsconductor.records import Execution

Q = queries.load("jobs")


def _key(tenant_id: str, name: str) -> dict[str, Any]:
    return {"tenant_id": tenant_id, "name": name}


async def lock(conn: Conn, tenant_id: str, name: str) -> Job | None:
    """The job, locked until the transaction ends: two saves of one job take turns."""
    cur = await conn.execute(Q["lock_job"], _key(tenant_id, name))
    row = await cur.fetchone()
    return None if row is None else Job.from_row(row)


async def create(conn: Conn, tenant_id: str, name: str, actor_id: str) -> Job | None:
    """A new job at version 1; None if another transaction created it first."""
    cur = await conn.execute(Q["insert_job"], {**_key(tenant_id, name), "actor_id": actor_id})
    row = await cur.fetchone()
    return None if row is None else Job.from_row(row)


async def bump(conn: Conn, tenant_id: str, name: str) -> Job:
    cur = await conn.execute(Q["bump_job"], _key(tenant_id, name))
    row = await cur.fetchone()
    assert row is not None  # locked by the caller
    return Job.from_row(row)


async def add_version(
    conn: Conn,
    tenant_id: str,
    name: str,
    version: int,
    plan: dict[str, Any],
    content_hash: str,
    actor_id: str,
) -> JobVersion:
    cur = await conn.execute(
        Q["insert_version"],
        {
            **_key(tenant_id, name),
            "version": version,
            "plan": Jsonb(plan),
            "content_hash": content_hash,
            "actor_id": actor_id,
        },
    )
    row = await cur.fetchone()
    assert row is not None
    return JobVersion.from_row(row)


async def get(conn: Conn, tenant_id: str, name: str) -> Job | None:
    cur = await conn.execute(Q["get_job"], _key(tenant_id, name))
    row = await cur.fetchone()
    return None if row is None else Job.from_row(row)


async def list_all(conn: Conn, tenant_id: str) -> list[JobSummary]:
    """Every job with its latest plan's name, its number of schedules and its latest run."""
    cur = await conn.execute(Q["list_jobs"], {"tenant_id": tenant_id})
    return [JobSummary.from_row(r) for r in await cur.fetchall()]


async def version(conn: Conn, tenant_id: str, name: str, number: int) -> JobVersion | None:
    cur = await conn.execute(Q["get_version"], {**_key(tenant_id, name), "version": number})
    row = await cur.fetchone()
    return None if row is None else JobVersion.from_row(row)


async def versions(conn: Conn, tenant_id: str, name: str) -> list[JobVersion]:
    cur = await conn.execute(Q["list_versions"], _key(tenant_id, name))
    return [JobVersion.from_row(r) for r in await cur.fetchall()]


async def delete(conn: Conn, tenant_id: str, name: str) -> bool:
    cur = await conn.execute(Q["delete_job"], _key(tenant_id, name))
    return await cur.fetchone() is not None


async def runs(conn: Conn, tenant_id: str, name: str, limit: int) -> list[Execution]:
    cur = await conn.execute(Q["job_runs"], {**_key(tenant_id, name), "limit": limit})
    return [Execution.from_row(r) for r in await cur.fetchall()]
