"""Deciding on executions: approve, reject, cancel, and the dead-letter queue. Locally as
the database's administrator, or through the REST API after ``opsc login``."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from opsconductor.api import models
from opsconductor.approvals import Decision
from opsconductor.cli import render
from opsconductor.cli.runtime import Remote, out, run, session
from opsconductor.cli.watching import ExecutionId
from opsconductor.config import Settings
from opsconductor.services import executions

app = typer.Typer()
dlq_app = typer.Typer(
    help="The dead-letter queue: executions whose attempts are spent.", no_args_is_help=True
)

StepOption = Annotated[
    int | None,
    typer.Option("--step", min=0, help="Level 3: decide on this step (index) instead of the plan"),
]


def _decide(
    execution_id: str,
    decision: Decision,
    reviewed_hash: str | None,
    comment: str | None,
    step: int | None,
) -> None:
    async def work(settings: Settings) -> models.Execution:
        async with session(settings) as s:
            if isinstance(s, Remote):
                path = f"/executions/{execution_id}"
                path += f"/steps/{step}" if step is not None else ""
                path += "/approve" if decision is Decision.APPROVE else "/reject"
                body: dict[str, Any] = {"comment": comment}
                if decision is Decision.APPROVE:
                    body["plan_hash"] = reviewed_hash
                found = (await s.api.call("POST", path, json_body=body))[1]
                return models.Execution.model_validate(found)
            decided = await executions.decide(
                s.db,
                s.caller,
                execution_id,
                decision,
                reviewed_hash=reviewed_hash,
                comment=comment,
                step_index=step,
            )
            return models.Execution.from_record(decided)

    execution = run(work)
    out.print(f"execution {execution.id} is now {render.styled(execution.status)}")


@app.command()
def approve(
    execution_id: ExecutionId,
    plan_hash: Annotated[
        str | None, typer.Option("--hash", help="Plan hash you reviewed (levels 2 and 3)")
    ] = None,
    comment: Annotated[str | None, typer.Option(help="Why")] = None,
    step: StepOption = None,
) -> None:
    """Approve an execution (or, level 3, one of its steps) that waits for approval."""
    _decide(execution_id, Decision.APPROVE, plan_hash, comment, step)


@app.command()
def reject(
    execution_id: ExecutionId,
    comment: Annotated[str, typer.Option(help="Why (required)")],
    step: StepOption = None,
) -> None:
    """Reject an execution (or, level 3, one of its steps) that waits for approval."""
    _decide(execution_id, Decision.REJECT, None, comment, step)


@app.command()
def cancel(execution_id: ExecutionId) -> None:
    """Cancel an execution: at once if it has not started, else its engine stops it."""

    async def work(settings: Settings) -> str:
        async with session(settings) as s:
            if isinstance(s, Remote):
                found = (await s.api.call("POST", f"/executions/{execution_id}/cancel"))[1]
                done = models.CancelResult.model_validate(found)
                ident, result = str(done.execution.id), str(done.outcome)
            else:
                outcome = await executions.cancel(s.db, s.caller, execution_id)
                ident, result = str(outcome.execution_id), outcome.result
        return {
            "cancelled": f"execution {ident} cancelled before it ran",
            "requested": f"cancel requested: execution {ident} is stopping",
            "already_requested": f"cancel already requested for {ident}",
        }[result]

    out.print(run(work), highlight=False)


@dlq_app.command("list")
def dlq_list(
    all_: Annotated[bool, typer.Option("--all", help="Include entries already requeued")] = False,
    limit: Annotated[int, typer.Option(min=1, max=500, help="How many, newest first")] = 50,
) -> None:
    """Executions that ran out of attempts, newest first."""

    async def work(settings: Settings) -> list[models.DeadLetter]:
        async with session(settings) as s:
            if isinstance(s, Remote):
                found = await s.api.get("/dlq", include_requeued=str(all_).lower(), limit=limit)
            else:
                found = await executions.dead_letters(
                    s.db, s.caller, include_requeued=all_, limit=limit
                )
            return [models.DeadLetter.model_validate(row) for row in found]

    rows = []
    for entry in run(work):
        requeued = ""
        if entry.requeued and entry.requeued_at:
            requeued = f"{entry.requeued_at:%Y-%m-%d %H:%M:%S} by {entry.requeued_by}"
        rows.append(
            [
                str(entry.execution_id),
                entry.plan_name,
                render.styled(entry.status),
                str(entry.attempt_count),
                f"{entry.failed_at:%Y-%m-%d %H:%M:%S}",
                entry.failure_reason,
                requeued,
            ]
        )
    render.table(
        ["execution", "plan", "status", "attempts", "failed at", "reason", "requeued"], rows
    )


@dlq_app.command("requeue")
def dlq_requeue(execution_id: ExecutionId) -> None:
    """Put a dead-lettered execution back in the queue with a fresh attempt budget."""

    async def work(settings: Settings) -> str:
        async with session(settings) as s:
            if isinstance(s, Remote):
                found = (await s.api.call("POST", f"/dlq/{execution_id}/requeue"))[1]
                return f"requeued {found['execution_id']} ({found['plan_name']})"
            execution = await executions.requeue(s.db, s.caller, execution_id)
            return f"requeued {execution.id} ({execution.plan_name})"

    out.print(run(work), highlight=False)
