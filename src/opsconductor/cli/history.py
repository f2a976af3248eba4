"""Old history: prune finished executions after exporting them, and the retention setting.

Runs on the installation, as its administrator (the database directly, logged in elsewhere
or not): the export file is written on this machine.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from opsconductor.cli.runtime import fail, local, out, run
from opsconductor.config import Settings
from opsconductor.services import history
from opsconductor.services.caller import Caller

history_app = typer.Typer(
    help="Old history: export then prune finished executions; retention.", no_args_is_help=True
)


def _cutoff(text: str) -> datetime:
    """A date (midnight UTC) or an ISO date-time (UTC unless it names a zone)."""
    try:
        found = datetime.fromisoformat(text)
    except ValueError:
        raise fail(f"--before {text!r}: use a date (2026-01-31) or an ISO date-time") from None
    return found if found.tzinfo is not None else found.replace(tzinfo=UTC)


@history_app.command("prune")
def history_prune(
    export: Annotated[
        Path, typer.Option(help="JSON Lines file to write what is removed to (must not exist)")
    ],
    before: Annotated[
        str | None, typer.Option(help="prune executions finished before this date")
    ] = None,
    retention: Annotated[
        bool, typer.Option("--retention", help="use each tenant's retention setting instead")
    ] = False,
    tenant: Annotated[
        str | None, typer.Option(help="only this tenant (default: every tenant)")
    ] = None,
) -> None:
    """Export, then delete, finished executions (and their steps, events, approvals) older
    than --before or than each tenant's retention, and webhook deliveries and fired schedule
    slots as old. Unfinished executions are never touched; the tenant audit trail is kept."""
    cutoff = _cutoff(before) if before is not None else None

    async def work(settings: Settings) -> history.PruneReport:
        async with local(settings) as here:
            return await history.prune(
                here.db,
                here.caller,
                export=export,
                before=cutoff,
                retention=retention,
                tenant_id=tenant,
                hook_window_s=settings.hook_window_s,
            )

    report = run(work)
    parts = ", ".join(f"{n} {kind}" for kind, n in sorted(report.counts.items())) or "nothing"
    out.print(f"pruned {report.executions} execution(s) ({parts}); export: {export}")
    if report.kept_referenced:
        out.print(f"kept {report.kept_referenced} finished execution(s) a kept one retries")


@history_app.command("retention")
def history_retention(
    days: Annotated[
        str | None, typer.Argument(help="days to keep finished executions, or 'off'")
    ] = None,
) -> None:
    """Show or set how long this tenant keeps finished executions; `opsc history prune
    --retention` (from cron, say) applies it."""
    if days is not None and days != "off" and not days.isdigit():
        raise fail("retention: a number of days, or 'off'")

    async def work(settings: Settings) -> tuple[Caller, int | None]:
        async with local(settings) as here:
            if days is not None:
                await history.set_retention(
                    here.db, here.caller, None if days == "off" else int(days)
                )
            return here.caller, await history.retention(here.db, here.caller)

    caller, kept = run(work)
    shown = "off (kept until pruned by hand)" if kept is None else f"{kept} day(s)"
    out.print(f"tenant {caller.tenant_id}: history retention {shown}")
