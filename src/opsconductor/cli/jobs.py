"""``opsc jobs``: saved, versioned plans run by name. Locally as the administrator, or
through the REST API after ``opsc login``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from opsconductor.api import models
from opsconductor.api.job_models import JobDetail, JobListed, JobOut, JobVersionOut, Saved
from opsconductor.cli import render
from opsconductor.cli.runtime import Remote, Session, fail, out, run, session
from opsconductor.config import Settings
from opsconductor.errors import OpsError
from opsconductor.services import jobs

jobs_app = typer.Typer(
    help="Jobs: saved, versioned plans with their params, run by name.", no_args_is_help=True
)

Name = Annotated[str, typer.Argument(help="Job name (lower case, digits, . _ -)")]
Version = Annotated[
    int | None, typer.Option("--version", min=1, help="A version (default: latest)")
]
#: What a schedule or a webhook runs: one version (the latest now by default), or the latest
#: at each fire; it runs as its creator either way.
Pinned = Annotated[
    int | None,
    typer.Option("--version", min=1, help="The job version it runs (default: the latest now)"),
]
FollowLatest = Annotated[
    bool,
    typer.Option("--follow-latest", help="Run the job's latest version at each fire, as you"),
]
Sets = Annotated[
    list[str] | None,
    typer.Option("--set", "-e", help="A parameter value, name=value (repeatable)"),
]


@jobs_app.command("save")
def save(name: Name, plan_file: Annotated[Path, typer.Argument(help="Plan, YAML or JSON")]) -> None:
    """Save a plan as the job's next version (nothing new if it is the same as the latest)."""
    from opsconductor.plan import load_plan_file

    try:
        plan = load_plan_file(plan_file)
    except OpsError as exc:
        raise fail(str(exc), exc.exit_code) from None

    async def work(settings: Settings) -> Saved:
        async with session(settings) as s:
            if isinstance(s, Remote):
                _, found = await s.api.call(
                    "PUT",
                    f"/jobs/{name}",
                    content=plan_file.read_bytes(),
                    headers={"Content-Type": "application/yaml"},
                )
                return Saved.model_validate(found)
            saved = await jobs.save(s.db, s.caller, name, plan)
            return Saved(created=saved.created, version=JobVersionOut.of(saved.version))

    saved = run(work)
    v = saved.version
    what = "saved" if saved.created else "unchanged: same content as"
    out.print(escape(f"{what} job {name} version {v.version} ({v.plan_name})"), highlight=False)


async def job_detail(s: Session, name: str, version: int | None) -> JobDetail:
    if isinstance(s, Remote):
        query = {"version": version} if version is not None else {}
        return JobDetail.model_validate(await s.api.get(f"/jobs/{name}", **query))
    job, found = await jobs.show(s.db, s.caller, name, version)
    return JobDetail(**JobOut.of(job).model_dump(), version=JobVersionOut.of(found))


@jobs_app.command("run")
def run_job(name: Name, set_: Sets = None, version: Version = None) -> None:
    """Queue a run of the job for the workers; print the execution id at once."""
    from opsconductor import params as plan_params
    from opsconductor.plan import parse_plan

    async def work(settings: Settings) -> tuple[models.Execution, bool]:
        async with session(settings) as s:
            detail = await job_detail(s, name, version)
            # --set is text: typed by the declarations of the version that will run
            declared = parse_plan(detail.version.plan).params
            given = plan_params.parse_sets(declared, set_ or [])
            number = detail.version.version
            if isinstance(s, Remote):
                status, found = await s.api.call(
                    "POST", f"/jobs/{name}/runs", json_body={"params": given, "version": number}
                )
                return models.Execution.model_validate(found), status != 200
            done = await jobs.run(s.db, s.caller, name, given, version=number)
            return models.Execution.from_record(done.execution), done.created

    found, created = run(work)
    if not created:
        out.print(f"already submitted within the deduplication window: execution {found.id}")
    out.print(
        escape(f"job {name} version {found.job_version}: execution {found.id} ({found.status})"),
        highlight=False,
    )


@jobs_app.command("list")
def list_jobs() -> None:
    """The tenant's jobs: latest version, plan name, schedules, latest run."""

    async def work(settings: Settings) -> list[JobListed]:
        async with session(settings) as s:
            if isinstance(s, Remote):
                return [JobListed.model_validate(j) for j in await s.api.get("/jobs")]
            return [JobListed.listed(j) for j in await jobs.list_jobs(s.db, s.caller)]

    render.table(
        ["job", "version", "plan", "schedules", "last run", "updated", "by"],
        [
            [
                j.name,
                str(j.latest_version),
                j.plan_name,
                str(j.schedules),
                j.last_run_status or "-",
                f"{j.updated_at:%Y-%m-%d %H:%M:%S}",
                j.created_by,
            ]
            for j in run(work)
        ],
    )


@jobs_app.command("show")
def show(name: Name, version: Version = None) -> None:
    """A job's version (latest by default): its params and its plan."""

    async def work(settings: Settings) -> JobDetail:
        async with session(settings) as s:
            return await job_detail(s, name, version)

    detail = run(work)
    v = detail.version
    out.print(
        escape(f"job {detail.name} version {v.version} of {detail.latest_version}: {v.plan_name}"),
        highlight=False,
    )
    out.print(f"saved by {v.created_by} at {v.created_at:%Y-%m-%d %H:%M:%S}", highlight=False)
    out.print(f"content hash {v.content_hash}", highlight=False)
    for pname, spec in v.params.items():
        out.print(escape(f"  param {pname}: {json.dumps(spec, sort_keys=True)}"), highlight=False)
    out.print(escape(json.dumps(v.plan, indent=2)), highlight=False)


@jobs_app.command("history")
def history(name: Name) -> None:
    """Every version of a job, newest first."""

    async def work(settings: Settings) -> list[JobVersionOut]:
        async with session(settings) as s:
            if isinstance(s, Remote):
                return [
                    JobVersionOut.model_validate(v)
                    for v in await s.api.get(f"/jobs/{name}/versions")
                ]
            return [JobVersionOut.of(v) for v in await jobs.history(s.db, s.caller, name)]

    render.table(
        ["version", "plan", "content hash", "saved", "by"],
        [
            [
                str(v.version),
                v.plan_name,
                v.content_hash[:16],
                f"{v.created_at:%Y-%m-%d %H:%M:%S}",
                v.created_by,
            ]
            for v in run(work)
        ],
    )


@jobs_app.command("runs")
def runs(name: Name, limit: Annotated[int, typer.Option(min=1, max=200)] = 20) -> None:
    """The job's latest runs."""

    async def work(settings: Settings) -> list[models.Execution]:
        async with session(settings) as s:
            if isinstance(s, Remote):
                found: list[Any] = await s.api.get(f"/jobs/{name}/runs", limit=limit)
                return [models.Execution.model_validate(e) for e in found]
            return [
                models.Execution.from_record(e)
                for e in await jobs.runs(s.db, s.caller, name, limit)
            ]

    render.table(
        ["execution", "version", "status", "actor", "created"],
        [
            [
                str(e.id),
                str(e.job_version),
                render.styled(e.status),
                e.actor_id,
                f"{e.created_at:%Y-%m-%d %H:%M:%S}",
            ]
            for e in run(work)
        ],
    )


@jobs_app.command("delete")
def delete(name: Name) -> None:
    """Delete a job, its schedules and webhooks (its runs stay). Its creator or an admin."""

    async def work(settings: Settings) -> None:
        async with session(settings) as s:
            if isinstance(s, Remote):
                await s.api.call("DELETE", f"/jobs/{name}")
                return
            await jobs.delete(s.db, s.caller, name)

    run(work)
    out.print(f"deleted job {name}", highlight=False)
