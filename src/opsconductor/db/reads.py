"""Read side for the API: filtered executions paged by keyset cursor, tenant statistics."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from opsconductor.db import queries
from opsconductor.db.connection import Conn
from opsconductor.progress import Observed
from opsconductor.records import Execution
from opsconductor.status_machine import Status

Q = queries.load("reads")


@dataclass(frozen=True)
class Cursor:
    """Position after the last row of a page: (created_at, id) in descending order."""

    created_at: datetime
    id: uuid.UUID


@dataclass(frozen=True)
class Filters:
    status: Status | None = None
    actor_id: str | None = None
    since: datetime | None = None


async def page_executions(
    conn: Conn, tenant_id: str, filters: Filters, *, limit: int, after: Cursor | None
) -> tuple[list[Execution], Cursor | None]:
    """One page, newest first, and the cursor of the next page (None on the last one)."""
    cur = await conn.execute(
        Q["page_executions"],
        {
            "tenant_id": tenant_id,
            "status": None if filters.status is None else filters.status.value,
            "actor_id": filters.actor_id,
            "since": filters.since,
            "after_at": after.created_at if after else None,
            "after_id": after.id if after else None,
            "limit": limit + 1,  # one more tells whether another page exists
        },
    )
    found = [Execution.from_row(row) for row in await cur.fetchall()]
    if len(found) <= limit:
        return found, None
    last = found[limit - 1]
    return found[:limit], Cursor(last.created_at, last.id)


async def executions_by_id(
    conn: Conn, tenant_id: str, ids: list[uuid.UUID]
) -> dict[uuid.UUID, Execution]:
    cur = await conn.execute(Q["executions_by_id"], {"tenant_id": tenant_id, "ids": ids})
    return {e.id: e for e in (Execution.from_row(row) for row in await cur.fetchall())}


async def previous_run(conn: Conn, execution: Execution) -> Execution | None:
    """The newest execution of the same plan name in the tenant before ``execution``."""
    cur = await conn.execute(
        Q["previous_run"],
        {
            "tenant_id": execution.tenant_id,
            "plan_name": execution.plan_name,
            "before": execution.created_at,
            "id": execution.id,
        },
    )
    row = await cur.fetchone()
    return None if row is None else Execution.from_row(row)


async def previous_job_run(conn: Conn, execution: Execution) -> Execution | None:
    """The newest run of the same job in the tenant before ``execution`` (None for an
    execution not started from a job)."""
    if execution.job_name is None:
        return None
    cur = await conn.execute(
        Q["previous_job_run"],
        {
            "tenant_id": execution.tenant_id,
            "job_name": execution.job_name,
            "before": execution.created_at,
            "id": execution.id,
        },
    )
    row = await cur.fetchone()
    return None if row is None else Execution.from_row(row)


@dataclass(frozen=True)
class Stats:
    by_status: dict[str, int]
    queue_waiting: int
    queue_leased: int
    dlq_open: int


async def stats(conn: Conn, tenant_id: str) -> Stats:
    params = {"tenant_id": tenant_id}
    cur = await conn.execute(Q["counts_by_status"], params)
    by_status = {row["status"]: int(row["n"]) for row in await cur.fetchall()}
    cur = await conn.execute(Q["queue_depth"], params)
    queue = await cur.fetchone() or {"waiting": 0, "leased": 0}
    cur = await conn.execute(Q["dlq_open"], params)
    dlq = await cur.fetchone() or {"n": 0}
    return Stats(by_status, int(queue["waiting"]), int(queue["leased"]), int(dlq["n"]))


async def step_history(
    conn: Conn, tenant_id: str, step_keys: list[str], sample: int = 200
) -> dict[str, Observed]:
    """Median seconds and sample count per step key over its last ``sample`` finished
    attempts in the tenant (keys never run are absent)."""
    if not step_keys:
        return {}
    cur = await conn.execute(
        Q["step_history"],
        {"tenant_id": tenant_id, "step_keys": sorted(set(step_keys)), "sample": sample},
    )
    return {
        row["step_key"]: Observed(float(row["p50"]), int(row["n"])) for row in await cur.fetchall()
    }
