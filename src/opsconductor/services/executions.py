"""Execution use cases: validate, submit, run here, read, cancel, decide, dead letters."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from opsconductor import progress as progress_of_steps
from opsconductor import rbac
from opsconductor.cancellation import CancelOutcome, request_cancel
from opsconductor.config import load_settings
from opsconductor.db import approval_requests, executions, queue, reads, steps
from opsconductor.db.connection import Database
from opsconductor.errors import Conflict, IllegalTransition, StaleStatus
from opsconductor.records import ApprovalRequest, Event, Execution, StepAttempt
from opsconductor.services.caller import Caller
from opsconductor.services.engines import build_engine, shared_engine
from opsconductor.status_machine import Status, is_terminal

# Plans (pydantic), templates (jinja2) and the engine are imported by the use cases that
# need them, so reading or cancelling from the shell starts in a fraction of a second.
if TYPE_CHECKING:
    from opsconductor import pushed_files, routing
    from opsconductor.approvals import Decision
    from opsconductor.engine import Observer
    from opsconductor.inventory import Asset
    from opsconductor.params import Value
    from opsconductor.plan import Plan


@dataclass(frozen=True)
class Validated:
    plan: Plan
    targets: list[list[Asset]]
    plan_hash: str
    #: SHA-256 of every pushed file, by step index and source: part of the hash
    files: pushed_files.Digests
    #: every declared parameter's bound value (a secret-ref: its path)
    params: dict[str, Value]
    #: how long it should take and why, the class and mode that gives, and its budget
    estimate: routing.Estimate
    route: routing.Route
    budget_s: float
    budget_why: str


@dataclass(frozen=True)
class ExecutionView:
    """One execution with everything a person reviewing it reads."""

    execution: Execution
    steps: list[StepAttempt]
    approvals: list[ApprovalRequest]


@dataclass(frozen=True)
class ProgressView:
    execution: Execution
    progress: progress_of_steps.Progress
    #: the tenant's history of the execution's steps, by step key
    history: dict[str, progress_of_steps.Observed]


async def validate(
    db: Database, who: Caller, plan: Plan, params: Mapping[str, Any] | None = None
) -> Validated:
    """Everything a submission checks, stores nothing: parameters bound, targets resolved
    against the caller's inventory, every template and ``when`` rendered on every target,
    pushed files hashed; plus the estimate, SLA class and budget it would get, and why."""
    from opsconductor import policies, pushed_files, routing
    from opsconductor.inventory import resolve_selected
    from opsconductor.params import bind
    from opsconductor.plan_hash import plan_hash
    from opsconductor.submission import check_templates, context
    from opsconductor.template_check import shown_params

    who.require("assets", "view")
    values = bind(plan.params, params)
    found = await context(db, who.tenant_id, [plan], load_settings().files_root)
    targets = resolve_selected(plan, found.matched)
    await check_templates(plan, targets, values)
    shown = shown_params(plan, values, secrets=None)
    files = await pushed_files.take_async(plan, targets, found.files, shown)  # as submitted
    history = routing.History(found.observed_steps, found.observed)
    estimate = routing.estimate(plan, targets, history)
    route = routing.classify(estimate.total_s)
    async with db.connection() as conn:
        rows = await executions.policies(conn)
    matrix = {(r["sla_class"], r["action_class"]): policies.TimeoutPolicy.from_row(r) for r in rows}
    budget, why = policies.budget_reason(plan, route.sla_class, matrix)
    digest = plan_hash(plan, targets, files, values)
    return Validated(plan, targets, digest, files, values, estimate, route, budget, why)


async def submit(
    db: Database,
    who: Caller,
    plan: Plan,
    *,
    idempotency_key: str | None = None,
    record_only: bool = False,
    enqueue: bool | None = None,
    params: Mapping[str, Any] | None = None,
) -> executions.Submitted:
    """Store (and maybe queue) a plan as the caller: ``executions:submit``, and the step's
    action class on every resolved target's environment (checked again before each step)."""
    from opsconductor.submission import Request
    from opsconductor.submission import submit as store_submission

    who.require("executions", "submit")

    def check(plan: Plan, targets: list[list[Asset]]) -> None:
        rbac.enforce_plan(who.actor_id, list(who.roles), plan, targets)

    request = Request(
        plan, who.tenant_id, who.actor_id, idempotency_key, record_only, enqueue, params
    )
    return await store_submission(db, request, check=check)


async def submit_many(
    db: Database, who: Caller, plans: list[Plan], *, record_only: bool = False
) -> list[executions.Submitted]:
    """Many plans for the workers in one request, with every check ``submit`` makes; all
    are stored or none (the first plan refused names itself as ``plans[i]``)."""
    from opsconductor.submission import Request
    from opsconductor.submission import submit_many as store_many

    who.require("executions", "submit")
    requests = [Request(p, who.tenant_id, who.actor_id, None, record_only, True) for p in plans]
    return await store_many(db, requests, check=plan_check(who))


def plan_check(who: Caller) -> Callable[[Plan, list[list[Asset]]], None]:
    """The RBAC check of every plan of one submission (``submission.PlanCheck``): the step's
    action class on every resolved target's environment, each distinct question worked
    out once for all the plans (the roles are the caller's as of this request)."""
    roles = list(who.roles)
    ask = rbac.asker(roles)

    def check(plan: Plan, targets: list[list[Asset]]) -> None:
        rbac.enforce_plan(who.actor_id, roles, plan, targets, ask)

    return check


async def rerun_failed(
    db: Database, who: Caller, execution_id: str, *, enqueue: bool | None = None
) -> executions.Submitted:
    """A new execution of a finished one's plan over only its targets that failed or never
    ran (``rerun.py`` says which, and why the whole plan runs again on each), linked to it
    through ``rerun_of``. It is a submission like any other: ``executions:submit``, RBAC
    per target, a new plan hash and so a new approval when the plan needs one."""
    from opsconductor import rerun
    from opsconductor.plan import parse_plan
    from opsconductor.submission import Request
    from opsconductor.submission import submit as store_submission

    who.require("executions", "view")
    who.require("executions", "submit")
    async with db.connection() as conn:
        old = await executions.get(conn, who.tenant_id, execution_id)
        attempts = await steps.list_for(conn, old.id)
    if not is_terminal(old.status):
        raise Conflict(
            f"execution {old.id} is {old.status}: only a finished execution can be re-run "
            "(wait for it, or cancel it first)"
        )
    if old.record_only:
        raise Conflict(
            f"execution {old.id} was record-only: it touched nothing, so nothing failed; "
            "submit its plan to run it for real"
        )
    planned: list[list[str]] = old.plan_snapshot["targets"]
    keep = rerun.targets_to_rerun(attempts, planned)
    if not keep:
        raise Conflict(
            f"execution {old.id} ({old.status}): every target completed every step; "
            "nothing failed to re-run"
        )
    plan = parse_plan(rerun.restricted_document(old.plan_snapshot["plan"], planned, keep))
    if enqueue is False and plan.approval_level == 3:
        enqueue = True  # step-by-step approval runs on the workers only (submission.prepare)

    def check(plan: Plan, targets: list[list[Asset]]) -> None:
        rbac.enforce_plan(who.actor_id, list(who.roles), plan, targets)

    request = Request(
        plan,
        who.tenant_id,
        who.actor_id,
        enqueue=enqueue,
        # the values it ran with: the same parameters, hashed and approved again
        params=old.plan_snapshot.get("params"),
        rerun_of=old.id,
    )
    return await store_submission(db, request, check=check)


async def run_here(
    db: Database, who: Caller, execution: Execution, *, observer: Observer | None = None
) -> Status | None:
    """Run an approved immediate execution in this process, as the caller. None if another
    process (a waiting ``opsc run``, a worker) started it first: the engine's
    compare-and-set decides. With an ``observer`` (the CLI's progress) the engine is the
    caller's own; else the process's shared one."""
    if observer is not None:
        engine = build_engine(db, actor_id=who.actor_id, observer=observer)
    else:
        engine = shared_engine(db)
    # Lost the race either at the compare-and-set (StaleStatus) or before it: the engine
    # read the execution already running elsewhere (IllegalTransition running -> running).
    with contextlib.suppress(StaleStatus, IllegalTransition):
        return await engine.run(execution.tenant_id, execution.id, actor_id=who.actor_id)
    return None


async def get(db: Database, who: Caller, execution_id: str) -> Execution:
    who.require("executions", "view")
    async with db.connection() as conn:
        return await executions.get(conn, who.tenant_id, execution_id)


async def view(db: Database, who: Caller, execution_id: str) -> ExecutionView:
    who.require("executions", "view")
    async with db.connection() as conn:
        execution = await executions.get(conn, who.tenant_id, execution_id)
        step_rows = await steps.list_for(conn, execution.id)
        history = await approval_requests.history(conn, execution.id)
    return ExecutionView(execution, step_rows, history)


async def follow_state(
    db: Database, who: Caller, execution_id: str, after: int
) -> tuple[Execution, list[StepAttempt], list[Event]]:
    """What a live display reads each round: the execution, its step attempts and the
    events after ``after``, in one connection."""
    who.require("executions", "view")
    async with db.connection() as conn:
        execution = await executions.get(conn, who.tenant_id, execution_id)
        step_rows = await steps.list_for(conn, execution.id)
        news = await executions.events(conn, execution.id, after)
    return execution, step_rows, news


async def events(db: Database, who: Caller, execution_id: str, after: int = 0) -> list[Event]:
    return (await with_events(db, who, execution_id, after))[1]


async def with_events(
    db: Database, who: Caller, execution_id: str, after: int = 0
) -> tuple[Execution, list[Event]]:
    """The execution, then its events after ``after``, in one connection: read in that
    order, a final status comes with every event committed with it (a run's last events
    commit with its final status), so "finished, nothing more" is never answered early."""
    who.require("executions", "view")
    async with db.connection() as conn:
        execution = await executions.get(conn, who.tenant_id, execution_id)
        return execution, await executions.events(conn, execution.id, after)


async def page(
    db: Database,
    who: Caller,
    filters: reads.Filters,
    *,
    limit: int,
    after: reads.Cursor | None = None,
) -> tuple[list[Execution], reads.Cursor | None]:
    who.require("executions", "view")
    async with db.connection() as conn:
        return await reads.page_executions(conn, who.tenant_id, filters, limit=limit, after=after)


async def progress_of(db: Database, who: Caller, execution_id: str) -> ProgressView:
    """An execution's progress with an ETA from the tenant's history of the same steps."""
    who.require("executions", "view")
    async with db.connection() as conn:
        execution = await executions.get(conn, who.tenant_id, execution_id)
        step_rows = await steps.list_for(conn, execution.id)
        keys = sorted({r.step_key for r in step_rows if r.step_key})
        history = await reads.step_history(conn, who.tenant_id, keys)
    plan_steps = execution.plan_snapshot.get("plan", {}).get("steps", [])
    concurrency = {
        i: int(s["concurrency"]) for i, s in enumerate(plan_steps) if s.get("concurrency")
    }
    found = progress_of_steps.compute(step_rows, history, datetime.now(UTC), concurrency)
    return ProgressView(execution, found, history)


async def cancel(db: Database, who: Caller, execution_id: str) -> CancelOutcome:
    who.require("executions", "cancel")
    return await request_cancel(db, who.tenant_id, execution_id, who.actor_id)


async def decide(
    db: Database,
    who: Caller,
    execution_id: str,
    decision: Decision,
    *,
    reviewed_hash: str | None = None,
    comment: str | None = None,
    step_index: int | None = None,
) -> Execution:
    """Approve or reject (the plan, or one step at level 3) as the caller. Separation of
    duties compares actors: a local administrator is ``local-admin:<unix user>``."""
    from opsconductor.approvals import gate

    who.require("executions", "approve")
    return await gate.decide(
        db,
        tenant_id=who.tenant_id,
        execution_id=execution_id,
        actor_id=who.actor_id,
        decision=decision,
        reviewed_hash=reviewed_hash,
        comment=comment,
        step_index=step_index,
    )


async def dead_letters(
    db: Database,
    who: Caller,
    *,
    include_requeued: bool = False,
    limit: int = 50,
    execution_id: uuid.UUID | None = None,
) -> list[dict[str, Any]]:
    who.require("executions", "view")
    async with db.connection() as conn:
        return await queue.dead_letters(
            conn,
            who.tenant_id,
            include_requeued=include_requeued,
            limit=limit,
            execution_id=execution_id,
        )


async def requeue(db: Database, who: Caller, execution_id: str) -> Execution:
    who.require("executions", "requeue")
    return await queue.requeue(db, who.tenant_id, execution_id, who.actor_id)


async def stats(db: Database, who: Caller) -> reads.Stats:
    who.require("executions", "view")
    async with db.connection() as conn:
        return await reads.stats(conn, who.tenant_id)
