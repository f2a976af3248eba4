"""Reading executions: show, watch, list. Locally from the database as its administrator,
or through the REST API after ``opsc login``; both render the API's shapes."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from opsconductor import progress, secret_store, status_machine
from opsconductor.api import models
from opsconductor.cli import render
from opsconductor.cli.runtime import Local, Remote, Session, fail, out, run, session
from opsconductor.config import Settings
from opsconductor.db.reads import Filters
from opsconductor.services import executions
from opsconductor.status_machine import Status

app = typer.Typer()

ExecutionId = Annotated[str, typer.Argument(help="Execution id or a 6+ char prefix")]


async def execution(s: Session, execution_id: str) -> models.Execution:
    if isinstance(s, Remote):
        return models.Execution.model_validate(await s.api.get(f"/executions/{execution_id}"))
    return models.Execution.from_record(await executions.get(s.db, s.caller, execution_id))


async def show_one(s: Session, execution_id: str, *, events: bool) -> None:
    if isinstance(s, Remote):
        found = models.ExecutionDetail.model_validate(
            await s.api.get(f"/executions/{execution_id}")
        )
        history = None
        if events:
            page = await s.api.get(f"/executions/{found.id}/events", after=0)
            history = models.EventPage.model_validate(page).events
        render.execution(found, found.steps, found.approvals, history)
        return
    # Stored text is masked already; the display masks again (tenant patterns added since).
    mask = (await secret_store.tenant_masker(s.db, s.caller.tenant_id)).mask
    seen = await executions.view(s.db, s.caller, execution_id)
    history = None
    if events:
        found_events = await executions.events(s.db, s.caller, execution_id)
        history = [models.Event.from_record(e) for e in found_events]
    record = seen.execution
    asked = None
    if record.cancel_requested_by is not None and record.cancel_requested_at is not None:
        asked = (record.cancel_requested_by, record.cancel_requested_at)
    render.execution(
        models.Execution.from_record(record),
        [models.Step.from_record(a) for a in seen.steps],
        [models.Approval.from_record(a) for a in seen.approvals],
        history,
        mask,
        cancel_requested=asked,
    )


@app.command()
def show(execution_id: ExecutionId) -> None:
    """One execution: its steps, their outputs and its event history."""

    async def work(settings: Settings) -> None:
        async with session(settings) as s:
            await show_one(s, execution_id, events=True)

    run(work)


@app.command()
def watch(execution_id: ExecutionId) -> None:
    """Follow an execution live: its events as they happen and a progress bar; exit 0 if it
    completes, 1 if it ends otherwise. After ``opsc login`` it follows the server's event
    stream (resuming after a dropped connection); without, it reads the database."""

    async def work(settings: Settings) -> str:
        async with session(settings) as s:
            if isinstance(s, Remote):
                return await follow_stream(s, execution_id)
            return await follow(s, execution_id)

    status = run(work)
    raise typer.Exit(0 if status == Status.COMPLETED else 1)


async def follow_stream(s: Remote, execution_id: str) -> str:
    """Follow the server's event stream to the end; returns the final status."""
    from opsconductor.stream_client import StreamWatcher  # httpx: only to follow a stream

    async with StreamWatcher(s.api.login.api, s.api.login.token, execution_id) as watcher:
        execution = models.Execution.model_validate(await watcher.get(""))
        watcher.execution_id = str(execution.id)
        out.print(f"[bold]{execution.plan_name}[/bold]  {execution.id}", highlight=False)
        bar = render.progress_bar()
        task = bar.add_task("", total=100, eta="")

        async def shown() -> models.Progress:
            return models.Progress.model_validate(await watcher.get("/progress"))

        async def on_event(event: dict[str, Any]) -> None:
            line = render.event_line(models.Event.model_validate(event))
            bar.console.print(line, highlight=False)
            render.show_progress(bar, task, await shown())

        with bar:
            render.show_progress(bar, task, await shown())
            status = await watcher.follow(on_event)
        final = models.Execution.model_validate(await watcher.get(""))
    reason = final.status_reason
    out.print(f"finished: {render.styled(status)}" + (f" — {reason}" if reason else ""))
    return status


async def follow(s: Local, execution_id: str) -> str:
    """Follow an execution in the database to the end; returns the final status."""
    execution = await executions.get(s.db, s.caller, execution_id)
    out.print(f"[bold]{execution.plan_name}[/bold]  {execution.id}", highlight=False)
    bar = render.progress_bar()
    task = bar.add_task("", total=100, eta="")
    cursor, key = 0, str(execution.id)
    with bar:
        while True:
            current, step_rows, news = await executions.follow_state(s.db, s.caller, key, cursor)
            for ev in news:
                cursor = ev.id
                bar.console.print(render.event_line(models.Event.from_record(ev)), highlight=False)
            shown = progress.compute(step_rows, now=datetime.now(UTC))
            render.show_progress(bar, task, models.Progress(**shown.as_dict()))
            if status_machine.is_terminal(current.status) and not news:
                break
            await asyncio.sleep(0.25)
    reason = current.status_reason
    out.print(f"finished: {render.styled(current.status)}" + (f" — {reason}" if reason else ""))
    return current.status.value


@app.command("list")
def list_(
    status: Annotated[str | None, typer.Option(help="Only executions in this status")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="How many, newest first")] = 20,
) -> None:
    """Recent executions, newest first."""
    if status is not None and status not in set(Status):
        raise fail(f"--status: must be one of {', '.join(Status)}")

    async def work(settings: Settings) -> list[models.Execution]:
        async with session(settings) as s:
            if isinstance(s, Remote):
                page = await s.api.get("/executions", status=status, limit=limit)
                return models.ExecutionPage.model_validate(page).items
            wanted = Filters(None if status is None else Status(status))
            found, _ = await executions.page(s.db, s.caller, wanted, limit=limit)
            return [models.Execution.from_record(e) for e in found]

    render.table(
        ["id", "plan", "status", "actor", "created", "reason"],
        [
            [
                str(e.id),
                e.plan_name,
                render.execution_status(e),
                e.actor_id,
                f"{e.created_at:%Y-%m-%d %H:%M:%S}",
                e.status_reason or "",
            ]
            for e in run(work)
        ],
    )
