"""Job use cases: save a version, read, run by name, delete.

A run is an ordinary submission (``submission.prepare``/``db.executions``): the caller's
``executions:submit`` and the steps' permissions on every resolved target are checked per
run, the plan's approval level applies per run, and the execution records the job's name
and version. Runs go to the workers (a job may be started by a schedule or a webhook,
where nobody waits).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opsconductor import jobs, rbac, run_form
from opsconductor.db import executions
from opsconductor.db import jobs as job_rows
from opsconductor.db.connection import Database
from opsconductor.errors import NotFound, PermissionDenied
from opsconductor.jobs import Job, JobSummary, JobVersion
from opsconductor.records import Execution
from opsconductor.services.caller import Caller

if TYPE_CHECKING:
    from opsconductor.inventory import Asset
    from opsconductor.plan import Plan
    from opsconductor.submission import PlanCheck

#: Runs listed by ``GET /jobs/{name}/runs`` at most.
MAX_RUNS = 200


@dataclass(frozen=True)
class Saved:
    version: JobVersion
    #: False: the content equals the latest version's, nothing was added
    created: bool


def _enforce(who: Caller) -> PlanCheck:
    def check(plan: Plan, targets: list[list[Asset]]) -> None:
        rbac.enforce_plan(who.actor_id, list(who.roles), plan, targets)

    return check


async def save(db: Database, who: Caller, name: str, plan: Plan) -> Saved:
    """Save ``plan`` as the job's next version (or its first). Who may save it must be
    able to submit it now: its targets are resolved and every step checked against the
    saver's roles, like a submission, before anything is stored."""
    from opsconductor.inventory import resolve_selected
    from opsconductor.plan import plan_document
    from opsconductor.submission import context

    who.require("jobs", "save")
    jobs.check_name(name)
    found = await context(db, who.tenant_id, [plan])
    rbac.enforce_plan(who.actor_id, list(who.roles), plan, resolve_selected(plan, found.matched))
    document = plan_document(plan)
    digest = jobs.content_hash(document)
    async with db.transaction() as conn:
        job = await job_rows.create(conn, who.tenant_id, name, who.actor_id)
        if job is not None:
            first = await job_rows.add_version(
                conn, who.tenant_id, name, 1, document, digest, who.actor_id
            )
            return Saved(first, True)
        job = await job_rows.lock(conn, who.tenant_id, name)
        assert job is not None  # the insert conflicted with it
        latest = await job_rows.version(conn, who.tenant_id, name, job.latest_version)
        if latest is not None and latest.content_hash == digest:
            return Saved(latest, False)
        job = await job_rows.bump(conn, who.tenant_id, name)
        added = await job_rows.add_version(
            conn, who.tenant_id, name, job.latest_version, document, digest, who.actor_id
        )
        return Saved(added, True)


async def list_jobs(db: Database, who: Caller) -> list[JobSummary]:
    who.require("jobs", "view")
    async with db.connection() as conn:
        return await job_rows.list_all(conn, who.tenant_id)


async def show(
    db: Database, who: Caller, name: str, version: int | None = None
) -> tuple[Job, JobVersion]:
    """The job and one version of it (its latest by default)."""
    who.require("jobs", "view")
    return await _version(db, who.tenant_id, name, version)


async def _version(
    db: Database, tenant_id: str, name: str, version: int | None
) -> tuple[Job, JobVersion]:
    async with db.connection() as conn:
        job = await job_rows.get(conn, tenant_id, name)
        if job is None:
            raise NotFound(f"job {name!r} not found")
        number = job.latest_version if version is None else version
        found = await job_rows.version(conn, tenant_id, name, number)
    if found is None:
        raise NotFound(f"job {name!r} has no version {number} (latest: {job.latest_version})")
    return job, found


async def form(
    db: Database, who: Caller, name: str, version: int | None = None
) -> tuple[JobVersion, list[run_form.FormField]]:
    """The run form of a version (its latest by default): one field per declared param."""
    _, found = await show(db, who, name, version)
    return found, run_form.fields(found.params)


async def history(db: Database, who: Caller, name: str) -> list[JobVersion]:
    who.require("jobs", "view")
    async with db.connection() as conn:
        found = await job_rows.versions(conn, who.tenant_id, name)
    if not found:
        raise NotFound(f"job {name!r} not found")
    return found


async def delete(db: Database, who: Caller, name: str) -> None:
    """With ``jobs:delete`` (admin), or as the job's creator holding ``jobs:save``. Its
    schedules and webhooks go with it; its runs stay (they name the job and version)."""
    async with db.transaction() as conn:
        job = await job_rows.lock(conn, who.tenant_id, name)
        if job is None:
            raise NotFound(f"job {name!r} not found")
        owner = job.created_by == who.actor_id
        if not (owner and rbac.decide(who.roles, "jobs", "save").allowed):
            try:
                who.require("jobs", "delete")
            except PermissionDenied as exc:
                raise PermissionDenied(f"{exc} (only its creator or an admin may)") from None
        await job_rows.delete(conn, who.tenant_id, name)


async def prepare_run(
    db: Database,
    who: Caller,
    name: str,
    params: Mapping[str, Any] | None,
    *,
    version: int | None = None,
    idempotency_key: str | None = None,
) -> executions.NewExecution:
    """Everything a run's submission checks, as ``who``, stored by the caller (in its own
    transaction for schedules and webhooks: the fire or delivery row goes with it)."""
    from opsconductor.plan import parse_plan
    from opsconductor.submission import Request, context, prepare

    who.require("jobs", "run")
    who.require("executions", "submit")
    _, found = await _version(db, who.tenant_id, name, version)
    plan = parse_plan(found.plan)
    request = Request(
        plan,
        who.tenant_id,
        who.actor_id,
        idempotency_key,
        enqueue=True,
        params=params,
        job_name=name,
        job_version=found.version,
    )
    ready = await context(db, who.tenant_id, [plan])
    return await prepare(request, ready, check=_enforce(who))


async def run(
    db: Database,
    who: Caller,
    name: str,
    params: Mapping[str, Any] | None = None,
    *,
    version: int | None = None,
    idempotency_key: str | None = None,
) -> executions.Submitted:
    """Queue a run of the job (its latest version unless ``version``) for the workers."""
    new = await prepare_run(db, who, name, params, version=version, idempotency_key=idempotency_key)
    return await executions.submit(db, new)


async def runs(db: Database, who: Caller, name: str, limit: int = 50) -> list[Execution]:
    who.require("jobs", "view")
    who.require("executions", "view")
    async with db.connection() as conn:
        return await job_rows.runs(conn, who.tenant_id, name, min(max(limit, 1), MAX_RUNS))
