"""Approval workflow at the I/O edge: decide, expire, and re-check before running.

The rules themselves live in ``approvals.py``; this module applies them inside database
transactions and records every decision, refusal and expiry as an event.
"""

from __future__ import annotations

import uuid
from typing import Any

from opsconductor import approvals, pushed_files
from opsconductor.approvals import ApprovalRefused, ApprovalState, Decision, Pending
from opsconductor.config import load_settings
from opsconductor.connectors import tenant_files
from opsconductor.db import approval_requests, assets, executions, queue
from opsconductor.db.connection import Conn, Database
from opsconductor.errors import BadInput, TargetResolutionError
from opsconductor.inventory import resolve_selected, selectors
from opsconductor.plan import parse_plan
from opsconductor.plan_hash import hashed_document, plan_hash
from opsconductor.records import ApprovalRequest, Execution, Mode, OnInvalidated
from opsconductor.status_machine import Status
from opsconductor.template_check import shown_params

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
    step_index: int | None = None,
) -> Execution:
    """Approve or reject the pending approval of the plan, or (level 3) of one step;
    return the execution afterwards."""
    refused: ApprovalRefused | None = None
    async with db.transaction() as conn:
        execution = await executions.get(conn, tenant_id, execution_id)
        try:
            await _decide_locked(
                conn, execution, actor_id, decision, reviewed_hash, comment, step_index
            )
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
                    "step_index": step_index,
                },
            )
        if refused.reason == "expired":
            await expire_overdue(db)
        raise refused
    async with db.connection() as conn:
        return await executions.get(conn, tenant_id, str(execution.id))


async def _decide_locked(
    conn: Conn,
    execution: Execution,
    actor_id: str,
    decision: Decision,
    reviewed_hash: str | None,
    comment: str | None,
    step_index: int | None,
) -> None:
    locked = await approval_requests.lock_open(conn, execution.id, step_index)
    if locked is None:
        what = "an approval" if step_index is None else f"an approval of step {step_index}"
        raise ApprovalRefused(
            "no_approval",
            f"execution {execution.id} does not wait for {what}",
            conflict=True,
        )
    approval = locked.request
    waits_in = Status.PENDING_APPROVAL if step_index is None else Status.RUNNING
    if approval.state is ApprovalState.PENDING and execution.status is not waits_in:
        raise ApprovalRefused(
            "not_pending",
            f"execution {execution.id} is {execution.status}",
            conflict=True,
        )
    pending = Pending(
        level=approval.level,
        state=approval.state,
        plan_hash=approval.plan_hash,
        requested_by=approval.requested_by,
        expires_at=approval.expires_at,
        approvers_so_far=await approval_requests.approvers_so_far(conn, approval.id),
        quorum=locked.quorum,
    )
    outcome = approvals.decide(
        pending,
        decision,
        actor_id=actor_id,
        reviewed_hash=reviewed_hash,
        now=locked.db_now,
    )
    await approval_requests.record_decision(
        conn,
        approval_id=approval.id,
        actor_id=actor_id,
        decision=decision,
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
            "step_index": step_index,
        },
    )
    if outcome.state is None:
        return  # a quorum needs more approvers
    await approval_requests.settle(
        conn,
        approval_id=approval.id,
        state=outcome.state,
        actor_id=actor_id,
        comment=comment,
    )
    if step_index is not None:
        await _settle_step(conn, execution, approval, outcome.state, actor_id, comment)
        return
    target = Status.APPROVED if outcome.state is ApprovalState.APPROVED else Status.REJECTED
    await executions.transition(
        conn,
        execution.id,
        Status.PENDING_APPROVAL,
        target,
        actor_id=actor_id,
        reason=comment if target is Status.REJECTED else None,
    )
    if target is Status.APPROVED and execution.mode is Mode.BACKGROUND:
        await queue.enqueue_approved(conn, execution, actor_id)


async def _settle_step(
    conn: Conn,
    execution: Execution,
    approval: ApprovalRequest,
    state: ApprovalState,
    actor_id: str,
    comment: str | None,
) -> None:
    """A parked level 3 execution: wake it for the approved step, or end it."""
    assert approval.step_index is not None, "a step's approval names its step"
    step_index = approval.step_index
    if state is ApprovalState.APPROVED:
        await approval_requests.release_step(conn, execution.id, step_index)
        await approval_requests.extend_timeout(conn, execution.id, approval.created_at)
        await queue.unpark(conn, execution.id)
        return
    why = f"step {step_index} rejected by {actor_id}" + (f": {comment}" if comment else "")
    await _end_parked(conn, execution.id, actor_id, why)


async def _end_parked(conn: Conn, execution_id: uuid.UUID, actor_id: str, reason: str) -> None:
    """No worker holds a parked execution: end it here (its queue row goes with it)."""
    await queue.drop_parked(conn, execution_id)
    await approval_requests.skip_awaiting(conn, execution_id)
    await executions.transition(
        conn, execution_id, Status.RUNNING, Status.CANCELLED, actor_id=actor_id, reason=reason
    )


async def step_gate(db: Database, execution: Execution, step_index: int, actor_id: str) -> str:
    """Before step ``step_index`` of a level 3 execution: ``"go"`` if a person approved it,
    else ``"wait"`` (the request is made on first call and the step marked
    ``awaiting_approval``); a rejected or expired step has already ended the execution."""
    async with db.transaction() as conn:
        locked = await approval_requests.lock_open(conn, execution.id, step_index)
        if locked is not None and locked.request.state is ApprovalState.APPROVED:
            return "go"
        if locked is not None:
            return "wait"
        await approval_requests.request(
            conn,
            execution_id=execution.id,
            tenant_id=execution.tenant_id,
            level=3,
            plan_hash=execution.plan_hash,
            requested_by=execution.actor_id,
            step_index=step_index,
        )
        await approval_requests.await_step(conn, execution.id, step_index)
        await executions.append_event(
            conn, execution, "step_approval_requested", actor_id, {"step_index": step_index}
        )
    return "wait"


async def expire_overdue(db: Database) -> int:
    """Expire overdue approvals and cancel what waited on them. Safe to call from every
    process: a transaction-level advisory lock lets one sweep run at a time."""
    async with db.transaction() as conn:
        if not await approval_requests.try_sweep_lock(conn, _SWEEP_LOCK):
            return 0
        expired = await approval_requests.expire_overdue(conn)
        for item in expired:
            if item.step_index is not None and item.status is Status.RUNNING:
                await _end_parked(conn, item.execution_id, SWEEPER, "approval_expired")
            elif item.status is Status.PENDING_APPROVAL:
                await executions.transition(
                    conn,
                    item.execution_id,
                    Status.PENDING_APPROVAL,
                    Status.CANCELLED,
                    actor_id=SWEEPER,
                    reason="approval_expired",
                )
    return len(expired)


async def still_valid(db: Database, execution: Execution, actor_id: str) -> Status | None:
    """Before an approved execution runs: does the plan still resolve to what was approved
    (the same targets, the same bytes in every pushed file)?

    Returns None if so. Otherwise the approval no longer matches: per tenant setting the
    execution goes back to ``pending_approval`` (with a fresh request bound to the new hash)
    or ends ``cancelled``; the new status is returned.
    """
    snapshot = execution.plan_snapshot
    plan = parse_plan(snapshot["plan"])
    tenant_id = execution.tenant_id
    async with db.connection() as conn:  # by index, as at submission: not the inventory
        matched = await assets.matching(conn, tenant_id, selectors(plan))
    files: pushed_files.Digests = {}
    try:
        targets = resolve_selected(plan, matched)
        # A pushed file is read again, exactly as at submission: edited bytes are a new plan.
        root = load_settings().files_root
        values = snapshot.get("params")
        shown = shown_params(plan, values or {}, secrets=None)
        resolve = tenant_files.resolver(tenant_id, root)
        files = await pushed_files.take_async(plan, targets, resolve, shown)
        new_hash = plan_hash(plan, targets, files, values)
    except TargetResolutionError as exc:
        targets, new_hash, why = [], "", f"targets no longer resolve: {exc}"
    except BadInput as exc:  # a pushed file that cannot be read (or named) any more
        targets, new_hash, why = [], "", str(exc)
    if new_hash == execution.plan_hash:
        return None
    if new_hash:
        reasons = pushed_files.differences(pushed_files.from_snapshot(snapshot), files, plan)
        if [sorted(a.asset_id for a in step) for step in targets] != snapshot["targets"]:
            reasons.append("the resolved target set changed")
        why = "; ".join(reasons) or "what the plan resolves to changed since it was approved"
    return await _invalidate(
        db,
        execution,
        plan_targets=targets,
        files=files,
        new_hash=new_hash,
        why=why,
        actor_id=actor_id,
    )


async def _invalidate(
    db: Database,
    execution: Execution,
    *,
    plan_targets: Any,
    files: pushed_files.Digests,
    new_hash: str,
    why: str,
    actor_id: str,
) -> Status:
    execution_id, current = execution.id, execution.status
    async with db.transaction() as conn:
        settings = await approval_requests.tenant_settings(conn, execution.tenant_id)
        reapprove = settings.on_invalidated is OnInvalidated.REAPPROVE and new_hash != ""
        payload = {
            "old_plan_hash": execution.plan_hash,
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
        plan = parse_plan(execution.plan_snapshot["plan"])
        await approval_requests.replace_plan(
            conn,
            execution_id,
            hashed_document(plan, plan_targets, files, execution.plan_snapshot.get("params")),
            new_hash,
        )
        await approval_requests.request(
            conn,
            execution_id=execution_id,
            tenant_id=execution.tenant_id,
            level=execution.approval_level,
            plan_hash=new_hash,
            requested_by=execution.actor_id,
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
