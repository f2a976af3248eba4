"""Storage of approval requests and decisions."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb

from opsconductor.approvals import Decision
from opsconductor.db import queries
from opsconductor.db.connection import Conn
from opsconductor.records import ApprovalRequest, ApprovalState, OnInvalidated, parse
from opsconductor.status_machine import Status

Q = queries.load("approvals")


@dataclass(frozen=True)
class Locked:
    """The newest approval request of an execution (or step), locked, with what deciding
    on it needs: the tenant's quorum and the database's clock (one clock for expiry)."""

    request: ApprovalRequest
    quorum: int
    db_now: datetime


@dataclass(frozen=True)
class Expired:
    """An approval the sweep just expired, and the status of what waited on it."""

    id: int
    execution_id: uuid.UUID
    step_index: int | None
    tenant_id: str
    status: Status


@dataclass(frozen=True)
class Settings:
    """A tenant's approval settings."""

    quorum: int
    windows_s: list[int]
    on_invalidated: OnInvalidated


async def request(
    conn: Conn,
    *,
    execution_id: uuid.UUID,
    tenant_id: str,
    level: int,
    plan_hash: str,
    requested_by: str,
    step_index: int | None = None,
) -> ApprovalRequest:
    cur = await conn.execute(
        Q["insert_approval"],
        {
            "execution_id": execution_id,
            "tenant_id": tenant_id,
            "step_index": step_index,
            "level": level,
            "plan_hash": plan_hash,
            "requested_by": requested_by,
        },
    )
    row = await cur.fetchone()
    assert row is not None, "tenant row exists for every execution"
    return ApprovalRequest.from_row(row)


async def lock_open(conn: Conn, execution_id: uuid.UUID, step_index: int | None) -> Locked | None:
    """The newest approval of the execution (or step), locked until the transaction ends."""
    cur = await conn.execute(
        Q["lock_open_approval"], {"execution_id": execution_id, "step_index": step_index}
    )
    row = await cur.fetchone()
    if row is None:
        return None
    return Locked(ApprovalRequest.from_row(row), int(row["approval_quorum"]), row["db_now"])


async def approvers_so_far(conn: Conn, approval_id: int) -> list[str]:
    cur = await conn.execute(Q["approvers_so_far"], {"approval_id": approval_id})
    return [row["actor_id"] for row in await cur.fetchall()]


async def record_decision(
    conn: Conn,
    *,
    approval_id: int,
    actor_id: str,
    decision: Decision,
    plan_hash: str | None,
    comment: str | None,
) -> None:
    await conn.execute(
        Q["insert_decision"],
        {
            "approval_id": approval_id,
            "actor_id": actor_id,
            "decision": decision.value,
            "plan_hash": plan_hash,
            "comment": comment,
        },
    )


async def settle(
    conn: Conn, *, approval_id: int, state: ApprovalState, actor_id: str, comment: str | None
) -> None:
    await conn.execute(
        Q["settle_approval"],
        {
            "approval_id": approval_id,
            "state": state.value,
            "actor_id": actor_id,
            "comment": comment,
        },
    )


async def expire_overdue(conn: Conn) -> list[Expired]:
    cur = await conn.execute(Q["expire_overdue"])
    return [
        Expired(
            id=row["id"],
            execution_id=row["execution_id"],
            step_index=row["step_index"],
            tenant_id=row["tenant_id"],
            status=parse(Status, row["status"], "executions.status"),
        )
        for row in await cur.fetchall()
    ]


async def history(conn: Conn, execution_id: uuid.UUID) -> list[ApprovalRequest]:
    """Every approval request of the execution, oldest first, with its decisions."""
    cur = await conn.execute(Q["history"], {"execution_id": execution_id})
    return [ApprovalRequest.from_row(row) for row in await cur.fetchall()]


async def waiting(conn: Conn, tenant_id: str, limit: int = 100) -> list[ApprovalRequest]:
    """The tenant's open approvals, soonest to expire first (decisions not read)."""
    cur = await conn.execute(Q["waiting"], {"tenant_id": tenant_id, "limit": limit})
    return [ApprovalRequest.from_row(row) for row in await cur.fetchall()]


async def tenant_settings(conn: Conn, tenant_id: str) -> Settings:
    cur = await conn.execute(Q["tenant_settings"], {"tenant_id": tenant_id})
    row = await cur.fetchone()
    assert row is not None
    return Settings(
        quorum=int(row["approval_quorum"]),
        windows_s=list(row["approval_windows_s"]),
        on_invalidated=parse(
            OnInvalidated, row["on_approval_invalidated"], "tenants.on_approval_invalidated"
        ),
    )


async def replace_plan(conn: Conn, execution_id: uuid.UUID, snapshot: Any, plan_hash: str) -> None:
    await conn.execute(
        Q["replace_plan"],
        {"id": execution_id, "plan_snapshot": Jsonb(snapshot), "plan_hash": plan_hash},
    )


async def await_step(conn: Conn, execution_id: uuid.UUID, step_index: int) -> None:
    await conn.execute(Q["await_step"], {"execution_id": execution_id, "step_index": step_index})


async def release_step(conn: Conn, execution_id: uuid.UUID, step_index: int) -> None:
    await conn.execute(Q["release_step"], {"execution_id": execution_id, "step_index": step_index})


async def extend_timeout(conn: Conn, execution_id: uuid.UUID, waiting_since: Any) -> None:
    await conn.execute(
        Q["extend_timeout"], {"execution_id": execution_id, "waiting_since": waiting_since}
    )


async def skip_awaiting(conn: Conn, execution_id: uuid.UUID) -> None:
    await conn.execute(Q["skip_awaiting"], {"execution_id": execution_id})


async def try_sweep_lock(conn: Conn, key: int) -> bool:
    """One expiry sweep at a time across every process: a transaction-level advisory lock."""
    cur = await conn.execute(Q["try_sweep_lock"], {"key": key})
    row = await cur.fetchone()
    return bool(row and row["got"])
