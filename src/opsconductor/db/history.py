"""Storage for pruning old history (see sql/history.sql and services/history.py)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from opsconductor.db import queries
from opsconductor.db.connection import Conn

Q = queries.load("history")


class Kind(StrEnum):
    """What one exported line holds; the order children are deleted in (executions last)."""

    APPROVAL_DECISION = "approval_decision"
    APPROVAL = "approval"
    STEP_ATTEMPT = "step_attempt"
    EVENT = "event"
    DEAD_LETTER = "dead_letter"
    QUEUE_ENTRY = "queue_entry"
    LOCK = "lock"
    EXECUTION = "execution"


_DELETE = {
    Kind.APPROVAL_DECISION: "delete_approval_decisions",
    Kind.APPROVAL: "delete_approvals",
    Kind.STEP_ATTEMPT: "delete_steps",
    Kind.EVENT: "delete_events",
    Kind.DEAD_LETTER: "delete_dlq",
    Kind.QUEUE_ENTRY: "delete_queue",
    Kind.LOCK: "delete_locks",
    Kind.EXECUTION: "delete_executions",
}

#: Every table a DELETE of an execution would reach, each exported under a Kind.
EXPORTED_TABLES = frozenset(
    {
        "execution.approval_decisions",
        "execution.approvals",
        "execution.execution_steps",
        "execution.execution_events",
        "execution.execution_dlq",
        "execution.execution_queue",
        "execution.execution_locks",
    }
)

#: Tables whose rows outlive their execution: the link is set to NULL (ON DELETE SET NULL)
#: and the row keeps what it records on its own (a webhook delivery's time, reason and body
#: digest; a schedule's fired slot). They are pruned by their own age (Trail).
UNLINKED_TABLES = frozenset({"execution.hook_deliveries", "execution.schedule_fires"})


class Trail(StrEnum):
    """Records that outlive their execution (UNLINKED_TABLES) and are pruned by their own
    age: what one exported line of them holds."""

    HOOK_DELIVERY = "hook_delivery"
    SCHEDULE_FIRE = "schedule_fire"


_DELETE_TRAIL = {
    Trail.HOOK_DELIVERY: "delete_hook_deliveries",
    Trail.SCHEDULE_FIRE: "delete_schedule_fires",
}


@dataclass(frozen=True)
class Candidate:
    id: uuid.UUID
    created_at: datetime
    #: still referenced (retry_of) by an execution that stays: kept
    blocked: bool


async def cascading_tables(conn: Conn) -> set[str]:
    cur = await conn.execute(Q["cascading_tables"])
    return {str(r["name"]) for r in await cur.fetchall()}


async def next_batch(
    conn: Conn,
    *,
    tenant_id: str,
    before: datetime,
    terminal: list[str],
    cursor: tuple[datetime, uuid.UUID],
    size: int,
) -> list[Candidate]:
    cur = await conn.execute(
        Q["batch"],
        {
            "tenant_id": tenant_id,
            "before": before,
            "terminal": terminal,
            "cursor_at": cursor[0],
            "cursor_id": cursor[1],
            "size": size,
        },
    )
    return [Candidate(r["id"], r["created_at"], r["blocked"]) for r in await cur.fetchall()]


async def delete(conn: Conn, kind: Kind, ids: list[uuid.UUID]) -> list[dict[str, Any]]:
    """Delete the rows of ``kind`` keyed to ``ids``; return them as they were (JSON)."""
    cur = await conn.execute(Q[_DELETE[kind]], {"ids": ids})
    return [dict(r["row"]) for r in await cur.fetchall()]


async def delete_trail(
    conn: Conn, kind: Trail, tenant_id: str, before: datetime, size: int
) -> list[dict[str, Any]]:
    """Delete up to ``size`` of the tenant's ``kind`` records older than ``before``; return
    them as they were (JSON)."""
    cur = await conn.execute(
        Q[_DELETE_TRAIL[kind]], {"tenant_id": tenant_id, "before": before, "size": size}
    )
    return [dict(r["row"]) for r in await cur.fetchall()]


async def tenant_ids(conn: Conn, tenant_id: str | None) -> list[str]:
    cur = await conn.execute(Q["tenant_ids"], {"tenant_id": tenant_id})
    return [str(r["tenant_id"]) for r in await cur.fetchall()]


async def retention_days(conn: Conn, tenant_id: str | None) -> dict[str, int]:
    """Tenants that set a retention (one, or all when ``tenant_id`` is None): their days."""
    cur = await conn.execute(Q["tenants_with_retention"], {"tenant_id": tenant_id})
    return {str(r["tenant_id"]): int(r["history_retention_days"]) for r in await cur.fetchall()}


async def set_retention(conn: Conn, tenant_id: str, days: int | None) -> bool:
    cur = await conn.execute(Q["set_retention"], {"tenant_id": tenant_id, "days": days})
    return await cur.fetchone() is not None


async def get_retention(conn: Conn, tenant_id: str) -> int | None:
    cur = await conn.execute(Q["get_retention"], {"tenant_id": tenant_id})
    row = await cur.fetchone()
    return (
        None
        if row is None or row["history_retention_days"] is None
        else int(row["history_retention_days"])
    )
