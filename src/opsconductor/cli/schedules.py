"""``opsc schedules``: cron schedules of jobs, with their next fire times."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import typer
from rich.markup import escape

from opsconductor.api.job_models import ScheduleOut
from opsconductor.cli import render
from opsconductor.cli.jobs import FollowLatest, Pinned
from opsconductor.cli.runtime import Remote, out, run, session
from opsconductor.config import Settings
from opsconductor.services import schedules

schedules_app = typer.Typer(
    help="Schedules: a job fired on a cron expression in a time zone.", no_args_is_help=True
)

Name = Annotated[str, typer.Argument(help="Schedule name")]


def _when(at: datetime | None) -> str:
    return "-" if at is None else f"{at.astimezone():%Y-%m-%d %H:%M:%S %Z}"


@schedules_app.command("add")
def add(
    name: Name,
    job: Annotated[str, typer.Option("--job", help="The job it runs")],
    cron: Annotated[
        str,
        typer.Option(
            "--cron", help="5 fields, or 6 with seconds last: '* * * * * */10' (every 10 s)"
        ),
    ],
    timezone: Annotated[str, typer.Option("--tz", help="IANA time zone")] = "UTC",
    set_: Annotated[
        list[str] | None, typer.Option("--set", "-e", help="A parameter value, name=value")
    ] = None,
    missed: Annotated[
        str, typer.Option("--missed", help="After a downtime: skip, or run_once")
    ] = "skip",
    version: Pinned = None,
    follow_latest: FollowLatest = False,
) -> None:
    """Fire a job on a cron schedule, as you (your roles are checked at every fire). It
    runs the job's version of now (or --version N): a version saved later by someone else
    does not run under your name unless you chose --follow-latest."""
    from opsconductor import params as plan_params
    from opsconductor.cli.jobs import job_detail
    from opsconductor.plan import parse_plan
    from opsconductor.schedule import Missed

    async def work(settings: Settings) -> ScheduleOut:
        async with session(settings) as s:
            declared = parse_plan((await job_detail(s, job, version)).version.plan).params
            given = plan_params.parse_sets(declared, set_ or [])
            if isinstance(s, Remote):
                body: dict[str, Any] = {
                    "name": name,
                    "job": job,
                    "cron": cron,
                    "timezone": timezone,
                    "params": given,
                    "missed": missed,
                    "version": version,
                    "follow_latest": follow_latest,
                }
                _, found = await s.api.call("POST", "/schedules", json_body=body)
                return ScheduleOut.model_validate(found)
            try:
                policy = Missed(missed)
            except ValueError:
                from opsconductor.errors import BadInput

                raise BadInput(f"--missed {missed!r}: use skip or run_once") from None
            added = await schedules.add(
                s.db,
                s.caller,
                name,
                job,
                cron,
                timezone=timezone,
                params=given,
                missed=policy,
                version=version,
                follow_latest=follow_latest,
            )
            return ScheduleOut.of(added, schedules.upcoming(added))

    found = run(work)
    out.print(
        escape(
            f"schedule {found.name}: job {found.job} ({_runs(found)}) at '{found.cron}' "
            f"({found.timezone}), missed slots: {found.missed}"
        ),
        highlight=False,
    )
    for at in found.upcoming:
        out.print(f"  next {_when(at)}", highlight=False)


def _runs(found: ScheduleOut) -> str:
    return "latest" if found.job_version is None else f"v{found.job_version}"


async def _list(settings: Settings) -> list[ScheduleOut]:
    async with session(settings) as s:
        if isinstance(s, Remote):
            return [ScheduleOut.model_validate(x) for x in await s.api.get("/schedules")]
        found = await schedules.list_schedules(s.db, s.caller)
        return [ScheduleOut.of(x, schedules.upcoming(x)) for x in found]


@schedules_app.command("list")
def list_schedules() -> None:
    """Schedules: job, cron, time zone, policy, state and next fire times."""
    render.table(
        ["schedule", "job", "runs", "cron", "tz", "missed", "state", "next fires", "last"],
        [
            [
                x.name,
                x.job,
                _runs(x),
                x.cron,
                x.timezone,
                x.missed,
                "paused" if x.paused else "active",
                "\n".join(_when(at) for at in x.upcoming) or "-",
                _when(x.last_slot) + (f"\n{x.last_error[:60]}" if x.last_error else ""),
            ]
            for x in run(_list)
        ],
    )


def _change(name: str, action: str) -> ScheduleOut:
    async def work(settings: Settings) -> ScheduleOut:
        async with session(settings) as s:
            if isinstance(s, Remote):
                _, found = await s.api.call("POST", f"/schedules/{name}/{action}")
                return ScheduleOut.model_validate(found)
            use = schedules.pause if action == "pause" else schedules.resume
            changed = await use(s.db, s.caller, name)
            return ScheduleOut.of(changed, schedules.upcoming(changed))

    return run(work)


@schedules_app.command("pause")
def pause(name: Name) -> None:
    """Stop firing until resumed."""
    _change(name, "pause")
    out.print(f"paused schedule {name}", highlight=False)


@schedules_app.command("resume")
def resume(name: Name) -> None:
    """Fire again, from the next slot after now (slots during the pause are not caught up)."""
    found = _change(name, "resume")
    out.print(f"resumed schedule {name}; next {_when(found.next_fire_at)}", highlight=False)


@schedules_app.command("remove")
def remove(name: Name) -> None:
    """Delete a schedule (the runs it started stay)."""

    async def work(settings: Settings) -> None:
        async with session(settings) as s:
            if isinstance(s, Remote):
                await s.api.call("DELETE", f"/schedules/{name}")
                return
            await schedules.remove(s.db, s.caller, name)

    run(work)
    out.print(f"removed schedule {name}", highlight=False)
