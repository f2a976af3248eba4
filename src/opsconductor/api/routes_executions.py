"""``/api/v1/executions``: submit, list, get, steps, events (long-poll), cancel."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Path, Query, Request, Response
from pydantic import Field

from opsconductor import failures, progress, safe_parse
from opsconductor.api import models
from opsconductor.api.auth import Db, Who, authenticate
from opsconductor.api.inputs import CleanInput, check_text
from opsconductor.approvals import Decision
from opsconductor.db import reads
from opsconductor.db.connection import Database
from opsconductor.db.executions import Submitted
from opsconductor.db.notify import EventHub
from opsconductor.errors import BadInput, OpsError
from opsconductor.plan import Plan, load_plan_text, parse_plan
from opsconductor.records import Mode
from opsconductor.services import executions
from opsconductor.services.caller import Caller
from opsconductor.status_machine import Status, is_terminal
from opsconductor.submission import MAX_BULK

router = APIRouter(prefix="/executions", tags=["executions"])

#: Longest a long-poll may park; clients loop with the returned cursor.
MAX_WAIT_S = 60.0
#: A parked long-poll re-reads at least this often even without a notification.
RECHECK_S = 5.0

YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")

PLAN_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "The plan, as JSON or YAML; validated strictly. "
        "A plan that declares `params` takes their values in an envelope: "
        '`{"plan": <plan object, or its YAML/JSON text>, "params": {"version": "1.2", '
        '"restart": true}}` (JSON or YAML). Values are typed (an int parameter takes a '
        "number, not a string) and checked against the declarations: a missing, unknown or "
        "wrong-typed value is a 400 naming `params.<name>`. The values are part of the plan "
        "hash.",
        "content": {
            "application/json": {"schema": {"type": "object", "additionalProperties": True}},
            "application/yaml": {"schema": {"type": "string"}},
        },
    }
}

ViewCaller = Who


PlanAndParams = tuple[Plan, dict[str, Any] | None]


def body_data(body: bytes, content_type: str) -> Any:
    """A plan's request body, JSON or YAML by its content type, within tenant input bounds."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadInput("body: not valid UTF-8") from None
    if content_type.split(";")[0].strip().lower() in YAML_TYPES:
        check_text(text, "body")
        data = safe_parse.load_yaml(text, "body")
    else:
        data = safe_parse.load_json(text, "body")
        check_text(data)  # NUL and lone surrogates: 400, as for every other body
        safe_parse.check_control_chars(data)
    return data


def _parse_plan_body(body: bytes, content_type: str) -> PlanAndParams:
    return _plan_and_params(body_data(body, content_type))


def _plan_and_params(data: Any) -> PlanAndParams:
    """A plan, or ``{"plan": ..., "params": {...}}`` (no plan has a ``plan`` field, so the
    two cannot be confused)."""
    if not (isinstance(data, dict) and "plan" in data and set(data) <= {"plan", "params"}):
        return parse_plan(data), None
    params = data.get("params")
    if params is not None and not isinstance(params, dict):
        raise BadInput("params: must be a mapping of parameter names to values")
    plan = data["plan"]
    return (load_plan_text(plan, "plan") if isinstance(plan, str) else parse_plan(plan)), params


async def _read_plan(request: Request) -> PlanAndParams:
    """Parse and validate off the event loop: even bounded, a large plan is CPU work that
    must not stall every other request (``/healthz`` included) while it runs."""
    body = await request.body()
    return await asyncio.to_thread(_parse_plan_body, body, request.headers.get("content-type", ""))


@router.post(
    "",
    status_code=201,
    response_model=models.ExecutionDetail,
    openapi_extra=PLAN_BODY,
    responses={
        200: {"model": models.ExecutionDetail, "description": "Duplicate: the existing one"},
        202: {"model": models.ExecutionDetail, "description": "Accepted: runs in background"},
    },
    summary="Submit a plan",
)
async def submit_execution(
    request: Request,
    response: Response,
    db: Db,
    who: Who,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            min_length=1,
            max_length=200,
            description="Deduplicate on this key (else SHA-256 of tenant, actor, plan hash)",
        ),
    ] = None,
    record_only: Annotated[
        bool,
        Query(description="Dark launch: resolve and record every step, touch no target"),
    ] = False,
    queue: Annotated[
        bool,
        Query(
            description="Hand the plan to the workers even when it is fast (opsc submit); "
            "by default a fast plan runs within this request"
        ),
    ] = False,
) -> models.ExecutionDetail:
    """201 with the finished result for fast (immediate) plans, 202 at once for background
    ones, 200 with the existing execution for a duplicate within the dedup window."""
    plan, params = await _read_plan(request)
    submitted = await executions.submit(
        db,
        who,
        plan,
        idempotency_key=idempotency_key,
        record_only=record_only,
        enqueue=True if queue else None,
        params=params,
    )
    return await _answer(db, who, submitted, response)


@router.post(
    "/{execution_id}/rerun",
    status_code=201,
    response_model=models.ExecutionDetail,
    responses={
        200: {"model": models.ExecutionDetail, "description": "Duplicate: the existing one"},
        202: {"model": models.ExecutionDetail, "description": "Accepted: runs in background"},
    },
    summary="Re-run a finished execution's plan over its failed targets only",
)
async def rerun_execution(
    execution_id: str,
    response: Response,
    db: Db,
    who: Who,
    failed: Annotated[
        bool,
        Query(
            description="Only the targets that failed or never ran (required: a re-run "
            "of everything is a new submission of the plan)"
        ),
    ] = False,
    queue: Annotated[
        bool, Query(description="Hand it to the workers even when it is fast")
    ] = False,
) -> models.ExecutionDetail:
    """A new execution (``rerun_of`` names the old one) of the same plan, each step's
    targets narrowed to those of the old one that failed, timed out or never ran: the whole
    plan runs again on each of them, and on no other. Its plan hash is new, so a plan that
    needs approval needs it again. 409 when the old one is unfinished, record-only, or
    has nothing that failed. Answers as a submission does (201, 202 or 200)."""
    if not failed:
        raise BadInput(
            "failed: give failed=true (only the failed targets can be re-run; to run "
            "everything again, submit the plan)"
        )
    submitted = await executions.rerun_failed(
        db, who, execution_id, enqueue=True if queue else None
    )
    return await _answer(db, who, submitted, response)


async def _answer(
    db: Database, who: Caller, submitted: Submitted, response: Response
) -> models.ExecutionDetail:
    """A submission's answer: 200 a duplicate, 201 run here (fast), 202 queued."""
    execution = submitted.execution
    if not submitted.created:
        response.status_code = 200
    elif execution.status is Status.APPROVED and execution.mode is Mode.IMMEDIATE:
        await executions.run_here(db, who, execution)
    elif execution.status is Status.QUEUED:
        response.status_code = 202  # the submission queued it for the workers
    return await _detail(db, who, str(execution.id))


def _parse_bulk_body(body: bytes) -> list[Plan]:
    """``{"plans": [...]}``: each item a plan object, or a plan's YAML/JSON text as a string
    (what ``opsc submit`` sends, byte for byte as in its files)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadInput("body: not valid UTF-8") from None
    data = safe_parse.load_json(text, "body")
    check_text(data)
    safe_parse.check_control_chars(data)
    if not isinstance(data, dict) or set(data) != {"plans"} or not isinstance(data["plans"], list):
        raise BadInput('body: expected {"plans": [plan, ...]}')
    if not data["plans"]:
        raise BadInput("plans: give at least one plan")
    if len(data["plans"]) > MAX_BULK:
        raise BadInput(f"plans: {len(data['plans'])} plans; at most {MAX_BULK} per request")
    plans = []
    for index, item in enumerate(data["plans"]):
        try:
            plans.append(
                load_plan_text(item, "plan") if isinstance(item, str) else parse_plan(item)
            )
        except OpsError as exc:  # every "path: message" part names its plan
            parts = str(exc).split("; ")
            raise type(exc)("; ".join(f"plans[{index}].{part}" for part in parts)) from None
    return plans


@router.post(
    "/bulk",
    status_code=202,
    response_model=models.BulkSubmitted,
    summary="Submit many plans for the workers at once (all stored, or none)",
)
async def submit_bulk(
    request: Request,
    db: Db,
    who: Who,
    record_only: Annotated[
        bool,
        Query(description="Dark launch: resolve and record every step, touch no target"),
    ] = False,
) -> models.BulkSubmitted:
    """202: every plan stored and queued (or waiting for approval); a plan submitted within
    the deduplication window answers its existing execution with ``created: false``."""
    plans = await asyncio.to_thread(_parse_bulk_body, await request.body())
    done = await executions.submit_many(db, who, plans, record_only=record_only)
    items = [
        models.BulkItem(execution=models.Execution.from_record(d.execution), created=d.created)
        for d in done
    ]
    return models.BulkSubmitted(
        items=items,
        created=sum(i.created for i in items),
        duplicates=sum(not i.created for i in items),
    )


@router.post(
    "/validate",
    response_model=models.Validation,
    openapi_extra=PLAN_BODY,
    summary="Validate a plan: resolved targets and plan hash; stores nothing",
)
async def validate_plan(request: Request, db: Db, who: Who) -> models.Validation:
    plan, params = await _read_plan(request)
    return models.Validation.of(plan, await executions.validate(db, who, plan, params))


def _encode_cursor(cursor: reads.Cursor) -> str:
    raw = f"{cursor.created_at.isoformat()}|{cursor.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(text: str) -> reads.Cursor:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
        at, _, ident = raw.partition("|")
        return reads.Cursor(datetime.fromisoformat(at), uuid.UUID(ident))
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise BadInput("cursor: not a cursor this API returned") from None


@router.get("", response_model=models.ExecutionPage, summary="List executions, newest first")
async def list_executions(
    db: Db,
    who: ViewCaller,
    status: Annotated[Status | None, Query(description="Only this status")] = None,
    actor: Annotated[str | None, Query(min_length=1, description="Only this actor")] = None,
    since: Annotated[datetime | None, Query(description="Created at or after")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> models.ExecutionPage:
    after = _decode_cursor(cursor) if cursor else None
    filters = reads.Filters(status, actor, since)
    rows, following = await executions.page(db, who, filters, limit=limit, after=after)
    return models.ExecutionPage(
        items=[models.Execution.from_record(r) for r in rows],
        next_cursor=_encode_cursor(following) if following else None,
    )


async def _detail(db: Database, who: Caller, execution_id: str) -> models.ExecutionDetail:
    found = await executions.view(db, who, execution_id)
    execution = found.execution
    return models.ExecutionDetail(
        **models.Execution.from_record(execution).model_dump(),
        plan=execution.plan_snapshot["plan"],
        progress=models.Progress(**progress.compute(found.steps).as_dict()),
        steps=[models.Step.from_record(r) for r in found.steps],
        approvals=[models.Approval.from_record(a) for a in found.approvals],
        failures=[models.Failure.of(g) for g in failures.group(found.steps)],
    )


@router.get("/{execution_id}", response_model=models.ExecutionDetail, summary="One execution")
async def get_execution(execution_id: str, db: Db, who: ViewCaller) -> models.ExecutionDetail:
    return await _detail(db, who, execution_id)


@router.get(
    "/{execution_id}/progress", response_model=models.ProgressReport, summary="Live progress"
)
async def get_progress(execution_id: str, db: Db, who: ViewCaller) -> models.ProgressReport:
    """Steps done/failed/running/pending over (step, target) pairs at their latest attempt,
    percent finished, and an ETA (seconds) from what the same steps took before; null, with
    the reason in ``eta_basis``, when a step still to run has never run."""
    found = await executions.progress_of(db, who, execution_id)
    return models.ProgressReport(
        execution_id=found.execution.id,
        status=found.execution.status,
        typical_s={k: round(v.median_s, 3) for k, v in found.history.items()},
        samples={k: v.samples for k, v in found.history.items()},
        **found.progress.as_dict(),
    )


@router.get("/{execution_id}/steps", response_model=list[models.Step], summary="Step attempts")
async def get_steps(execution_id: str, db: Db, who: ViewCaller) -> list[models.Step]:
    found = await executions.view(db, who, execution_id)
    return [models.Step.from_record(r) for r in found.steps]


@router.get(
    "/{execution_id}/events",
    response_model=models.EventPage,
    summary="Audit events after a cursor; long-poll with wait",
)
async def get_events(
    execution_id: str,
    request: Request,
    db: Db,
    who: ViewCaller,
    after: Annotated[int, Query(ge=0, le=2**63 - 1, description="Last event id seen")] = 0,
    wait: Annotated[
        float, Query(ge=0, le=MAX_WAIT_S, description="Seconds to wait for news, if none yet")
    ] = 0,
) -> models.EventPage:
    """Returns at once when there are events after ``after`` (or the execution is finished);
    otherwise parks up to ``wait`` seconds and returns as soon as one is recorded."""
    hub: EventHub = request.app.state.events
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    token = request.headers.get("authorization", "").partition(" ")[2]
    execution = await executions.get(db, who, execution_id)
    key = str(execution.id)
    async with hub.subscribe(key) as news:
        while True:
            # Read after subscribing: an event committed in between is not missed. The status
            # before the events (with_events): read the other way round, a run ending between
            # the two reads was answered "finished, no events", and its last events were never
            # delivered.
            news.clear()
            current, rows = await executions.with_events(db, who, key, after)
            status = current.status
            remaining = deadline - loop.time()
            if rows or remaining <= 0 or is_terminal(status) or hub.closing:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(news.wait(), min(remaining, RECHECK_S))
            # The token again, roles as of now: revoked or expired while parked is a 401.
            who = await authenticate(db, token)
    return models.EventPage(
        events=[models.Event.from_record(r) for r in rows],
        last_event_id=rows[-1].id if rows else after,
        status=status,
    )


@router.post(
    "/{execution_id}/cancel",
    response_model=models.CancelResult,
    responses={202: {"model": models.CancelResult, "description": "Running: request recorded"}},
    summary="Cancel an execution",
)
async def cancel_execution(
    execution_id: str,
    response: Response,
    db: Db,
    who: Who,
) -> models.CancelResult:
    """Waiting executions (pending approval, approved, queued) are cancelled and never run.
    A running one gets a cancel request (``202``): its engine sees it within a second,
    stops the running commands (SIGTERM, then SIGKILL of the process group), releases its
    locks and ends ``cancelled`` with ``cancelled_by``/``cancelled_at``."""
    done = await executions.cancel(db, who, execution_id)
    outcome: Literal["cancelled", "requested"] = (
        "cancelled" if done.result == "cancelled" else "requested"
    )
    fresh = await executions.get(db, who, str(done.execution_id))
    response.status_code = 202 if outcome == "requested" else 200
    return models.CancelResult(execution=models.Execution.from_record(fresh), outcome=outcome)


class ApproveBody(CleanInput):
    #: the plan hash the approver reviewed; required from level 2 (tamper detection)
    plan_hash: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    comment: str | None = Field(default=None, max_length=2000)


class RejectBody(CleanInput):
    comment: str = Field(min_length=1, max_length=2000)


Approver = Who


async def _decide(
    db: Database,
    who: Caller,
    execution_id: str,
    decision: Decision,
    body: ApproveBody | RejectBody,
    step_index: int | None = None,
) -> models.ExecutionDetail:
    execution = await executions.decide(
        db,
        who,
        execution_id,
        decision,
        reviewed_hash=body.plan_hash if isinstance(body, ApproveBody) else None,
        comment=body.comment,
        step_index=step_index,
    )
    if execution.status is Status.APPROVED:
        # A fast plan nobody else waits for runs in this request; background plans were
        # queued by the approving transaction.
        await executions.run_here(db, who, execution)
    return await _detail(db, who, str(execution.id))


@router.post("/{execution_id}/approve", response_model=models.ExecutionDetail, summary="Approve")
async def approve_execution(
    execution_id: str, body: ApproveBody, db: Db, who: Approver
) -> models.ExecutionDetail:
    """Approve an execution waiting for approval; a level-2+ requester may not approve
    their own execution."""
    return await _decide(db, who, execution_id, Decision.APPROVE, body)


@router.post("/{execution_id}/reject", response_model=models.ExecutionDetail, summary="Reject")
async def reject_execution(
    execution_id: str, body: RejectBody, db: Db, who: Approver
) -> models.ExecutionDetail:
    return await _decide(db, who, execution_id, Decision.REJECT, body)


StepIndex = Annotated[int, Path(ge=0, le=499, description="Index of the step in the plan")]


@router.post(
    "/{execution_id}/steps/{step_index}/approve",
    response_model=models.ExecutionDetail,
    summary="Approve one step of a level 3 execution",
)
async def approve_step(
    execution_id: str, step_index: StepIndex, body: ApproveBody, db: Db, who: Approver
) -> models.ExecutionDetail:
    """The step waits in ``awaiting_approval``; approving it (with the plan hash) puts the
    execution back in the queue, where a worker runs that step and waits at the next."""
    return await _decide(db, who, execution_id, Decision.APPROVE, body, step_index)


@router.post(
    "/{execution_id}/steps/{step_index}/reject",
    response_model=models.ExecutionDetail,
    summary="Reject one step of a level 3 execution (it ends cancelled)",
)
async def reject_step(
    execution_id: str, step_index: StepIndex, body: RejectBody, db: Db, who: Approver
) -> models.ExecutionDetail:
    return await _decide(db, who, execution_id, Decision.REJECT, body, step_index)
