"""From a validated plan to a stored execution: resolve targets, hash, route, deduplicate."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opsconductor import ids, plan_hash, policies, pushed_files, routing, staging, template_check
from opsconductor.config import load_settings
from opsconductor.connectors import tenant_files
from opsconductor.db import assets, bulk, connectors, executions, steps
from opsconductor.db import staging as staging_rows
from opsconductor.db.connection import Database
from opsconductor.errors import BadInput, OpsError
from opsconductor.first_locks import first_locks
from opsconductor.idempotency import derive_key
from opsconductor.inventory import (
    Asset,
    Resolved,
    resolve_selected,
    selector_key,
    selector_keys_of,
    step_selector_keys,
)
from opsconductor.params import Value, bind
from opsconductor.plan import Plan, Targets
from opsconductor.plan_hash import hashed_document
from opsconductor.quick_init import quick_init
from opsconductor.records import Mode
from opsconductor.safe_parse import MAX_EXPANDED_BYTES


@quick_init  # built for every plan of a bulk
@dataclass(frozen=True)
class Request:
    plan: Plan
    tenant_id: str
    actor_id: str
    idempotency_key: str | None = None
    #: dark launch: resolve and record everything, touch no target
    record_only: bool = False
    #: Who runs it, recorded as ``mode``. True: the workers (``opsc submit``): ``background``,
    #: queued in the submission's transaction, or by the approval that lets it run. False:
    #: the caller, in its own process (``opsc run``): ``immediate``. None: as routing says
    #: (the API): a fast plan is run by the caller, a slower one is queued for the workers.
    enqueue: bool | None = None
    #: values of the plan's declared ``params`` (``--set``, a values file, the API body);
    #: checked against the declarations (params.bind) and part of the plan hash
    params: Mapping[str, Any] | None = None
    #: the execution whose failed targets this one re-runs (``services.executions.rerun``)
    rerun_of: uuid.UUID | None = None
    #: the saved job (and version) this is a run of (services/jobs.py)
    job_name: str | None = None
    job_version: int | None = None


_MODE = {True: Mode.BACKGROUND, False: Mode.IMMEDIATE}

#: The queue lease must outlast the slowest step seen: twice its observed p95.
LEASE_P95_FACTOR = 2.0


#: Called with the plan and its resolved targets before anything is stored; raises to refuse
#: (the API's RBAC check at submission needs the targets' environments).
PlanCheck = Callable[[Plan, list[list[Asset]]], None]


@dataclass(frozen=True)
class Context:
    """What the database says about a tenant that submissions need: its settings, the assets
    each distinct selector matches, and observed step durations (for routing)."""

    tenant: connectors.TenantSettings
    matched: dict[str, list[Asset]]
    observed: dict[str, float]
    #: observed p95 of the very steps submitted, by routing.step_key
    observed_steps: dict[str, float]
    #: the tenant's files (pushed files are read and hashed at submission)
    files: Callable[[str, str], Path]
    #: staged enablement: what each approval level may do for real, the canary share
    enablement: staging.Staging = field(default_factory=staging.Staging)
    #: the targets each selector resolved to so far, checked (inventory.resolve_selected):
    #: the plans of a bulk often share selectors
    resolved: Resolved = field(default_factory=dict)

    @functools.cached_property
    def history(self) -> routing.History:
        """What routing estimates from: for the steps of any plan this context was read
        for, the same answers as their own history (their keys' and types' p95s)."""
        return routing.History(self.observed_steps, self.observed)


def step_keys(plan: Plan) -> tuple[str, ...]:
    """Each step's ``routing.step_key`` (a hash of what it runs), in step order."""
    return tuple(routing.step_key(s) for s in plan.steps)


@quick_init
@dataclass(frozen=True)
class Shape:
    """What a plan's document and steps say, worked out once per plan: a bulk submission
    needs the keys before its one read (``context``), and the rest in ``prepare``."""

    #: ``plan_document(plan)`` and its canonical JSON (plan_hash.plan_text)
    document: dict[str, Any]
    text: str
    #: each step's ``routing.step_key`` and ``inventory.selector_key`` (None: validate)
    step_keys: tuple[str, ...]
    selectors: tuple[str | None, ...]


def shape(plan: Plan, memo: dict[str, str] | None = None) -> Shape:
    """The plan's ``Shape``, all from one dump of the plan; ``memo``: shared by the plans
    of one submission (routing.step_keys_of)."""
    dumped = plan_hash.dumped_text(plan)
    if dumped is None:  # a non-finite float: the document is not the plan's very data
        document, text = plan_hash.plan_text(plan)
        return Shape(document, text, step_keys(plan), step_selector_keys(plan))
    document, text = dumped
    steps = document["steps"]
    memo = {} if memo is None else memo
    return Shape(
        document, text, routing.step_keys_of(plan.steps, steps, memo), selector_keys_of(steps)
    )


async def context(
    db: Database,
    tenant_id: str,
    plans: Sequence[Plan],
    files_root: Path | None = None,
    keys: Sequence[tuple[str, ...]] | None = None,
    selected: Sequence[tuple[str | None, ...]] | None = None,
) -> Context:
    """One read for any number of plans: each distinct selector is looked up once.
    ``keys``, ``selected``: each plan's ``step_keys`` and ``step_selector_keys``, when the
    caller has them already."""
    files_root = files_root or load_settings().files_root
    wanted: dict[str, Targets] = {}  # each distinct selector (inventory.selectors)
    types: set[str] = set()
    for index, plan in enumerate(plans):
        plan_selected = step_selector_keys(plan) if selected is None else selected[index]
        for step, key in zip(plan.steps, plan_selected, strict=True):
            types.add(step.type)
            if step.type != "validate":  # it has no selector of its own
                wanted[key or selector_key(step.targets)] = step.targets
    step_types = sorted(types)
    if keys is None:
        keys = [step_keys(plan) for plan in plans]
    wanted_keys = sorted({key for plan_keys in keys for key in plan_keys})
    async with db.connection() as conn:
        await assets.ensure_tenant(conn, tenant_id)
        matched = await assets.matching(conn, tenant_id, wanted)
        tenant = await connectors.tenant_settings(conn, tenant_id)
        observed = await steps.observed_p95(conn, tenant_id, step_types)
        keyed = await steps.observed_p95_by_key(conn, tenant_id, wanted_keys)
        staged = await staging_rows.get(conn, tenant_id)
    files = tenant_files.resolver(tenant_id, files_root)
    return Context(tenant, matched, observed, keyed, files, staged)


def has_templates(plan: Plan) -> bool:
    """Whether the plan has a template or ``when`` to render (a bulk of no-op plans has
    not: ``prepare`` skips the render, and its coroutine)."""
    for index, step in enumerate(plan.steps):  # a loop: most plans have one step or two
        if step.when is not None:
            return True
        if template_check.may_have_templates(step) and template_check.template_fields(step, index):
            return True
    return False


async def check_templates(
    plan: Plan, targets: Sequence[Sequence[Asset]], values: Mapping[str, Value]
) -> None:
    """Render every template and ``when`` against every target (template_check); refuse
    the plan with all of the errors (step, target, name) before anything is stored."""
    if has_templates(plan):
        await _render_templates(plan, targets, values)


async def _render_templates(
    plan: Plan, targets: Sequence[Sequence[Asset]], values: Mapping[str, Value]
) -> None:
    """``check_templates`` once ``has_templates`` said yes."""
    # Templates are tenant input: rendered (budgeted) off the event loop.
    problems = await asyncio.to_thread(template_check.problems, plan, targets, values)
    if problems:
        raise BadInput("; ".join(problems))


async def prepare(
    request: Request,
    found: Context,
    *,
    check: PlanCheck | None = None,
    execution_id: uuid.UUID | None = None,
    shaped: Shape | None = None,
) -> executions.NewExecution:
    """Resolve, check, read pushed files, hash and route one plan: everything but storing.
    ``execution_id``: a fresh ``uuid4`` for it (a bulk draws them all at once), else one
    is drawn here; ``shaped``: its ``shape``, when the caller has it already."""
    plan = request.plan
    shaped = shaped or shape(plan)
    values = bind(plan.params, request.params)  # names the parameter at fault
    # raises before storing
    targets = resolve_selected(plan, found.matched, shaped.selectors, found.resolved)
    if check is not None:
        check(plan, targets)
    # The id is chosen here, before it is stored, so staged enablement can decide from it
    # (deterministic per id); a refused approval level stops here.
    execution_id = execution_id or uuid.uuid4()
    staged = staging.decide(found.enablement, request.tenant_id, plan.approval_level, execution_id)
    if has_templates(plan):  # worked out once: check_templates would again
        await _render_templates(plan, targets, values)
    keys = shaped.step_keys
    # the observed p95s of this plan's step types and of its very steps
    seen = [found.observed[s.type] for s in plan.steps if s.type in found.observed]
    seen += [found.observed_steps[k] for k in keys if k in found.observed_steps]
    # The bytes of every pushed file, read now: they are part of what is hashed, approved
    # and deduplicated (a changed file is a new plan), and the engine runs nothing else.
    if pushed_files.pushes(plan):
        shown = template_check.shown_params(plan, values, secrets=None)
        files = await pushed_files.take_async(plan, targets, found.files, shown)
    else:
        files = {}
    # Frozen into the execution (the engine also honours a tenant flag set later).
    asked = request.record_only or found.tenant.record_only
    # Serialised once: its length is checked, it is hashed and it is what is stored.
    plan_text = shaped.text
    snapshot = hashed_document(plan, targets, files, values, plan_doc=shaped.document)
    # Bounded like a request body: aliases and templates aside, nothing a tenant sends may
    # grow into a larger stored row than it could have sent literally. (The compact JSON:
    # sorting keys changes no length.)
    written = len(plan_text)
    if written > MAX_EXPANDED_BYTES:
        raise BadInput(f"plan: {written} bytes as stored; the limit is {MAX_EXPANDED_BYTES}")
    snapshot_text = plan_hash.hashed_text(snapshot, plan_text)
    digest = plan_hash.digest_text(snapshot_text)
    route = routing.classify(routing.total_seconds(plan, targets, found.history, keys))
    mode = route.mode if request.enqueue is None else _MODE[request.enqueue]
    timeout = policies.plan_timeout(plan)
    if plan.approval_level == 3:
        if request.enqueue is False:
            raise BadInput(
                "approval_level: 3 (step by step) runs on workers, which wait for each step's "
                "approval without pinning a process: use opsc submit (and opsc worker)"
            )
        mode = Mode.BACKGROUND
    return executions.NewExecution(
        tenant_id=request.tenant_id,
        actor_id=request.actor_id,
        # A record-only run must not deduplicate the real run of the same plan (or the
        # real run would come back as "already done" without having touched anything).
        idempotency_key=request.idempotency_key
        or derive_key(
            request.tenant_id,
            request.actor_id,
            f"{digest}:record-only" if asked else digest,
        ),
        # Staging's choice leaves the key alone: the same plan submitted again is the same
        # execution (and keeps the choice made for its id), not a second roll of the dice.
        record_only=asked or staged.record_only,
        record_only_reason=None if asked else staged.reason,
        id=execution_id,
        plan_name=plan.name,
        plan_snapshot=snapshot,
        plan_snapshot_json=snapshot_text,
        plan_hash=digest,
        mode=mode,
        sla_class=route.sla_class,
        approval_level=plan.approval_level,
        priority=plan.priority,
        estimated_duration_s=route.estimated_s,
        step_targets=[
            (index, step.name, step.type, asset.asset_id)
            for index, (step, step_targets) in enumerate(zip(plan.steps, targets, strict=True))
            for asset in step_targets
        ],
        enqueue=mode is Mode.BACKGROUND,
        plan_timeout=timeout,
        # level 3 waits for its first step's approval, parked, before any lock
        first_locks=first_locks(plan, snapshot["targets"]) if plan.approval_level < 3 else None,
        min_lease_s=LEASE_P95_FACTOR * max(seen, default=0.0),
        step_keys=keys,
        rerun_of=request.rerun_of,
        job_name=request.job_name,
        job_version=request.job_version,
    )


async def submit(
    db: Database, request: Request, *, check: PlanCheck | None = None
) -> executions.Submitted:
    shaped = shape(request.plan)
    found = await context(
        db, request.tenant_id, [request.plan], keys=[shaped.step_keys], selected=[shaped.selectors]
    )
    return await executions.submit(db, await prepare(request, found, check=check, shaped=shaped))


#: Plans one bulk submission may carry.
MAX_BULK = 1000


async def submit_many(
    db: Database, requests: Sequence[Request], *, check: PlanCheck | None = None
) -> list[executions.Submitted]:
    """Many plans of one tenant at once, with every check a single submission makes, stored
    with set-based statements in one transaction: all are stored or none (a plan that fails
    a check refuses the whole request, naming it as ``plans[i]``)."""
    if not requests:
        return []
    if len(requests) > MAX_BULK:
        raise BadInput(f"plans: {len(requests)} plans; at most {MAX_BULK} per submission")
    if len({r.tenant_id for r in requests}) != 1:
        raise BadInput("plans: a bulk submission belongs to one tenant")
    with _cycles_collected_after():
        # Prepared in a frame of its own, so what it built is freed (by reference counting)
        # before the collector is back: it would walk all of it once more for nothing.
        return await _submit_many(db, requests, check)


async def _submit_many(
    db: Database, requests: Sequence[Request], check: PlanCheck | None
) -> list[executions.Submitted]:
    memo: dict[str, str] = {}  # step keys, shared by the plans (routing.step_keys_of)
    shapes = [shape(r.plan, memo) for r in requests]  # read by the context and prepare
    found = await context(
        db,
        requests[0].tenant_id,
        [r.plan for r in requests],
        keys=[s.step_keys for s in shapes],
        selected=[s.selectors for s in shapes],
    )
    news = []
    fresh = ids.uuid4s(len(requests))
    for index, request in enumerate(requests):
        try:
            news.append(
                await prepare(
                    request, found, check=check, execution_id=fresh[index], shaped=shapes[index]
                )
            )
        except OpsError as exc:  # bad input, no target, RBAC: the same kind, naming it
            raise type(exc)(f"plans[{index}]: {exc}") from None
    return await bulk.submit_many(db, news)


#: Bulk submissions running in this process (the cycle collector waits for all of them).
_bulks_running = 0


@contextlib.contextmanager
def _cycles_collected_after() -> Iterator[None]:
    """No cyclic garbage collection while a bulk is prepared and stored: it allocates many
    objects per plan that all live until the statements are sent, and the collector would
    walk them over and over (about a sixth of a bulk's CPU, measured with
    bench/enqueue_cost.py). Reference counting still frees everything else at once; cycles
    wait for the end of the bulk (at most MAX_BULK plans)."""
    global _bulks_running
    if _bulks_running == 0 and not gc.isenabled():  # someone else's choice: leave it
        yield
        return
    _bulks_running += 1
    gc.disable()
    try:
        yield
    finally:
        _bulks_running -= 1
        if _bulks_running == 0:
            gc.enable()
