"""Storage of approval requests and decisions."""

from __future__ import annotations

import uuid
from typing import Any

from psycopg.types.json import Jsonb

from opsconductor.db import queries
from opsconductor.db.connection import Conn

Q = queries.load("approvals")
Row = dict[str, Any]


async def request(
    conn: Conn,
    *,
    execution_id: uuid.UUID,
    tenant_id: str,
    level: int,
    plan_hash: str,
    requested_by: str,
    step_index: int | None = None,
) -> Row:
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
    return row


async def lock_open(conn: Conn, execution_id: uuid.UUID, step_index: int | None) -> Row | None:
    """The newest approval of the execution (or step), locked until the transaction ends."""
    cur = await conn.execute(
        Q["lock_open_approval"], {"execution_id": execution_id, "step_index": step_index}
    )
    return await cur.fetchone()


async def approvers_so_far(conn: Conn, approval_id: int) -> list[str]:
    cur = await conn.execute(Q["approvers_so_far"], {"approval_id": approval_id})
    return [row["actor_id"] for row in await cur.fetchall()]


async def record_decision(
    conn: Conn,
    *,
    approval_id: int,
    actor_id: str,
    decision: str,
    plan_hash: str | None,
    comment: str | None,
) -> None:
    await conn.execute(
        Q["insert_decision"],
        {
            "approval_id": approval_id,
            "actor_id": actor_id,
            "decision": decision,
            "plan_hash": plan_hash,
            "comment": comment,
        },
    )


async def settle(
    conn: Conn, *, approval_id: int, state: str, actor_id: str, comment: str | None
) -> None:
    await conn.execute(
        Q["settle_approval"],
        {"approval_id": approval_id, "state": state, "actor_id": actor_id, "comment": comment},
    )


async def expire_overdue(conn: Conn) -> list[Row]:
    cur = await conn.execute(Q["expire_overdue"])
    return await cur.fetchall()


async def history(conn: Conn, execution_id: uuid.UUID) -> list[Row]:
    cur = await conn.execute(Q["history"], {"execution_id": execution_id})
    return await cur.fetchall()


async def tenant_settings(conn: Conn, tenant_id: str) -> Row:
    cur = await conn.execute(Q["tenant_settings"], {"tenant_id": tenant_id})
    row = await cur.fetchone()
    assert row is not None
    return row


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
