"""Storage of schedules and of the slots they fired."""

from __future__ import annotations

import uuid
from datetime import datetime

from psycopg.types.json import Jsonb

from opsconductor.db import queries
from opsconductor.db.connection import Conn
from opsconductor.schedule import Fire, Schedule

Q = queries.load("schedules")


async def insert(conn: Conn, schedule: Schedule) -> Schedule | None:
    """None if the tenant already has a schedule of that name."""
    cur = await conn.execute(
        Q["insert_schedule"],
        {
            "id": schedule.id,
            "tenant_id": schedule.tenant_id,
            "name": schedule.name,
            "job_name": schedule.job_name,
            "job_version": schedule.job_version,
            "cron": schedule.cron,
            "timezone": schedule.timezone,
            "params": Jsonb(schedule.params),
            "missed": schedule.missed.value,
            "next_fire_at": schedule.next_fire_at,
            "actor_id": schedule.created_by,
        },
    )
    row = await cur.fetchone()
    return None if row is None else Schedule.from_row(row)


async def list_all(conn: Conn, tenant_id: str, name: str | None = None) -> list[Schedule]:
    cur = await conn.execute(Q["list_schedules"], {"tenant_id": tenant_id, "name": name})
    return [Schedule.from_row(r) for r in await cur.fetchall()]


async def set_paused(
    conn: Conn, tenant_id: str, name: str, paused: bool, next_fire_at: datetime | None
) -> Schedule | None:
    cur = await conn.execute(
        Q["set_paused"],
        {"tenant_id": tenant_id, "name": name, "paused": paused, "next_fire_at": next_fire_at},
    )
    row = await cur.fetchone()
    return None if row is None else Schedule.from_row(row)


async def delete(conn: Conn, tenant_id: str, name: str) -> bool:
    cur = await conn.execute(Q["delete_schedule"], {"tenant_id": tenant_id, "name": name})
    return await cur.fetchone() is not None


async def due_ids(conn: Conn, limit: int) -> list[uuid.UUID]:
    cur = await conn.execute(Q["due_ids"], {"limit": limit})
    return [r["id"] for r in await cur.fetchall()]


async def lock_due(conn: Conn, schedule_id: uuid.UUID) -> tuple[Schedule, datetime] | None:
    """The schedule if it is still due and no other worker is firing it, with the
    database's clock (every worker reads the same one)."""
    cur = await conn.execute(Q["lock_due"], {"id": schedule_id})
    row = await cur.fetchone()
    return None if row is None else (Schedule.from_row(row), row["db_now"])


async def claim_slot(
    conn: Conn, schedule_id: uuid.UUID, slot: datetime, catch_up: bool, fired_by: str | None
) -> bool:
    cur = await conn.execute(
        Q["claim_slot"],
        {"id": schedule_id, "slot": slot, "catch_up": catch_up, "fired_by": fired_by},
    )
    return await cur.fetchone() is not None


async def fire_result(
    conn: Conn,
    schedule_id: uuid.UUID,
    slot: datetime,
    *,
    execution_id: uuid.UUID | None = None,
    error: str | None = None,
) -> None:
    await conn.execute(
        Q["fire_result"],
        {"id": schedule_id, "slot": slot, "execution_id": execution_id, "error": error},
    )


async def advance(conn: Conn, schedule_id: uuid.UUID, next_fire_at: datetime) -> None:
    await conn.execute(Q["advance"], {"id": schedule_id, "next_fire_at": next_fire_at})


async def fires(conn: Conn, tenant_id: str, name: str, limit: int) -> list[Fire]:
    cur = await conn.execute(Q["fires"], {"tenant_id": tenant_id, "name": name, "limit": limit})
    return [Fire.from_row(r) for r in await cur.fetchall()]
