"""The ``opsc`` command line. Exit codes: 0 success, 1 the operation failed, 2 bad input."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import asyncssh
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from opsconductor import (
    approval_gate,
    logs,
    masking,
    progress,
    rbac,
    secret_store,
    status_machine,
)
from opsconductor.approvals import Decision
from opsconductor.cancellation import request_cancel
from opsconductor.config import Settings, load_settings
from opsconductor.connectors import local
from opsconductor.db import approvals as approval_store
from opsconductor.db import assets as asset_store
from opsconductor.db import auth, executions, migrations, queue, steps
from opsconductor.db import connectors as connector_store
from opsconductor.db import secrets as secret_rows
from opsconductor.db import workers as worker_rows
from opsconductor.db.connection import Database, database_url
from opsconductor.engine import Engine, StepEvent
from opsconductor.errors import BadInput, NotFound, OpsError, PermissionDenied
from opsconductor.inventory import Asset, resolve_plan
from opsconductor.inventory_import import parse_inventory
from opsconductor.plan import Plan, load_plan_file
from opsconductor.plan_hash import plan_hash
from opsconductor.status_machine import Status
from opsconductor.stream_client import StreamWatcher
from opsconductor.submission import Request, submit
from opsconductor.worker import Worker, WorkerOptions

app = typer.Typer(
    help="OpsConductor Execution: run infrastructure operations plans safely.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
assets_app = typer.Typer(help="The inventory of assets plans can target.", no_args_is_help=True)
app.add_typer(assets_app, name="assets")
hosts_app = typer.Typer(help="Trusted SSH host keys of the tenant.", no_args_is_help=True)
app.add_typer(hosts_app, name="known-hosts")
tenant_app = typer.Typer(help="Settings of the current tenant.", no_args_is_help=True)
app.add_typer(tenant_app, name="tenant")
secrets_app = typer.Typer(
    help="Secrets in the built-in encrypted store (write-only: values are never shown).",
    no_args_is_help=True,
)
app.add_typer(secrets_app, name="secrets")
masking_app = typer.Typer(
    help="The tenant's own masking patterns, added to the built-in ones.", no_args_is_help=True
)
app.add_typer(masking_app, name="masking")
tokens_app = typer.Typer(help="API tokens (bearer), bound to an actor.", no_args_is_help=True)
app.add_typer(tokens_app, name="tokens")
roles_app = typer.Typer(help="Roles and role bindings (RBAC).", no_args_is_help=True)
app.add_typer(roles_app, name="roles")
dlq_app = typer.Typer(
    help="The dead-letter queue: executions whose attempts are spent.", no_args_is_help=True
)
app.add_typer(dlq_app, name="dlq")

out = Console()
err = Console(stderr=True)
T = TypeVar("T")

STATUS_STYLE = {
    "completed": "green",
    "running": "cyan",
    "failed": "red",
    "timeout": "red",
    "partial": "yellow",
    "cancelled": "magenta",
    "skipped": "dim",
    "pending": "dim",
}


def _exec(work: Callable[[Settings], Coroutine[Any, Any, T]]) -> T:
    """Run async work; turn our errors into one line on stderr and their exit code."""
    settings = load_settings()
    logs.configure()
    try:
        return asyncio.run(work(settings))
    except OpsError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False, markup=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        err.print("interrupted")
        raise typer.Exit(130) from None


@asynccontextmanager
async def _database(settings: Settings) -> AsyncIterator[Database]:
    db = Database(database_url(settings), min_size=1, max_size=4)
    async with db:
        await migrations.migrate(db)  # zero set-up: a new database is ready on first use
        yield db


def _styled(status: str) -> str:
    style = STATUS_STYLE.get(status, "white")
    return f"[{style}]{status}[/{style}]"


@app.command()
def migrate() -> None:
    """Create or upgrade the database schema."""

    async def work(settings: Settings) -> list[str]:
        async with Database(database_url(settings), max_size=1) as db:
            return await migrations.migrate(db)

    applied = _exec(work)
    out.print(f"applied: {', '.join(applied)}" if applied else "database is up to date")


@app.command()
def validate(plan_file: Annotated[Path, typer.Argument(help="Plan file, YAML or JSON")]) -> None:
    """Check a plan and resolve its targets without running anything."""
    plan = _plan_or_exit(plan_file)

    async def work(settings: Settings) -> None:
        async with _database(settings) as db, db.connection() as conn:
            await asset_store.ensure_tenant(conn, settings.tenant)
            inventory = await asset_store.list_all(conn, settings.tenant)
        targets = resolve_plan(plan, inventory)
        out.print(f"[green]valid[/green]: {escape(plan.name)} ({len(plan.steps)} steps)")
        for step, step_targets in zip(plan.steps, targets, strict=True):
            names = ", ".join(a.asset_id for a in step_targets)
            # escaped: rich would take "[command/read]" for markup and print nothing
            out.print(escape(f"  {step.name} [{step.type}/{step.action_class}] -> {names}"))
        out.print(f"plan hash: {plan_hash(plan, targets)}")

    _exec(work)


def _plan_or_exit(path: Path) -> Any:
    try:
        return load_plan_file(path)
    except OpsError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(exc.exit_code) from None


@app.command()
def run(
    plan_file: Annotated[Path, typer.Argument(help="Plan file, YAML or JSON")],
    idempotency_key: Annotated[
        str | None, typer.Option("--idempotency-key", "-k", help="Deduplicate on this key")
    ] = None,
    record_only: Annotated[
        bool, typer.Option("--record-only", help="Dark launch: resolve and record, touch nothing")
    ] = False,
) -> None:
    """Validate, submit and run a plan here and now, showing progress; exit 0 if completed."""
    plan = _plan_or_exit(plan_file)

    async def work(settings: Settings) -> str:
        async with _database(settings) as db:
            roles = await _local_roles(db, settings)

            def check(plan: Plan, targets: list[list[Asset]]) -> None:
                rbac.enforce_plan(settings.actor, roles, plan, targets)

            submitted = await submit(
                db,
                Request(
                    plan,
                    settings.tenant,
                    settings.actor,
                    idempotency_key,
                    record_only,
                    enqueue=False,
                ),
                check=check,
            )
            execution = submitted.execution
            if not submitted.created:
                out.print(
                    f"already submitted within the deduplication window: execution "
                    f"{execution['id']} ({execution['status']}). Pass --idempotency-key to "
                    "run it again."
                )
            if execution["status"] == Status.PENDING_APPROVAL:
                execution = await _wait_for_approval(db, settings, execution)
            if execution["status"] == Status.APPROVED:
                # New, or left unstarted by an earlier run that died: the engine's
                # compare-and-set makes sure only one process runs it.
                out.print(f"execution {execution['id']} ({plan.name})")
                await _run_with_progress(db, settings, execution)
            await _show(db, settings.tenant, str(execution["id"]), events=False)
            async with db.connection() as conn:
                final = await executions.get(conn, settings.tenant, str(execution["id"]))
            return str(final["status"])

    status = _exec(work)
    raise typer.Exit(0 if status == Status.COMPLETED else 1)


@app.command("submit")
def submit_(
    plan_file: Annotated[Path, typer.Argument(help="Plan file, YAML or JSON")],
    idempotency_key: Annotated[
        str | None, typer.Option("--idempotency-key", "-k", help="Deduplicate on this key")
    ] = None,
) -> None:
    """Validate and queue a plan for the workers; print its execution id at once."""
    plan = _plan_or_exit(plan_file)

    async def work(settings: Settings) -> executions.Submitted:
        async with _database(settings) as db:
            # stdout carries the id alone, so notes go to stderr
            roles = await _local_roles(db, settings, notes=err)

            def check(plan: Plan, targets: list[list[Asset]]) -> None:
                rbac.enforce_plan(settings.actor, roles, plan, targets)

            request = Request(plan, settings.tenant, settings.actor, idempotency_key, enqueue=True)
            return await submit(db, request, check=check)

    submitted = _exec(work)
    execution = submitted.execution
    if submitted.created and execution["status"] == Status.PENDING_APPROVAL:
        hash_hint = f" --hash {execution['plan_hash']}" if execution["approval_level"] >= 2 else ""
        err.print(
            f"waits for approval (level {execution['approval_level']}); once approved it is "
            f"queued. Another person approves it with: opsc approve {execution['id']}{hash_hint}",
            highlight=False,
        )
    elif submitted.created:
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


@app.command()
def worker(
    concurrency: Annotated[
        int, typer.Option(min=1, max=1000, help="Executions run at once in this process")
    ] = 4,
    grace_period: Annotated[
        float,
        typer.Option(
            min=0,
            help="On SIGTERM/SIGINT, seconds in-flight work may take before it is handed back",
        ),
    ] = 30.0,
    poll_interval: Annotated[
        float, typer.Option(min=0.05, help="Safety-net poll; wake-ups come by LISTEN/NOTIFY")
    ] = 5.0,
    lease_timeout: Annotated[
        float | None,
        typer.Option(min=0.5, help="Visibility timeout of claims (default: from the policies)"),
    ] = None,
    reap_interval: Annotated[
        float, typer.Option(min=0.05, help="Seconds between looks for expired leases")
    ] = 5.0,
) -> None:
    """Run queued executions until SIGTERM/SIGINT (a second signal hands work back at once)."""
    options = WorkerOptions(
        concurrency=concurrency,
        grace_s=grace_period,
        poll_s=poll_interval,
        lease_s=lease_timeout,
        reap_every_s=reap_interval,
    )

    async def work(settings: Settings) -> int:
        local.use_pidfd_child_watcher()  # no thread per spawned command (Python 3.11)
        db = Database(database_url(settings), min_size=1, max_size=min(concurrency, 16) + 4)
        async with db:
            await migrations.migrate(db)
            runner = Worker(db, actor_id=settings.actor, options=options)
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, runner.stop)
            err.print(
                f"worker {runner.worker_id} ready (concurrency {concurrency})", highlight=False
            )
            await runner.serve()
            return runner.handed_back

    handed_back = _exec(work)
    err.print(f"worker stopped; handed back {handed_back} execution(s)", highlight=False)


@dlq_app.command("list")
def dlq_list(
    all_: Annotated[bool, typer.Option("--all", help="Include entries already requeued")] = False,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="How many, newest first")] = 50,
) -> None:
    """Executions that ran out of attempts, newest first."""

    async def work(settings: Settings) -> list[dict[str, Any]]:
        async with _database(settings) as db, db.connection() as conn:
            return await queue.dead_letters(
                conn, settings.tenant, include_requeued=all_, limit=limit
            )

    table = Table("execution", "plan", "status", "attempts", "failed at", "reason", "requeued")
    for row in _exec(work):
        requeued = ""
        if row["requeued"]:
            requeued = f"{row['requeued_at']:%Y-%m-%d %H:%M:%S} by {row['requeued_by']}"
        table.add_row(
            str(row["execution_id"]),
            row["plan_name"],
            _styled(row["status"]),
            str(row["attempt_count"]),
            f"{row['failed_at']:%Y-%m-%d %H:%M:%S}",
            row["failure_reason"],
            requeued,
        )
    out.print(table)


@dlq_app.command("requeue")
def dlq_requeue(
    execution_id: Annotated[str, typer.Argument(help="Execution id or a 6+ char prefix")],
) -> None:
    """Put a dead-lettered execution back in the queue with a fresh attempt budget."""

    async def work(settings: Settings) -> dict[str, Any]:
        async with _database(settings) as db:
            return await queue.requeue(db, settings.tenant, execution_id, settings.actor)

    execution = _exec(work)
    out.print(f"requeued {execution['id']} ({execution['plan_name']})", highlight=False)


async def _local_roles(
    db: Database, settings: Settings, *, notes: Console = out
) -> list[rbac.Role]:
    """RBAC for the person at the shell: in a tenant where nobody holds a role yet, they
    become its admin (they own the database anyway); once roles are configured, their own
    bindings apply here exactly as over the API."""
    async with db.transaction() as conn:
        if await auth.bootstrap_local_admin(conn, settings.tenant, settings.actor):
            notes.print(
                f"note: nobody held a role in tenant {settings.tenant!r}; "
                f"{settings.actor!r} is now its admin (see 'opsc roles list')",
                highlight=False,
            )
        return await auth.roles_of(conn, settings.tenant, settings.actor)


async def _wait_for_approval(
    db: Database, settings: Settings, execution: dict[str, Any]
) -> dict[str, Any]:
    """Block (durably: the request survives us) until someone decides or it expires."""
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
            await approval_gate.expire_overdue(db)
            async with db.connection() as conn:
                execution = await executions.get(conn, settings.tenant, str(execution["id"]))
    out.print(f"approval outcome: {_styled(execution['status'])}")
    return execution


async def _run_with_progress(db: Database, settings: Settings, execution: dict[str, Any]) -> None:
    async with db.connection() as conn:
        total = len(await steps.list_for(conn, execution["id"]))
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=out,
        transient=True,
    )
    task = bar.add_task("running", total=total)

    def observe(event: StepEvent) -> None:
        label = f"{event.step_name} @ {event.asset_id}"
        if event.status == "running":
            retry = f" (attempt {event.attempt})" if event.attempt > 1 else ""
            bar.update(task, description=f"running {label}{retry}")
            return
        detail = f": {event.detail}" if event.detail else ""
        bar.console.print(f"  {_styled(event.status)} {label}{detail}", highlight=False)
        if event.final:
            bar.advance(task)

    engine = Engine(
        db, actor_id=settings.actor, observer=observe, authorize=auth.step_authorizer(db)
    )
    with bar:
        await engine.run(settings.tenant, execution["id"])


async def _show(db: Database, tenant: str, execution_id: str, *, events: bool) -> None:
    # Stored text is masked already; the display masks again (tenant patterns added since).
    mask = (await secret_store.tenant_masker(db, tenant)).mask
    async with db.connection() as conn:
        execution = await executions.get(conn, tenant, execution_id)
        step_rows = await steps.list_for(conn, execution["id"])
        history = await executions.events(conn, execution["id"]) if events else []
        decisions = await approval_store.history(conn, execution["id"]) if events else []
    reason = f" — {mask(execution['status_reason'])}" if execution["status_reason"] else ""
    if execution.get("record_only"):
        reason += " [record-only: nothing was touched]"
    out.print(
        f"[bold]{execution['plan_name']}[/bold]  {execution['id']}  "
        f"{_styled(execution['status'])}{reason}",
        highlight=False,
    )
    out.print(
        f"actor {execution['actor_id']} · {execution['sla_class']}/{execution['mode']} · "
        f"plan hash {execution['plan_hash'][:16]}… · "
        f"created {execution['created_at']:%Y-%m-%d %H:%M:%S}",
        highlight=False,
    )
    if execution["cancelled_by"]:
        out.print(
            f"cancelled by {execution['cancelled_by']} at {execution['cancelled_at']:%H:%M:%S}",
            highlight=False,
        )
    elif execution.get("cancel_requested_by"):
        out.print(
            f"cancel requested by {execution['cancel_requested_by']} at "
            f"{execution['cancel_requested_at']:%H:%M:%S}",
            highlight=False,
        )
    table = Table("#", "step", "target", "try", "status", "exit", "time", "output / error")
    for row in step_rows:
        took = ""
        if row["started_at"] and row["finished_at"]:
            took = f"{(row['finished_at'] - row['started_at']).total_seconds():.2f}s"
        text = (row["error"] or row["output"] or row["stderr"] or "").strip()
        table.add_row(
            str(row["step_index"]),
            row["step_name"],
            row["target_asset_id"],
            str(row["attempt"]),
            _styled(row["status"]),
            "" if row["exit_code"] is None else str(row["exit_code"]),
            took,
            mask(text)[-200:],
        )
    out.print(table)
    if decisions:
        approvals_table = Table(
            "level", "step", "state", "plan hash", "requested by", "decisions", "expires"
        )
        for a in decisions:
            votes = "; ".join(
                f"{d['actor_id']} {d['decision']}" + (f" ({d['comment']})" if d["comment"] else "")
                for d in a["decisions"]
            )
            approvals_table.add_row(
                str(a["level"]),
                "plan" if a["step_index"] is None else str(a["step_index"]),
                _styled(a["state"]),
                a["plan_hash"][:16] + "…",
                a["requested_by"],
                mask(votes),
                f"{a['expires_at']:%H:%M:%S}",
            )
        out.print(approvals_table)
    if events:
        history_table = Table("id", "at", "event", "change", "actor", "details")
        for ev in history:
            change = f"{ev['from_status'] or ''} → {ev['to_status']}" if ev["to_status"] else ""
            history_table.add_row(
                str(ev["id"]),
                f"{ev['created_at']:%H:%M:%S.%f}"[:-3],
                ev["event_type"],
                change,
                ev["actor_id"],
                mask(json.dumps(ev["payload"], default=str))[:120],
            )
        out.print(history_table)


@app.command()
def show(
    execution_id: Annotated[str, typer.Argument(help="Execution id or a 6+ char prefix")],
) -> None:
    """One execution: its steps, their outputs and its event history."""

    async def work(settings: Settings) -> None:
        async with _database(settings) as db:
            await _show(db, settings.tenant, execution_id, events=True)

    _exec(work)


@app.command()
def watch(
    execution_id: Annotated[str, typer.Argument(help="Execution id or a 6+ char prefix")],
    url: Annotated[
        str | None,
        typer.Option(
            envvar="OPSC_URL",
            help="API base URL (…/api/v1): follow its event stream instead of the database",
        ),
    ] = None,
    token: Annotated[
        str | None, typer.Option(envvar="OPSC_TOKEN", help="API token, with --url")
    ] = None,
) -> None:
    """Follow an execution live: its events as they happen and a progress bar; exit 0 if it
    completes, 1 if it ends otherwise. With --url it follows the server's SSE stream
    (resuming after a dropped connection); without, it reads the database directly."""

    async def from_database(settings: Settings) -> str:
        async with _database(settings) as db:
            return await _follow(db, settings.tenant, execution_id)

    async def from_stream(settings: Settings) -> str:
        if not token:
            raise BadInput("--url needs --token (or OPSC_TOKEN)")
        assert url is not None
        return await _follow_stream(url, token, execution_id)

    status = _exec(from_stream if url else from_database)
    raise typer.Exit(0 if status == Status.COMPLETED else 1)


def _progress_bar() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TextColumn("{task.fields[eta]}"),
        console=out,
        transient=True,
    )


def _show_progress(bar: Progress, task: Any, shown: dict[str, Any]) -> None:
    eta = f"ETA {shown['eta_s']:.0f}s" if shown.get("eta_s") else ""
    bar.update(
        task,
        completed=shown["percent"],
        eta=eta,
        description=f"{shown['done']} done, {shown['failed']} failed, "
        f"{shown['running']} running, {shown['pending']} pending",
    )


async def _follow_stream(url: str, token: str, execution_id: str) -> str:
    async with StreamWatcher(url, token, execution_id) as watcher:
        execution = await watcher.get("")
        watcher.execution_id = str(execution["id"])
        out.print(f"[bold]{execution['plan_name']}[/bold]  {execution['id']}", highlight=False)
        bar = _progress_bar()
        task = bar.add_task("", total=100, eta="")

        async def on_event(event: dict[str, Any]) -> None:
            event["created_at"] = datetime.fromisoformat(event["created_at"])
            bar.console.print(_event_line(event), highlight=False)
            _show_progress(bar, task, await watcher.get("/progress"))

        with bar:
            _show_progress(bar, task, await watcher.get("/progress"))
            status = await watcher.follow(on_event)
        final = await watcher.get("")
    reason = final.get("status_reason")
    out.print(f"finished: {_styled(status)}" + (f" — {reason}" if reason else ""))
    return status


async def _follow(db: Database, tenant: str, execution_id: str) -> str:
    async with db.connection() as conn:
        execution = await executions.get(conn, tenant, execution_id)
    out.print(f"[bold]{execution['plan_name']}[/bold]  {execution['id']}", highlight=False)
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TextColumn("{task.fields[eta]}"),
        console=out,
        transient=True,
    )
    task = bar.add_task("", total=100, eta="")
    cursor, status = 0, str(execution["status"])
    with bar:
        while True:
            async with db.connection() as conn:
                news = await executions.events(conn, execution["id"], cursor)
                rows = await steps.list_for(conn, execution["id"])
                current = await executions.get(conn, tenant, str(execution["id"]))
            for ev in news:
                cursor = ev["id"]
                bar.console.print(_event_line(ev), highlight=False)
            shown = progress.compute(rows, now=datetime.now(UTC))
            eta = f"ETA {shown.eta_s:.0f}s" if shown.eta_s else ""
            bar.update(
                task,
                completed=shown.percent,
                eta=eta,
                description=f"{shown.done} done, {shown.failed} failed, "
                f"{shown.running} running, {shown.pending} pending",
            )
            status = str(current["status"])
            if status_machine.is_terminal(Status(status)) and not news:
                break
            await asyncio.sleep(0.25)
    out.print(
        f"finished: {_styled(status)}"
        + (f" — {current['status_reason']}" if current["status_reason"] else "")
    )
    return status


def _event_line(ev: dict[str, Any]) -> str:
    at = f"{ev['created_at']:%H:%M:%S}"
    payload = ev["payload"] or {}
    if ev["event_type"] == "status_changed":
        return f"{at} {ev['from_status']} → {_styled(ev['to_status'])} by {ev['actor_id']}"
    if ev["event_type"] in ("step_started", "step_finished"):
        state = payload.get("status", "running")
        extra = f": {payload['error']}" if payload.get("error") else ""
        return (
            f"{at} {_styled(state)} {payload.get('step')} @ {payload.get('target')} "
            f"(attempt {payload.get('attempt')}){extra}"
        )
    return f"{at} {ev['event_type']} by {ev['actor_id']}"


@app.command()
def workers() -> None:
    """Workers that run or ran in the last day: host, pid, load and last heartbeat. A stale
    worker stopped beating without saying goodbye (crashed or cut off)."""

    async def work(settings: Settings) -> None:
        async with _database(settings) as db, db.connection() as conn:
            rows = await worker_rows.listing(conn)
        if not rows:
            out.print("no workers have registered")
            return
        table = Table("worker", "host", "pid", "state", "in flight", "started", "heartbeat")
        for row in rows:
            style = {"alive": "green", "stale": "red"}.get(row["state"], "dim")
            table.add_row(
                row["worker_id"],
                row["host"],
                str(row["pid"]),
                f"[{style}]{row['state']}[/{style}]",
                f"{row['in_flight']}/{row['concurrency']}",
                f"{row['started_at']:%Y-%m-%d %H:%M:%S}",
                f"{float(row['heartbeat_age_s']):.0f}s ago",
            )
        out.print(table)

    _exec(work)


@app.command("list")
def list_(
    status: Annotated[str | None, typer.Option(help="Only executions in this status")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="How many, newest first")] = 20,
) -> None:
    """Recent executions, newest first."""
    if status is not None and status not in set(Status):
        err.print(f"[red]error:[/red] --status: must be one of {', '.join(Status)}")
        raise typer.Exit(2)

    async def work(settings: Settings) -> None:
        async with _database(settings) as db, db.connection() as conn:
            rows = await executions.list_recent(conn, settings.tenant, status=status, limit=limit)
        table = Table("id", "plan", "status", "actor", "created", "reason")
        for row in rows:
            table.add_row(
                str(row["id"]),
                row["plan_name"],
                _styled(row["status"]),
                row["actor_id"],
                f"{row['created_at']:%Y-%m-%d %H:%M:%S}",
                row["status_reason"] or "",
            )
        out.print(table)

    _exec(work)


def _decide(
    execution_id: str,
    decision: Decision,
    reviewed_hash: str | None,
    comment: str | None,
    step: int | None,
) -> None:
    async def work(settings: Settings) -> dict[str, Any]:
        async with _database(settings) as db:
            allowed = rbac.decide(await _local_roles(db, settings), "executions", "approve")
            if not allowed.allowed:
                raise PermissionDenied(f"actor {settings.actor!r}: {allowed.reason}")
            return await approval_gate.decide(
                db,
                tenant_id=settings.tenant,
                execution_id=execution_id,
                actor_id=settings.actor,
                decision=decision,
                reviewed_hash=reviewed_hash,
                comment=comment,
                step_index=step,
            )

    execution = _exec(work)
    out.print(f"execution {execution['id']} is now {_styled(execution['status'])}")


StepOption = Annotated[
    int | None,
    typer.Option("--step", min=0, help="Level 3: decide on this step (index) instead of the plan"),
]


@app.command()
def approve(
    execution_id: Annotated[str, typer.Argument(help="Execution id or a 6+ char prefix")],
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
    execution_id: Annotated[str, typer.Argument(help="Execution id or a 6+ char prefix")],
    comment: Annotated[str, typer.Option(help="Why (required)")],
    step: StepOption = None,
) -> None:
    """Reject an execution (or, level 3, one of its steps) that waits for approval."""
    _decide(execution_id, Decision.REJECT, None, comment, step)


def _tags(values: list[str]) -> dict[str, str]:
    tags = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise BadInput(f"--tag {item!r}: use KEY=VALUE")
        tags[key] = value
    return tags


@assets_app.command("add")
def assets_add(
    asset_id: Annotated[str, typer.Argument(help="Unique id, e.g. web-1")],
    hostname: Annotated[str | None, typer.Option(help="Defaults to the id")] = None,
    address: Annotated[str | None, typer.Option(help="Defaults to the hostname")] = None,
    environment: Annotated[str, typer.Option(help="dev, staging, prod, ...")] = "dev",
    connection: Annotated[str, typer.Option(help="local or ssh")] = "local",
    port: Annotated[int | None, typer.Option(min=1, max=65535)] = None,
    os_name: Annotated[str | None, typer.Option("--os")] = None,
    tag: Annotated[list[str] | None, typer.Option(help="KEY=VALUE, repeatable")] = None,
    username: Annotated[str | None, typer.Option(help="SSH login name")] = None,
    credential_ref: Annotated[
        str | None, typer.Option(help="env:NAME or file:/path holding a password or key")
    ] = None,
) -> None:
    """Add an asset to the inventory."""
    if connection not in ("local", "ssh"):
        err.print("[red]error:[/red] --connection: must be 'local' or 'ssh'")
        raise typer.Exit(2)

    async def work(settings: Settings) -> Asset:
        asset = Asset(
            asset_id=asset_id,
            hostname=hostname or asset_id,
            address=address or hostname or asset_id,
            environment=environment,
            connection_type=connection,
            port=port,
            os=os_name,
            tags=_tags(tag or []),
            username=username,
            credential_ref=credential_ref,
        )
        async with _database(settings) as db, db.connection() as conn:
            await asset_store.ensure_tenant(conn, settings.tenant)
            return await asset_store.add(conn, settings.tenant, asset)

    added = _exec(work)
    out.print(f"added {added.asset_id} ({added.hostname}, {added.environment})")


@assets_app.command("import")
def assets_import(
    inventory_file: Annotated[Path, typer.Argument(help="Our YAML, or an Ansible INI/YAML")],
    environment: Annotated[str, typer.Option(help="Where the file names none")] = "dev",
) -> None:
    """Add or update assets from an inventory file (re-running it updates, never doubles)."""
    try:
        text = inventory_file.read_text(encoding="utf-8")
    except OSError as exc:
        err.print(f"[red]error:[/red] {inventory_file}: cannot read: {exc.strerror}")
        raise typer.Exit(2) from None

    async def work(settings: Settings) -> tuple[int, int]:
        found = parse_inventory(text, str(inventory_file), environment)
        async with _database(settings) as db, db.transaction() as conn:
            await asset_store.ensure_tenant(conn, settings.tenant)
            new = [await asset_store.upsert(conn, settings.tenant, a) for a in found]
        return sum(new), len(new) - sum(new)

    added, updated = _exec(work)
    out.print(f"imported {added + updated} assets ({added} new, {updated} updated)")


@assets_app.command("list")
def assets_list() -> None:
    """The inventory of the current tenant."""

    async def work(settings: Settings) -> list[Asset]:
        async with _database(settings) as db, db.connection() as conn:
            await asset_store.ensure_tenant(conn, settings.tenant)
            return await asset_store.list_all(conn, settings.tenant)

    table = Table("id", "hostname", "address", "environment", "connection", "login", "tags")
    for a in _exec(work):
        tags = ", ".join(f"{k}={v}" for k, v in sorted(a.tags.items()))
        login = ""
        if a.connection_type == "ssh":
            login = f"{a.username or '(worker user)'}@:{a.port or 22}"
            login += f" via {a.credential_ref}" if a.credential_ref else ""
        table.add_row(
            a.asset_id, a.hostname, a.address, a.environment, a.connection_type, login, tags
        )
    out.print(table)


@assets_app.command("remove")
def assets_remove(asset_id: str) -> None:
    """Remove an asset from the inventory."""

    async def work(settings: Settings) -> bool:
        async with _database(settings) as db, db.connection() as conn:
            return await asset_store.delete(conn, settings.tenant, asset_id)

    if not _exec(work):
        err.print(f"[red]error:[/red] asset {asset_id!r} not found")
        raise typer.Exit(2)
    out.print(f"removed {asset_id}")


@hosts_app.command("add")
def known_hosts_add(
    host: Annotated[str, typer.Argument(help="Address as the assets give it")],
    port: Annotated[int, typer.Option(min=1, max=65535)] = 22,
    key: Annotated[
        str | None, typer.Option(help="'ssh-ed25519 AAAA...' (else --scan asks the host)")
    ] = None,
    scan: Annotated[bool, typer.Option(help="Fetch the key from the host and trust it")] = False,
) -> None:
    """Trust an SSH host key for host:port. Compare the printed fingerprint out of band."""
    if (key is None) == (not scan):
        err.print("[red]error:[/red] give exactly one of --key or --scan")
        raise typer.Exit(2)

    async def work(settings: Settings) -> str:
        public = key or await _scan(host, port)
        try:
            fingerprint = asyncssh.import_public_key(public).get_fingerprint()
        except (asyncssh.KeyImportError, ValueError) as exc:
            raise BadInput(f"--key: not an OpenSSH public key: {exc}") from None
        async with _database(settings) as db, db.connection() as conn:
            await asset_store.ensure_tenant(conn, settings.tenant)
            await connector_store.add_known_host(
                conn, settings.tenant, host, port, " ".join(public.split()[:2]), settings.actor
            )
        return fingerprint

    out.print(f"trusted {host}:{port} {_exec(work)}")


async def _scan(host: str, port: int) -> str:
    try:
        found = await asyncssh.get_server_host_key(host, port)
    except (OSError, asyncssh.Error) as exc:
        raise BadInput(f"{host}:{port}: cannot fetch the host key: {exc}") from None
    if found is None:
        raise BadInput(f"{host}:{port}: the server offered no host key")
    return str(found.export_public_key().decode().strip())


@hosts_app.command("list")
def known_hosts_list() -> None:
    """Trusted host keys of the current tenant."""

    async def work(settings: Settings) -> list[dict[str, Any]]:
        async with _database(settings) as db, db.connection() as conn:
            return [dict(r) for r in await connector_store.list_known_hosts(conn, settings.tenant)]

    table = Table("host", "port", "fingerprint", "added by")
    for row in _exec(work):
        fingerprint = asyncssh.import_public_key(str(row["public_key"])).get_fingerprint()
        table.add_row(str(row["host"]), str(row["port"]), fingerprint, str(row["added_by"]))
    out.print(table)


@hosts_app.command("remove")
def known_hosts_remove(
    host: Annotated[str, typer.Argument(help="Address as the assets give it")],
    port: Annotated[int, typer.Option(min=1, max=65535)] = 22,
) -> None:
    """Forget every trusted key of host:port (after a host key rotation, say)."""

    async def work(settings: Settings) -> int:
        async with _database(settings) as db, db.connection() as conn:
            return await connector_store.remove_known_hosts(conn, settings.tenant, host, port)

    removed = _exec(work)
    if not removed:
        err.print(f"[red]error:[/red] no trusted key for {host}:{port}")
        raise typer.Exit(2)
    out.print(f"removed {removed} key(s) of {host}:{port}")


@tenant_app.command("record-only")
def tenant_record_only(
    state: Annotated[str, typer.Argument(help="on or off")],
) -> None:
    """Dark launch for the whole tenant: every run is resolved and recorded, nothing touched."""
    if state not in ("on", "off"):
        err.print("[red]error:[/red] STATE: must be 'on' or 'off'")
        raise typer.Exit(2)

    async def work(settings: Settings) -> None:
        async with _database(settings) as db, db.connection() as conn:
            await asset_store.ensure_tenant(conn, settings.tenant)
            await connector_store.set_record_only(conn, settings.tenant, state == "on")

    _exec(work)
    out.print(f"tenant {load_settings().tenant}: record-only {state}")


@tenant_app.command("host-keys")
def tenant_host_keys(
    policy: Annotated[str, typer.Argument(help="strict (default) or accept-new")],
) -> None:
    """Host key policy: accept-new trusts and records the first key of an unknown host."""
    if policy not in connector_store.HOST_KEY_POLICIES:
        err.print("[red]error:[/red] POLICY: must be 'strict' or 'accept-new'")
        raise typer.Exit(2)

    async def work(settings: Settings) -> None:
        async with _database(settings) as db, db.connection() as conn:
            await asset_store.ensure_tenant(conn, settings.tenant)
            await connector_store.set_host_key_policy(conn, settings.tenant, policy)

    _exec(work)
    out.print(f"tenant {load_settings().tenant}: host keys {policy}")


@app.command()
def cancel(
    execution_id: Annotated[str, typer.Argument(help="Execution id or a 6+ char prefix")],
) -> None:
    """Cancel an execution: at once if it has not started, else its engine stops it (< 1 s)."""

    async def work(settings: Settings) -> str:
        async with _database(settings) as db:
            outcome = await request_cancel(db, settings.tenant, execution_id, settings.actor)
        return {
            "cancelled": f"execution {outcome.execution_id} cancelled before it ran",
            "requested": f"cancel requested: execution {outcome.execution_id} is stopping",
            "already_requested": f"cancel already requested for {outcome.execution_id}",
        }[outcome.result]

    out.print(_exec(work), highlight=False)


def _read_secret_value(path: str) -> str:
    """From stdin when piped (never from argv: that shows in ``ps`` and shell history)."""
    if not sys.stdin.isatty():
        value = sys.stdin.read()
        return value[:-1] if value.endswith("\n") else value
    prompted: str = typer.prompt(f"value for {path}", hide_input=True, confirmation_prompt=True)
    return prompted


@secrets_app.command("set")
def secrets_set(
    path: Annotated[str, typer.Argument(help="e.g. kv/web/deploy-token")],
) -> None:
    """Store a secret (value from stdin, or a hidden prompt); plans use {secret: PATH}."""
    value = _read_secret_value(path)

    async def work(settings: Settings) -> bool:
        async with _database(settings) as db:
            async with db.connection() as conn:
                await asset_store.ensure_tenant(conn, settings.tenant)
            return await secret_store.put(
                db, settings.home, settings.tenant, path, value, settings.actor
            )

    created = _exec(work)
    out.print(f"{'stored' if created else 'replaced'} secret {path}", highlight=False)


@secrets_app.command("list")
def secrets_list() -> None:
    """Paths of the stored secrets (never their values)."""

    async def work(settings: Settings) -> list[dict[str, Any]]:
        async with _database(settings) as db, db.connection() as conn:
            return await secret_rows.list_all(conn, settings.tenant)

    table = Table("path", "key id", "updated", "by")
    for row in _exec(work):
        table.add_row(
            row["path"], row["key_id"], f"{row['updated_at']:%Y-%m-%d %H:%M:%S}", row["updated_by"]
        )
    out.print(table)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="0 picks a free port")] = 8080,
    demo: Annotated[
        bool, typer.Option("--demo", help="Create a demo tenant and print its admin token")
    ] = False,
    workers: Annotated[
        int,
        typer.Option(
            min=0, max=256, help="Executions this process runs from the queue at once (0: none)"
        ),
    ] = 4,
) -> None:
    """Serve the REST API and a worker pool for the queue until Ctrl-C."""
    from opsconductor.api.server import DemoAccess
    from opsconductor.api.server import serve as run_server

    def announce(url: str, access: DemoAccess | None) -> None:
        out.print(
            f"OpsConductor API listening on {url}  (OpenAPI: {url}/openapi.json)",
            soft_wrap=True,
        )
        out.print(
            f"Web console: {url.removesuffix('/api/v1')}/console/  (sign in with a token)",
            soft_wrap=True,
        )
        if access is not None:
            made = "created" if access.created else "existing"
            out.print(
                f"tenant {access.tenant_id!r}, actor {access.actor_id!r} (admin), {made} token:"
            )
            out.print(access.token, highlight=False, soft_wrap=True)
            out.print(
                f"try: curl -H 'Authorization: Bearer {access.token}' {url}/executions",
                highlight=False,
                soft_wrap=True,
            )
        out.print("Ctrl-C stops the server.")

    async def work(settings: Settings) -> None:
        await run_server(
            settings, host=host, port=port, demo=demo, announce=announce, workers=workers
        )

    settings = load_settings()
    logs.configure()
    try:
        asyncio.run(work(settings))
    except OpsError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        pass  # uvicorn has already drained requests and stopped background work
    out.print("stopped")


@tokens_app.command("create")
def tokens_create(
    actor: Annotated[str, typer.Argument(help="The actor the token acts as")],
    role: Annotated[
        list[str] | None, typer.Option(help="Also grant this role (repeatable)")
    ] = None,
    name: Annotated[str, typer.Option(help="A label for the token")] = "",
) -> None:
    """Create an API token for ACTOR in $OPSC_TENANT; it is shown once, stored hashed."""

    async def work(settings: Settings) -> auth.NewToken:
        async with _database(settings) as db, db.transaction() as conn:
            made = await auth.create_token(conn, settings.tenant, actor, name=name)
            for role_name in role or []:
                await auth.grant(conn, settings.tenant, actor, role_name, granted_by=settings.actor)
            return made

    made = _exec(work)
    out.print(f"token id {made.token_id} for {made.actor_id} in tenant {made.tenant_id}:")
    out.print(made.token, highlight=False, soft_wrap=True)


@tokens_app.command("revoke")
def tokens_revoke(token_id: Annotated[str, typer.Argument(help="The token id")]) -> None:
    """Revoke a token at once; requests with it answer 401 from now on."""

    async def work(settings: Settings) -> bool:
        async with _database(settings) as db, db.connection() as conn:
            return await auth.revoke_token(conn, settings.tenant, token_id)

    if not _exec(work):
        err.print(f"[red]error:[/red] token {token_id} not found or already revoked")
        raise typer.Exit(2)
    out.print(f"revoked {token_id}")


@tokens_app.command("list")
def tokens_list() -> None:
    """Tokens of $OPSC_TENANT (never their values)."""

    async def work(settings: Settings) -> list[dict[str, Any]]:
        async with _database(settings) as db, db.connection() as conn:
            return await auth.list_tokens(conn, settings.tenant)

    table = Table("token id", "actor", "name", "created", "revoked")
    for row in _exec(work):
        revoked = f"{row['revoked_at']:%Y-%m-%d %H:%M:%S}" if row["revoked_at"] else ""
        table.add_row(
            str(row["token_id"]),
            row["actor_id"],
            row["name"],
            f"{row['created_at']:%Y-%m-%d %H:%M:%S}",
            revoked,
        )
    out.print(table)


@secrets_app.command("delete")
def secrets_delete(path: str) -> None:
    """Delete a stored secret."""

    async def work(settings: Settings) -> bool:
        async with _database(settings) as db:
            return await secret_store.delete(db, settings.tenant, path)

    if not _exec(work):
        err.print(f"[red]error:[/red] secret {path!r} not found", highlight=False)
        raise typer.Exit(2)
    out.print(f"deleted secret {path}", highlight=False)


@secrets_app.command("rotate-key")
def secrets_rotate_key() -> None:
    """Re-seal every stored secret under a new master key ($OPSC_HOME/secret.key)."""

    async def work(settings: Settings) -> int:
        async with _database(settings) as db:
            return await secret_store.rotate_key(db, settings.home)

    count = _exec(work)
    out.print(f"new key in place; {count} secret(s) re-sealed")


@masking_app.command("add")
def masking_add(
    name: Annotated[str, typer.Argument(help="e.g. ticket-id")],
    pattern: Annotated[str, typer.Argument(help="Python regular expression")],
) -> None:
    """Mask every match of PATTERN in this tenant's output, events and logs."""

    async def work(settings: Settings) -> None:
        masking.validate_pattern(pattern)
        async with _database(settings) as db, db.connection() as conn:
            await asset_store.ensure_tenant(conn, settings.tenant)
            await secret_rows.put_pattern(conn, settings.tenant, name, pattern, settings.actor)

    _exec(work)
    out.print(f"masking pattern {name} saved", highlight=False)


@masking_app.command("list")
def masking_list() -> None:
    """The tenant's masking patterns."""

    async def work(settings: Settings) -> list[dict[str, Any]]:
        async with _database(settings) as db, db.connection() as conn:
            return await secret_rows.patterns(conn, settings.tenant)

    table = Table("name", "pattern", "by")
    for row in _exec(work):
        table.add_row(row["name"], row["pattern"], row["created_by"])
    out.print(table)


@masking_app.command("remove")
def masking_remove(name: str) -> None:
    """Remove one of the tenant's masking patterns."""

    async def work(settings: Settings) -> bool:
        async with _database(settings) as db, db.connection() as conn:
            return await secret_rows.delete_pattern(conn, settings.tenant, name)

    if not _exec(work):
        err.print(f"[red]error:[/red] masking pattern {name!r} not found", highlight=False)
        raise typer.Exit(2)
    out.print(f"removed masking pattern {name}", highlight=False)


@roles_app.command("list")
def roles_list() -> None:
    """Roles of $OPSC_TENANT with their permissions, and who holds them."""

    async def work(settings: Settings) -> tuple[list[rbac.Role], list[dict[str, Any]]]:
        async with _database(settings) as db, db.connection() as conn:
            custom = await auth.custom_roles(conn, settings.tenant)
            bindings = await auth.list_bindings(conn, settings.tenant)
        return [*rbac.BUILTIN_ROLES.values(), *custom.values()], bindings

    roles, bindings = _exec(work)
    holders: dict[str, list[str]] = {}
    for row in bindings:
        holders.setdefault(row["role_name"], []).append(row["actor_id"])
    table = Table("role", "permissions", "held by")
    for role in roles:
        table.add_row(
            role.name + ("" if role.builtin else " (custom)"),
            ", ".join(str(p) for p in role.permissions),
            ", ".join(holders.get(role.name, [])),
        )
    out.print(table)


@roles_app.command("grant")
def roles_grant(actor: str, role: str) -> None:
    """Bind ROLE to ACTOR in $OPSC_TENANT."""

    async def work(settings: Settings) -> bool:
        async with _database(settings) as db, db.transaction() as conn:
            return await auth.grant(conn, settings.tenant, actor, role, granted_by=settings.actor)

    new = _exec(work)
    out.print(f"{actor} {'now holds' if new else 'already held'} {role}")


@roles_app.command("revoke")
def roles_revoke(actor: str, role: str) -> None:
    """Unbind ROLE from ACTOR; steps not yet started are checked against the new roles."""

    async def work(settings: Settings) -> bool:
        async with _database(settings) as db, db.connection() as conn:
            return await auth.revoke_role(conn, settings.tenant, actor, role)

    if not _exec(work):
        err.print(f"[red]error:[/red] {actor} does not hold {role}")
        raise typer.Exit(2)
    out.print(f"{actor} no longer holds {role}")


@roles_app.command("define")
def roles_define(
    name: str,
    allow: Annotated[
        list[str], typer.Option(help="resource:action[@env,...], repeatable, e.g. steps:read@dev")
    ],
    description: Annotated[str, typer.Option()] = "",
) -> None:
    """Define a custom role of $OPSC_TENANT."""

    async def work(settings: Settings) -> rbac.Role:
        permissions = [rbac.parse_permission(p) for p in allow]
        async with _database(settings) as db:
            return await auth.define_role(
                db, settings.tenant, name, permissions, description=description
            )

    role = _exec(work)
    out.print(f"defined {role.name}: {', '.join(str(p) for p in role.permissions)}")


@roles_app.command("delete")
def roles_delete(name: str) -> None:
    """Delete a custom role and every binding to it."""

    async def work(settings: Settings) -> None:
        async with _database(settings) as db:
            if not await auth.delete_role(db, settings.tenant, name):
                raise NotFound(f"custom role {name!r} not found")

    _exec(work)
    out.print(f"deleted {name}")


def main() -> None:
    app(prog_name="opsc")


if __name__ == "__main__":
    main()
