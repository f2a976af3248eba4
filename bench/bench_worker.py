"""One worker process of the queue benchmark (started by ``bench/throughput.py``).

    python bench/bench_worker.py KIND URL CONCURRENCY DONE_FILE

KIND is ours, ours-sh, pgqueuer or procrastinate.

Every kind first gets fully ready (imports, connections, schema checks), prints ``ready``
and waits for a line on stdin, so that the parent can start all workers at the same moment
and the timing leaves out process start-up. SIGTERM stops it the way each system stops.

* ``ours`` and ``ours-sh`` are the real ``opsc worker --concurrency N`` command
  (``opsconductor.cli``), with nothing changed but that start gate. They differ only in the
  plans ``bench/throughput.py`` queued for them: a ``type: noop`` step, or (the diagnostic)
  a ``command: "true"`` step that spawns ``/bin/sh -c true``.
* ``pgqueuer`` and ``procrastinate`` run a no-op task function that only notes the job it
  was given and when it started; at exit the worker writes those notes to DONE_FILE (``id
  unix-time`` per line) so the parent can check that every job ran exactly once and measure
  the claim latency.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any


def _ready() -> None:
    print("ready", flush=True)


async def _gate() -> None:
    """Wait for the parent's ``go`` line without blocking the event loop."""
    _ready()
    await asyncio.to_thread(sys.stdin.readline)


def ours(url: str, concurrency: int) -> None:
    os.environ["DATABASE_URL"] = url
    from opsconductor import cli, worker

    serve: Callable[..., Awaitable[None]] = worker.Worker.serve

    async def gated(self: worker.Worker, **options: Any) -> None:
        # ``options``: what the CLI passes (``on_ready`` in newer checkouts, none in older)
        await _gate()
        await serve(self, **options)

    worker.Worker.serve = gated  # type: ignore[method-assign]
    sys.argv = ["opsc", "worker", "--concurrency", str(concurrency)]
    cli.main()


async def _pgqueuer(url: str, concurrency: int, done: list[str]) -> None:
    import psycopg
    from pgqueuer import PsycopgDriver, Queries, QueueManager
    from pgqueuer.models import Job

    conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
    qm = QueueManager(Queries(PsycopgDriver(conn)))

    @qm.entrypoint("noop")
    async def noop(job: Job) -> None:
        done.append(f"{job.id} {time.time()}")

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, qm.shutdown.set)
    await _gate()
    # PgQueuer's defaults, as in its own benchmark: dequeue batches of 10, no cap on the
    # jobs in flight per process (``concurrency`` does not apply).
    await qm.run(batch_size=10)
    await conn.close()


async def _procrastinate(url: str, concurrency: int, done: list[str]) -> None:
    import procrastinate

    app = procrastinate.App(
        connector=procrastinate.PsycopgConnector(conninfo=url, min_size=2, max_size=concurrency + 4)
    )

    @app.task(name="noop")
    async def noop(n: int) -> None:
        done.append(f"{n} {time.time()}")

    async with app.open_async():
        await _gate()
        # SIGTERM is handled by procrastinate itself (graceful stop).
        await app.run_worker_async(concurrency=concurrency, wait=True, listen_notify=True)


def main() -> None:
    kind, url, concurrency_s, done_file = sys.argv[1:5]
    concurrency = int(concurrency_s)
    if kind in ("ours", "ours-sh"):
        ours(url, concurrency)
        return
    done: list[str] = []
    runner: Callable[[str, int, list[str]], Awaitable[Any]] = {
        "pgqueuer": _pgqueuer,
        "procrastinate": _procrastinate,
    }[kind]
    if kind == "pgqueuer":
        import uvloop  # PgQueuer's own runner (``pgq run``) uses uvloop when present

        uvloop.run(runner(url, concurrency, done))
    else:
        asyncio.run(runner(url, concurrency, done))
    Path(done_file).write_text("".join(f"{item}\n" for item in done))


if __name__ == "__main__":
    main()
