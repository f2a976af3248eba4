"""``opsc hooks``: inbound webhooks that start a job, signed with HMAC-SHA256."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape

from opsconductor.api.job_models import DeliveryOut, HookCreated, HookOut
from opsconductor.cli import render
from opsconductor.cli.jobs import FollowLatest, Pinned
from opsconductor.cli.runtime import Remote, fail, out, run, session
from opsconductor.config import Settings
from opsconductor.services import hooks

hooks_app = typer.Typer(
    help="Inbound webhooks: a signed POST starts a job, body fields mapped to its params.",
    no_args_is_help=True,
)

Job = Annotated[str, typer.Argument(help="The job the hook starts")]
HookId = Annotated[str, typer.Argument(help="The hook's id")]


def _pairs(pairs: list[str] | None, option: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for pair in pairs or []:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise fail(f"{option} {pair!r}: write name=value", 2)
        found[name.strip()] = value
    return found


@hooks_app.command("add")
def add(
    job: Job,
    map_: Annotated[
        list[str] | None,
        typer.Option("--map", help="param=/json/pointer or param=dotted.path (repeatable)"),
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", "-e", help="A fixed param value, name=value")
    ] = None,
    version: Pinned = None,
    follow_latest: FollowLatest = False,
) -> None:
    """Create a hook; prints its URL path and its signing secret, this once. It runs the
    job's version of now (or --version N), unless --follow-latest."""
    from opsconductor import params as plan_params
    from opsconductor.cli.jobs import job_detail
    from opsconductor.plan import parse_plan

    mapping = _pairs(map_, "--map")
    texts = [f"{k}={v}" for k, v in _pairs(set_, "--set").items()]

    async def work(settings: Settings) -> HookCreated:
        async with session(settings) as s:
            declared = parse_plan((await job_detail(s, job, version)).version.plan).params
            fixed: dict[str, Any] = plan_params.parse_sets(declared, texts)
            if isinstance(s, Remote):
                body = {
                    "mapping": mapping,
                    "params": fixed,
                    "version": version,
                    "follow_latest": follow_latest,
                }
                _, found = await s.api.call("POST", f"/jobs/{job}/hooks", json_body=body)
                return HookCreated.model_validate(found)
            made = await hooks.create(
                s.db,
                s.caller,
                settings.home,
                job,
                mapping=mapping,
                params=fixed,
                version=version,
                follow_latest=follow_latest,
            )
            return HookCreated(**HookOut.of(made.hook).model_dump(), secret=made.secret)

    made = run(work)
    runs = "latest" if made.job_version is None else f"v{made.job_version}"
    out.print(escape(f"webhook {made.id} starts job {made.job} ({runs})"), highlight=False)
    out.print(f"POST to: {made.path}", highlight=False)
    out.print(f"signing secret (shown once): {made.secret}", highlight=False)


@hooks_app.command("list")
def list_hooks(job: Job) -> None:
    """A job's hooks and their mappings (never their secrets)."""

    async def work(settings: Settings) -> list[HookOut]:
        async with session(settings) as s:
            if isinstance(s, Remote):
                return [HookOut.model_validate(h) for h in await s.api.get(f"/jobs/{job}/hooks")]
            return [HookOut.of(h) for h in await hooks.list_hooks(s.db, s.caller, job)]

    render.table(
        ["hook", "path", "mapping", "fixed params", "by"],
        [
            [
                h.id,
                h.path,
                ", ".join(f"{k}<-{v}" for k, v in h.mapping.items()) or "-",
                ", ".join(f"{k}={v!r}" for k, v in h.params.items()) or "-",
                h.created_by,
            ]
            for h in run(work)
        ],
    )


@hooks_app.command("remove")
def remove(job: Job, hook_id: HookId) -> None:
    """Delete a hook and its secret."""

    async def work(settings: Settings) -> None:
        async with session(settings) as s:
            if isinstance(s, Remote):
                await s.api.call("DELETE", f"/jobs/{job}/hooks/{hook_id}")
                return
            if not any(h.id == hook_id for h in await hooks.list_hooks(s.db, s.caller, job)):
                from opsconductor.errors import NotFound

                raise NotFound(f"job {job!r} has no webhook {hook_id!r}")
            await hooks.remove(s.db, s.caller, hook_id)

    run(work)
    out.print(f"removed webhook {hook_id}", highlight=False)


@hooks_app.command("deliveries")
def deliveries(job: Job, hook_id: HookId, limit: int = 20) -> None:
    """Deliveries to a hook, accepted and refused (with the reason), newest first."""

    async def work(settings: Settings) -> list[DeliveryOut]:
        async with session(settings) as s:
            if isinstance(s, Remote):
                found = await s.api.get(f"/jobs/{job}/hooks/{hook_id}/deliveries", limit=limit)
                return [DeliveryOut.model_validate(d) for d in found]
            rows = await hooks.deliveries(s.db, s.caller, hook_id, limit)
            return [DeliveryOut.model_validate(d, from_attributes=True) for d in rows]

    render.table(
        ["received", "status", "reason", "delivery id", "execution"],
        [
            [
                f"{d.received_at:%Y-%m-%d %H:%M:%S}",
                str(d.status_code),
                d.reason or "accepted",
                d.delivery_id or "-",
                str(d.execution_id or "-"),
            ]
            for d in run(work)
        ],
    )
