"""The installation itself: schema, worker processes, the server, and the workers' state.
These act on the database as the local administrator whether or not a login is stored."""

from __future__ import annotations

from typing import Annotated, Any, NoReturn

import typer

from opsconductor.cli import render
from opsconductor.cli.runtime import Remote, err, fail, out, run, session
from opsconductor.config import Settings, load_settings

# The rest is imported by the commands that use it: `opsc list` must not load a worker.

app = typer.Typer()
Row = dict[str, Any]


@app.command()
def migrate() -> None:
    """Create or upgrade the database schema."""

    from opsconductor.db import migrations
    from opsconductor.db.connection import Database, database_url

    async def work(settings: Settings) -> list[str]:
        async with Database(database_url(settings), max_size=1) as db:
            return await migrations.migrate(db)

    applied = run(work)
    out.print(f"applied: {', '.join(applied)}" if applied else "database is up to date")


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
    processes: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=256,
            help="Run this many worker processes and restart any that dies (with back-off); "
            "SIGTERM/SIGINT stops them all gracefully",
        ),
    ] = None,
) -> None:
    """Run queued executions until SIGTERM/SIGINT (a second signal hands work back at once)."""
    if processes is not None:
        _supervise(
            processes,
            grace_period,
            [
                f"--concurrency={concurrency}",
                f"--grace-period={grace_period}",
                f"--poll-interval={poll_interval}",
                f"--reap-interval={reap_interval}",
                *([f"--lease-timeout={lease_timeout}"] if lease_timeout is not None else []),
            ],
        )
    import asyncio
    import dataclasses
    import signal

    from opsconductor.connectors import local
    from opsconductor.db import migrations
    from opsconductor.db.connection import Database, database_url
    from opsconductor.services.caller import unix_user
    from opsconductor.worker import Worker, WorkerOptions

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
            # Events a worker writes (status changes, reaps) name the worker's OS user.
            kept = dataclasses.replace(
                options,
                retention_s=settings.worker_retention_s,
                schedule_every_s=settings.schedule_tick_s,
                schedule_grace_s=settings.schedule_grace_s,
            )
            runner = Worker(db, actor_id=f"worker:{unix_user()}", options=kept)
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, runner.stop)
            await runner.serve(
                on_ready=lambda: err.print(
                    f"worker {runner.worker_id} ready (concurrency {concurrency})",
                    highlight=False,
                )
            )
            return runner.handed_back

    handed_back = run(work, fast_loop=True)
    err.print(f"worker stopped; handed back {handed_back} execution(s)", highlight=False)


def _supervise(processes: int, grace_s: float, options: list[str]) -> NoReturn:
    from opsconductor import logs, supervisor

    logs.configure()
    # Past its grace period a child hands its work back; one still running well after
    # that is stuck, and is killed so that the stop ends.
    chief = supervisor.Supervisor(
        supervisor.worker_command(options), processes, kill_after_s=grace_s + 30.0
    )
    err.print(f"supervising {processes} worker processes", highlight=False)
    status = chief.run()
    err.print(f"workers stopped (exit status {status})", highlight=False)
    raise typer.Exit(status)


@app.command()
def workers() -> None:
    """Workers that run or ran in the last day: host, pid, load and last heartbeat. A stale
    worker stopped beating without saying goodbye (crashed or cut off)."""

    from opsconductor.services import inventory

    async def work(settings: Settings) -> list[Row]:
        async with session(settings) as s:
            if isinstance(s, Remote):
                found: list[Row] = await s.api.get("/workers")
                return found
            return await inventory.workers(s.db, s.caller)

    rows = run(work)
    if not rows:
        out.print("no workers have registered")
        return
    shown = []
    for row in rows:
        style = {"alive": "green", "stale": "red"}.get(row["state"], "dim")
        shown.append(
            [
                row["worker_id"],
                row["host"],
                str(row["pid"]),
                f"[{style}]{row['state']}[/{style}]",
                f"{row['in_flight']}/{row['concurrency']}",
                f"{row['started_at']:%Y-%m-%d %H:%M:%S}",
                f"{float(row['heartbeat_age_s']):.0f}s ago",
            ]
        )
    render.table(["worker", "host", "pid", "state", "in flight", "started", "heartbeat"], shown)


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
    import asyncio

    from opsconductor import logs
    from opsconductor.api.server import DemoAccess
    from opsconductor.api.server import serve as run_server
    from opsconductor.errors import OpsError

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
            out.print(
                f"or, from a shell: opsc login {url.removesuffix('/api/v1')}  (paste the token)",
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
        raise fail(str(exc), exc.exit_code) from None
    except KeyboardInterrupt:
        pass  # uvicorn has already drained requests and stopped background work
    out.print("stopped")
