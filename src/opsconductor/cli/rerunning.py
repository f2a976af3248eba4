"""Re-running the failed: ``opsc rerun ID --failed``. A new execution of the same plan over
only the targets that failed or never ran, linked to the old one; it runs here with
progress, as ``opsc run`` does (``--queue`` hands it to the workers instead)."""

from __future__ import annotations

from typing import Annotated

import typer

from opsconductor.api import models
from opsconductor.cli import host
from opsconductor.cli.running import see_through
from opsconductor.cli.runtime import Remote, Session, err, fail, out, run, session
from opsconductor.config import Settings
from opsconductor.services import executions
from opsconductor.status_machine import Status

app = typer.Typer()


async def _rerun(
    s: Session, execution_id: str, queue: bool
) -> tuple[models.Execution, bool, list[str]]:
    """Ask for the re-run: the new execution, whether it is new, and its targets."""
    if isinstance(s, Remote):
        params = {"failed": "true"}
        if queue:
            params["queue"] = "true"
        code, found = await s.api.call("POST", f"/executions/{execution_id}/rerun", params=params)
        detail = models.ExecutionDetail.model_validate(found)
        return detail, code != 200, sorted({row.target_asset_id for row in detail.steps})
    await host.bootstrap_local_exec(s)
    # Locally it runs in this process, as opsc run does (enqueue=False), unless --queue.
    done = await executions.rerun_failed(s.db, s.caller, execution_id, enqueue=queue)
    record = done.execution
    planned: list[list[str]] = record.plan_snapshot["targets"]
    targets = sorted({t for step in planned for t in step})
    return models.Execution.from_record(record), done.created, targets


@app.command()
def rerun(
    execution_id: Annotated[str, typer.Argument(help="Execution id or a 6+ char prefix")],
    failed: Annotated[
        bool, typer.Option("--failed", help="Only the targets that failed or never ran")
    ] = False,
    queue: Annotated[
        bool, typer.Option("--queue", help="Hand it to the workers; print its id and return")
    ] = False,
) -> None:
    """Run a finished execution's plan again over only its targets that failed or never ran
    (the whole plan, on each of them); exit 0 if the re-run completed. Its plan hash is new,
    so a plan that needs approval needs it again."""
    if not failed:
        raise fail(
            "give --failed: only the failed targets can be re-run (to run everything "
            "again, submit the plan)"
        )

    async def work(settings: Settings) -> str:
        async with session(settings) as s:
            found, created, targets = await _rerun(s, execution_id, queue)
            key = str(found.id)
            if not created:
                out.print(
                    f"already re-run within the deduplication window: execution {key} "
                    f"({found.status})",
                    highlight=False,
                )
            else:
                err.print(
                    f"execution {key} re-runs {found.rerun_of} on {len(targets)} "
                    f"target{'s' if len(targets) != 1 else ''}: {', '.join(targets)}",
                    highlight=False,
                )
            if queue:
                out.print(key, highlight=False)
                return found.status
            return await see_through(s, found)

    status = run(work)
    if queue:
        err.print(f"{status}; follow it with opsc watch ID", highlight=False)
        raise typer.Exit(0)
    raise typer.Exit(0 if status == Status.COMPLETED else 1)
