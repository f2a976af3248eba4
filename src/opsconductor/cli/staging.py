"""``opsc tenant stage|canary|staging``: the tenant's staged enablement (staging.py)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from opsconductor.cli.inventory import tenant_app
from opsconductor.cli.runtime import Remote, fail, out, run, session
from opsconductor.config import Settings
from opsconductor.errors import BadInput
from opsconductor.services import staging as service
from opsconductor.staging import LevelMode, Staging, describe, parse_mode


def _from_body(found: Any) -> Staging:
    a, b, c, d = (LevelMode(m) for m in found["level_modes"])
    return Staging((a, b, c, d), int(found["canary_percent"]))


async def _change(settings: Settings, **change: Any) -> tuple[str, Staging]:
    async with session(settings) as s:
        if isinstance(s, Remote):
            found = (await s.api.call("PATCH", "/tenant/staging", json_body=change))[1]
            tenant = (await s.api.call("GET", "/tenant"))[1]["tenant_id"]
            return str(tenant), _from_body(found)
        if "mode" in change:
            done = await service.set_level(
                s.db, s.caller, change["level"], LevelMode(change["mode"])
            )
        else:
            done = await service.set_canary(s.db, s.caller, change["canary_percent"])
        return s.caller.tenant_id, done


@tenant_app.command("stage")
def tenant_stage(
    mode: Annotated[str, typer.Argument(help="real, record-only or refuse")],
    level: Annotated[int, typer.Option("--level", help="The approval level (0-3)")],
) -> None:
    """Tenant admin: what executions of one approval level do (audited)."""
    if level not in (0, 1, 2, 3):
        raise fail("--level: approval levels are 0-3")
    try:
        chosen = parse_mode(mode)
    except BadInput as exc:
        raise fail(f"MODE: {exc}") from None

    async def work(settings: Settings) -> tuple[str, Staging]:
        return await _change(settings, level=level, mode=chosen.value)

    tenant, done = run(work)
    out.print(f"tenant {tenant}: staged enablement: {describe(done)}", highlight=False)


@tenant_app.command("canary")
def tenant_canary(
    percent: Annotated[
        int, typer.Argument(help="0-100: share of eligible executions run for real")
    ],
) -> None:
    """Tenant admin: the canary share; the other eligible executions run record-only."""
    if not 0 <= percent <= 100:
        raise fail("PERCENT: must be 0-100")

    async def work(settings: Settings) -> tuple[str, Staging]:
        return await _change(settings, canary_percent=percent)

    tenant, done = run(work)
    out.print(f"tenant {tenant}: staged enablement: {describe(done)}", highlight=False)


@tenant_app.command("staging")
def tenant_staging() -> None:
    """Show the tenant's staged enablement."""

    async def work(settings: Settings) -> Staging:
        async with session(settings) as s:
            if isinstance(s, Remote):
                return _from_body((await s.api.call("GET", "/tenant/staging"))[1])
            return await service.get(s.db, s.caller)

    out.print(f"staged enablement: {describe(run(work))}", highlight=False)
