"""Approval workflow at the I/O edge: decide, expire, and re-check before running.

The rules themselves live in ``approvals.py``; this module applies them inside database
transactions and records every decision, refusal and expiry as an event.
"""

from __future__ import annotations

import uuid
from typing import Any

from opsconductor import approvals
from opsconductor.approvals import ApprovalRefused, Decision, Pending
from opsconductor.db import approvals as approval_store
from opsconductor.db import assets, executions, queue
from opsconductor.db.connection import Conn, Database
from opsconductor.errors import TargetResolutionError
from opsconductor.inventory import resolve_plan
from opsconductor.plan import parse_plan
from opsconductor.plan_hash import hashed_document, plan_hash
from opsconductor.status_machine import Status

SWEEPER = "system:approval-sweep"
_SWEEP_LOCK = 5_118_830_005


async def decide(
    db: Database,
    *,
    tenant_id: str,
    execution_id: str,
    actor_id: str,
    decision: Decision,
    reviewed_hash: str | None = None,
    comment: str | None = None,
) -> dict[str, Any]:
    """Approve or reject the pending plan approval; return the execution afterwards."""
    refused: ApprovalRefused | None = None
    async with db.transaction() as conn:
        execution = await executions.get(conn, tenant_id, execution_id)
        try:
            await _decide_locked(conn, execution, actor_id, decision, reviewed_hash, comment)
        except ApprovalRefused as exc:
            refused = exc
    if refused is not None:
        # Recorded after the rollback, so the refusal stays in the audit trail.
        async with db.connection() as conn:
            await executions.append_event(
                conn,
                execution,
                "approval_refused",
                actor_id,
                {
                    "reason": refused.reason,
                    "detail": str(refused),
                    "decision": decision.value,
                    "reviewed_hash": reviewed_hash,
                },
            )
        if refused.reason == "expired":
            await expire_overdue(db)
        raise refused
    async with db.connection() as conn:
        return await executions.get(conn, tenant_id, str(execution["id"]))


async def _decide_locked(
    conn: Conn,
    execution: dict[str, Any],
    actor_id: str,
    decision: Decision,
    reviewed_hash: str | None,
    comment: str | None,
) -> None:
    approval = await approval_store.lock_open(conn, execution["id"], None)
    if approval is None:
        raise ApprovalRefused(
            "no_approval",
            f"execution {execution['id']} does not need an approval",
            conflict=True,
        )
    if approval["state"] == "pending" and execution["status"] != Status.PENDING_APPROVAL:
        raise ApprovalRefused(
            "not_pending",
            f"execution {execution['id']} is {execution['status']}",
            conflict=True,
        )
    pending = Pending(
        level=approval["level"],
        state=approval["state"],
        plan_hash=approval["plan_hash"],
        requested_by=approval["requested_by"],
        expires_at=approval["expires_at"],
        approvers_so_far=await approval_store.approvers_so_far(conn, approval["id"]),
        quorum=approval["approval_quorum"],
    )
    outcome = approvals.decide(
        pending,
        decision,
        actor_id=actor_id,
        reviewed_hash=reviewed_hash,
        now=approval["db_now"],
    )
    await approval_store.record_decision(
        conn,
        approval_id=approval["id"],
        actor_id=actor_id,
        decision=decision.value,
        plan_hash=reviewed_hash,
        comment=comment,
    )
    await executions.append_event(
        conn,
        execution,
        "approval_decision",
        actor_id,
        {
            "decision": decision.value,
            "approvals": outcome.approvals,
            "needed": outcome.needed,
            "comment": comment,
            "plan_hash": reviewed_hash,
        },
    )
    if outcome.state is None:
        return  # a quorum needs more approvers
    await approval_store.settle(
        conn,
        approval_id=approval["id"],
        state=outcome.state,
        actor_id=actor_id,
        comment=comment,
    )
    target = Status.APPROVED if outcome.state == "approved" else Status.REJECTED
    await executions.transition(
        conn,
        execution["id"],
        Status.PENDING_APPROVAL,
        target,
        actor_id=actor_id,
        reason=comment if target is Status.REJECTED else None,
    )
    if target is Status.APPROVED and execution["mode"] == "background":
        await queue.enqueue_approved(conn, execution, actor_id)


async def expire_overdue(db: Database) -> int:
    """Expire overdue approvals and cancel what waited on them. Safe to call from every
    process: a transaction-level advisory lock lets one sweep run at a time."""
    async with db.transaction() as conn:
        cur = await conn.execute("SELECT pg_try_advisory_xact_lock(%s) AS got", (_SWEEP_LOCK,))
        row = await cur.fetchone()
        if row is None or not row["got"]:
            return 0
        expired = await approval_store.expire_overdue(conn)
        for item in expired:
            if item["status"] == Status.PENDING_APPROVAL:
                await executions.transition(
                    conn,
                    item["execution_id"],
                    Status.PENDING_APPROVAL,
                    Status.CANCELLED,
                    actor_id=SWEEPER,
                    reason="approval_expired",
                )
    return len(expired)


async def still_valid(db: Database, execution: dict[str, Any], actor_id: str) -> Status | None:
    """Before an approved execution runs: does the plan still resolve to what was approved?

    Returns None if so. Otherwise the approval no longer matches: per tenant setting the
    execution goes back to ``pending_approval`` (with a fresh request bound to the new hash)
    or ends ``cancelled``; the new status is returned.
    """
    plan = parse_plan(execution["plan_snapshot"]["plan"])
    tenant_id = execution["tenant_id"]
    async with db.connection() as conn:
        inventory = await assets.list_all(conn, tenant_id)
    try:
        targets = resolve_plan(plan, inventory)
        new_hash = plan_hash(plan, targets)
        why = "the resolved target set changed"
    except TargetResolutionError as exc:
        targets, new_hash, why = [], "", f"targets no longer resolve: {exc}"
    if new_hash == execution["plan_hash"]:
        return None
    return await _invalidate(
        db, execution, plan_targets=targets, new_hash=new_hash, why=why, actor_id=actor_id
    )


async def _invalidate(
    db: Database,
    execution: dict[str, Any],
    *,
    plan_targets: Any,
    new_hash: str,
    why: str,
    actor_id: str,
) -> Status:
    execution_id = uuid.UUID(str(execution["id"]))
    current = Status(execution["status"])
    async with db.transaction() as conn:
        settings = await approval_store.tenant_settings(conn, execution["tenant_id"])
        reapprove = settings["on_approval_invalidated"] == "reapprove" and new_hash != ""
        payload = {
            "old_plan_hash": execution["plan_hash"],
            "new_plan_hash": new_hash or None,
            "why": why,
        }
        await executions.append_event(conn, execution, "approval_invalidated", actor_id, payload)
        if not reapprove:
            await executions.transition(
                conn,
                execution_id,
                current,
                Status.CANCELLED,
                actor_id=actor_id,
                reason="approval_invalidated",
            )
            return Status.CANCELLED
        plan = parse_plan(execution["plan_snapshot"]["plan"])
        await approval_store.replace_plan(
            conn, execution_id, hashed_document(plan, plan_targets), new_hash
        )
        await approval_store.request(
            conn,
            execution_id=execution_id,
            tenant_id=execution["tenant_id"],
            level=execution["approval_level"],
            plan_hash=new_hash,
            requested_by=execution["actor_id"],
        )
        await executions.transition(
            conn,
            execution_id,
            current,
            Status.PENDING_APPROVAL,
            actor_id=actor_id,
            reason=f"approval invalidated: {why}",
        )
    return Status.PENDING_APPROVAL
