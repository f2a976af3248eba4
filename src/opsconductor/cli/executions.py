"""Commands on executions: validate, run, submit, list, show, watch, approve, reject,
cancel, and the dead-letter queue. Each works on the database as the local administrator,
or through the REST API after ``opsc login``."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from opsconductor import progress, secret_store, status_machine
from opsconductor.approvals import Decision
from opsconductor.cli import host, render
from opsconductor.cli.runtime import Local, Remote, Session, err, fail, out, run, session
from opsconductor.config import Settings
from opsconductor.errors import OpsError
from opsconductor.services import executions
from opsconductor.status_machine import Status

# Plans (pydantic), the engine, the approval gate and the HTTP client are imported where
# used: list, show and cancel start in a fraction of a second (tests/test_startup.py).
if TYPE_CHECKING:
    from opsconductor.engine import StepEvent
    from opsconductor.plan import Plan

app = typer.Typer()
dlq_app = typer.Typer(
    help="The dead-letter queue: executions whose attempts are spent.", no_args_is_help=True
)

Row = dict[str, Any]
ExecutionId = Annotated[str, typer.Argument(help="Execution id or a 6+ char prefix")]
PlanFile = Annotated[Path, typer.Argument(help="Plan file, YAML or JSON")]
IdempotencyKey = Annotated[
    str | None, typer.Option("--idempotency-key", "-k", help="Deduplicate on this key")
]
StepOption = Annotated[
    int | None,
    typer.Option("--step", min=0, help="Level 3: decide on this step (index) instead of the plan"),
]


def _plan_or_exit(path: Path) -> Plan:
    from opsconductor.plan import load_plan_file

    try:
        return load_plan_file(path)
    except OpsError as exc:
        raise fail(str(exc), exc.exit_code) from None


def _plan_bytes(path: Path) -> bytes:
    return path.read_bytes()  # already read and validated once by _plan_or_exit


YAML = {"Content-Type": "application/yaml"}


@app.command()
def validate(plan_file: PlanFile) -> None:
    """Check a plan and resolve its targets without running anything."""
    plan = _plan_or_exit(plan_file)

    async def work(settings: Settings) -> tuple[str, list[dict[str, Any]]]:
        async with session(settings) as s:
            if isinstance(s, Remote):
                _, found = await s.api.call(
                    "POST", "/executions/validate", content=_plan_bytes(plan_file), headers=YAML
                )
                return str(found["plan_hash"]), list(found["steps"])
            checked = await executions.validate(s.db, s.caller, plan)
            steps = [
                {
                    "name": step.name,
                    "type": step.type,
                    "action_class": step.action_class,
                    "action_class_inferred": step.action_class_inferred,
                    "targets": [a.asset_id for a in targets],
                    "files": [
                        {"src": src, "sha256": sha256}
                        for src, sha256 in sorted(checked.files.get(index, {}).items())
                    ],
                }
                for index, (step, targets) in enumerate(
                    zip(plan.steps, checked.targets, strict=True)
                )
            ]
            return checked.plan_hash, steps

    digest, steps = run(work)
    out.print(f"[green]valid[/green]: {escape(plan.name)} ({len(plan.steps)} steps)")
    for step in steps:
        kind = f"{step['type']}/{step['action_class']}"
        if step.get("action_class_inferred"):  # not in the plan: say so, it decides RBAC
            kind += ", inferred"
        # escaped: rich would take "[command/read]" for markup and print nothing
        out.print(escape(f"  {step['name']} [{kind}] -> {', '.join(step['targets'])}"))
        for pushed in step.get("files", []):
            out.print(escape(f"    pushes {pushed['src']} (sha256 {pushed['sha256']})"))
    out.print(f"plan hash: {digest}")


async def _submit(s: Session, plan: Plan, path: Path, key: str | None, **kw: Any) -> Row:
    """Submit; returns the execution with ``created`` telling new from duplicate."""
    if isinstance(s, Remote):
        headers = dict(YAML)
        if key:
            headers["Idempotency-Key"] = key
        params = {"record_only": "true"} if kw.get("record_only") else None
        status, found = await s.api.call(
            "POST", "/executions", content=_plan_bytes(path), headers=headers, params=params
        )
        return {**found, "created": status != 200}
    submitted = await executions.submit(s.db, s.caller, plan, idempotency_key=key, **kw)
    return {**submitted.execution, "created": submitted.created}


async def _execution(s: Session, execution_id: str) -> Row:
    if isinstance(s, Remote):
        found: Row = await s.api.get(f"/executions/{execution_id}")
        return found
    return await executions.get(s.db, s.caller, execution_id)


@app.command("run")
def run_(
    plan_file: PlanFile,
    idempotency_key: IdempotencyKey = None,
    record_only: Annotated[
        bool, typer.Option("--record-only", help="Dark launch: resolve and record, touch nothing")
    ] = False,
) -> None:
    """Validate, submit and run a plan now, showing progress; exit 0 if it completed.
    Locally it runs in this process; after ``opsc login`` the server runs it."""
    plan = _plan_or_exit(plan_file)

    async def work(settings: Settings) -> str:
        async with session(settings) as s:
            kw: dict[str, Any] = {"record_only": record_only}
            if isinstance(s, Local):
                kw["enqueue"] = False
                await host.bootstrap_local_exec(s)
            execution = await _submit(s, plan, plan_file, idempotency_key, **kw)
            if not execution["created"]:
                out.print(
                    f"already submitted within the deduplication window: execution "
                    f"{execution['id']} ({execution['status']}). Pass --idempotency-key to "
                    "run it again."
                )
            if execution["status"] == Status.PENDING_APPROVAL:
                execution = await _wait_for_approval(s, execution)
            if isinstance(s, Remote):
                if not status_machine.is_terminal(Status(execution["status"])):
                    await _follow_stream(s, str(execution["id"]))
            else:
                if execution["status"] == Status.APPROVED:
                    # New, or left unstarted by an earlier run that died: the engine's
                    # compare-and-set makes sure only one process runs it.
                    out.print(f"execution {execution['id']} ({plan.name})")
                    await _run_with_progress(s, execution)
                current = await _execution(s, str(execution["id"]))
                if not status_machine.is_terminal(Status(current["status"])):
                    # Another process runs it (the server that took the approval, say):
                    # follow it to its end rather than report it half-way.
                    await _follow(s, str(execution["id"]))
            await _show(s, str(execution["id"]), events=False)
            final = await _execution(s, str(execution["id"]))
            return str(final["status"])

    status = run(work)
    raise typer.Exit(0 if status == Status.COMPLETED else 1)


@app.command("submit")
def submit_(plan_file: PlanFile, idempotency_key: IdempotencyKey = None) -> None:
    """Validate and queue a plan for the workers; print its execution id at once."""
    plan = _plan_or_exit(plan_file)

    async def work(settings: Settings) -> Row:
        async with session(settings) as s:
            return await _submit(
                s,
                plan,
                plan_file,
                idempotency_key,
                **({} if isinstance(s, Remote) else {"enqueue": True}),
            )

    execution = run(work)
    if execution["created"] and execution["status"] == Status.PENDING_APPROVAL:
        hash_hint = f" --hash {execution['plan_hash']}" if execution["approval_level"] >= 2 else ""
        err.print(
            f"waits for approval (level {execution['approval_level']}); once approved it is "
            f"queued. Another person approves it with: opsc approve {execution['id']}{hash_hint}",
            highlight=False,
        )
    elif execution["created"]:
        err.print(
            f"queued: {plan.name} ({execution['sla_class']}, est. "
            f"{execution['estimated_duration_s']:.1f}s); follow it with opsc watch "
            f"{execution['id']}",
            highlight=False,
        )
    else:
        err.print(
            f"already submitted within the deduplication window ({execution['status']}); "
            "pass --idempotency-key to submit it again",
            highlight=False,
        )
    out.print(str(execution["id"]), highlight=False)


async def _wait_for_approval(s: Session, execution: Row) -> Row:
    """Block (durably: the request survives us) until someone decides or it expires."""
    from opsconductor.approvals import gate

    hash_hint = f" --hash {execution['plan_hash']}" if execution["approval_level"] >= 2 else ""
    out.print(
        f"execution {execution['id']} waits for approval (level "
        f"{execution['approval_level']}). Another person approves it with:\n"
        f"  opsc approve {execution['id']}{hash_hint}",
        highlight=False,
    )
    with out.status("waiting for approval (Ctrl-C stops waiting; the request stays open)"):
        while execution["status"] == Status.PENDING_APPROVAL:
            await asyncio.sleep(0.5)
            if isinstance(s, Local):
                await gate.expire_overdue(s.db)
            execution = {**execution, **await _execution(s, str(execution["id"]))}
    out.print(f"approval outcome: {render.styled(execution['status'])}")
    return execution


async def _run_with_progress(s: Local, execution: Row) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    seen = await executions.view(s.db, s.caller, str(execution["id"]))
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=out,
        transient=True,
    )
    task = bar.add_task("running", total=len(seen.steps))

    def observe(event: StepEvent) -> None:
        label = f"{event.step_name} @ {event.asset_id}"
        if event.status == "running":
            retry = f" (attempt {event.attempt})" if event.attempt > 1 else ""
            bar.update(task, description=f"running {label}{retry}")
            return
        detail = f": {event.detail}" if event.detail else ""
        bar.console.print(f"  {render.styled(event.status)} {label}{detail}", highlight=False)
        if event.final:
            bar.advance(task)

    with bar:
        await executions.run_here(s.db, s.caller, execution, observer=observe)


async def _show(s: Session, execution_id: str, *, events: bool) -> None:
    if isinstance(s, Remote):
        found = await s.api.get(f"/executions/{execution_id}")
        history = None
        if events:
            history = (await s.api.get(f"/executions/{found['id']}/events", after=0))["events"]
        render.execution(found, found["steps"], found.get("approvals", []), history)
        return
    # Stored text is masked already; the display masks again (tenant patterns added since).
    mask = (await secret_store.tenant_masker(s.db, s.caller.tenant_id)).mask
    seen = await executions.view(s.db, s.caller, execution_id)
    history = await executions.events(s.db, s.caller, execution_id) if events else None
    render.execution(seen.execution, seen.steps, seen.approvals, history, mask)


@app.command()
def show(execution_id: ExecutionId) -> None:
    """One execution: its steps, their outputs and its event history."""

    async def work(settings: Settings) -> None:
        async with session(settings) as s:
            await _show(s, execution_id, events=True)

    run(work)


@app.command()
def watch(execution_id: ExecutionId) -> None:
    """Follow an execution live: its events as they happen and a progress bar; exit 0 if it
    completes, 1 if it ends otherwise. After ``opsc login`` it follows the server's event
    stream (resuming after a dropped connection); without, it reads the database."""

    async def work(settings: Settings) -> str:
        async with session(settings) as s:
            if isinstance(s, Remote):
                return await _follow_stream(s, execution_id)
            return await _follow(s, execution_id)

    status = run(work)
    raise typer.Exit(0 if status == Status.COMPLETED else 1)


async def _follow_stream(s: Remote, execution_id: str) -> str:
    from opsconductor.stream_client import StreamWatcher

    async with StreamWatcher(s.api.login.api, s.api.login.token, execution_id) as watcher:
        execution = await watcher.get("")
        watcher.execution_id = str(execution["id"])
        out.print(f"[bold]{execution['plan_name']}[/bold]  {execution['id']}", highlight=False)
        bar = render.progress_bar()
        task = bar.add_task("", total=100, eta="")

        async def on_event(event: Row) -> None:
            event["created_at"] = datetime.fromisoformat(event["created_at"])
            bar.console.print(render.event_line(event), highlight=False)
            render.show_progress(bar, task, await watcher.get("/progress"))

        with bar:
            render.show_progress(bar, task, await watcher.get("/progress"))
            status = await watcher.follow(on_event)
        final = await watcher.get("")
    reason = final.get("status_reason")
    out.print(f"finished: {render.styled(status)}" + (f" — {reason}" if reason else ""))
    return status


async def _follow(s: Local, execution_id: str) -> str:
    execution = await executions.get(s.db, s.caller, execution_id)
    out.print(f"[bold]{execution['plan_name']}[/bold]  {execution['id']}", highlight=False)
    bar = render.progress_bar()
    task = bar.add_task("", total=100, eta="")
    cursor, key = 0, str(execution["id"])
    with bar:
        while True:
            current, step_rows, news = await executions.follow_state(s.db, s.caller, key, cursor)
            for ev in news:
                cursor = ev["id"]
                bar.console.print(render.event_line(ev), highlight=False)
            shown = progress.compute(step_rows, now=datetime.now(UTC))
            render.show_progress(bar, task, shown.as_dict())
            status = str(current["status"])
            if status_machine.is_terminal(Status(status)) and not news:
                break
            await asyncio.sleep(0.25)
    reason = current["status_reason"]
    out.print(f"finished: {render.styled(status)}" + (f" — {reason}" if reason else ""))
    return status


@app.command("list")
def list_(
    status: Annotated[str | None, typer.Option(help="Only executions in this status")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="How many, newest first")] = 20,
) -> None:
    """Recent executions, newest first."""
    if status is not None and status not in set(Status):
        raise fail(f"--status: must be one of {', '.join(Status)}")

    async def work(settings: Settings) -> list[Row]:
        async with session(settings) as s:
            if isinstance(s, Remote):
                found: list[Row] = (await s.api.get("/executions", status=status, limit=limit))[
                    "items"
                ]
                return found
            from opsconductor.db.reads import Filters

            rows, _ = await executions.page(
                s.db, s.caller, Filters(status, None, None), limit=limit
            )
            return rows

    render.table(
        ["id", "plan", "status", "actor", "created", "reason"],
        [
            [
                str(r["id"]),
                r["plan_name"],
                render.styled(r["status"]),
                r["actor_id"],
                f"{r['created_at']:%Y-%m-%d %H:%M:%S}",
                r["status_reason"] or "",
            ]
            for r in run(work)
        ],
    )


def _decide(
    execution_id: str,
    decision: Decision,
    reviewed_hash: str | None,
    comment: str | None,
    step: int | None,
) -> None:
    async def work(settings: Settings) -> Row:
        async with session(settings) as s:
            if isinstance(s, Remote):
                path = f"/executions/{execution_id}"
                path += f"/steps/{step}" if step is not None else ""
                path += "/approve" if decision is Decision.APPROVE else "/reject"
                body: Row = {"comment": comment}
                if decision is Decision.APPROVE:
                    body["plan_hash"] = reviewed_hash
                found: Row = (await s.api.call("POST", path, json_body=body))[1]
                return found
            return await executions.decide(
                s.db,
                s.caller,
                execution_id,
                decision,
                reviewed_hash=reviewed_hash,
                comment=comment,
                step_index=step,
            )

    execution = run(work)
    out.print(f"execution {execution['id']} is now {render.styled(execution['status'])}")


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
                ident, result = found["execution"]["id"], found["outcome"]
            else:
                outcome = await executions.cancel(s.db, s.caller, execution_id)
                ident, result = outcome.execution_id, outcome.result
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

    async def work(settings: Settings) -> list[Row]:
        async with session(settings) as s:
            if isinstance(s, Remote):
                found: list[Row] = await s.api.get(
                    "/dlq", include_requeued=str(all_).lower(), limit=limit
                )
                return found
            return await executions.dead_letters(s.db, s.caller, include_requeued=all_, limit=limit)

    rows = []
    for row in run(work):
        requeued = ""
        if row["requeued"]:
            requeued = f"{row['requeued_at']:%Y-%m-%d %H:%M:%S} by {row['requeued_by']}"
        rows.append(
            [
                str(row["execution_id"]),
                row["plan_name"],
                render.styled(row["status"]),
                str(row["attempt_count"]),
                f"{row['failed_at']:%Y-%m-%d %H:%M:%S}",
                row["failure_reason"],
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
            return f"requeued {execution['id']} ({execution['plan_name']})"

    out.print(run(work), highlight=False)
