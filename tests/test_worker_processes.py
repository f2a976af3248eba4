"""Workers as operators run them: real ``opsc worker`` processes against a real database,
killed, stopped and crowded. Step commands append to files, so the files count side effects:
what ran, and how many times."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from opsconductor.db import assets, auth
from opsconductor.db.connection import Database
from opsconductor.inventory import Asset
from opsconductor.plan import Plan
from opsconductor.submission import Request, submit
from tests.plans import command_step, plan_of
from tests.safety_support import live_in, sandbox_of

#: Short leases and frequent reaping, so a killed worker's work comes back within seconds.
FAST_RECOVERY = ("--lease-timeout", "2", "--reap-interval", "0.2", "--poll-interval", "1")
TERMINAL = {"completed", "failed", "cancelled", "timeout", "partial", "rejected"}


class Workers:
    """Starts ``opsc worker`` processes and makes sure none outlives its test."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = env
        self.logs = logs
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, *args: str) -> subprocess.Popen[str]:
        log = (self.logs / f"worker-{len(self.procs)}.log").open("w")
        proc = subprocess.Popen(
            [sys.executable, "-m", "opsconductor.cli", "worker", *args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.procs.append(proc)
        return proc

    def log_of(self, proc: subprocess.Popen[str]) -> str:
        return (self.logs / f"worker-{self.procs.index(proc)}.log").read_text()

    def stop(self, proc: subprocess.Popen[str]) -> int:
        proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout=60)

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)


@pytest.fixture
def workers(cli_env: dict[str, str], tmp_path: Path) -> Iterator[Workers]:
    logs = tmp_path / "worker-logs"
    logs.mkdir()
    # Asset locks of a killed worker expire after 3 s instead of 30, like its queue leases.
    pool = Workers({**cli_env, "OPSC_LOCK_TTL_S": "3"}, logs)
    yield pool
    pool.kill_all()


def wait_until(check: Callable[[], bool], what: str, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def query(url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchall()


def status_of(url: str, execution_id: str) -> tuple[str, str | None]:
    ((status, reason),) = query(
        url,
        "SELECT status::text, status_reason FROM execution.executions WHERE id = %s",
        execution_id,
    )
    return status, reason


def opsc(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "opsconductor.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


#: Execution budget of these plans: it keeps counting across crashes and restarts, and a
#: loaded test machine must not turn a slow restart into a ``timeout``.
BUDGET_S = 600


def submit_file(env: dict[str, str], tmp_path: Path, name: str, steps: list[dict[str, Any]]) -> str:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"name": name, "timeout_s": BUDGET_S, "steps": steps}))
    result = opsc(env, "submit", str(path))
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()  # the id, alone on stdout


def crash(proc: subprocess.Popen[str]) -> None:
    """A machine dies: the worker and the commands it started go at once (each local step's
    sandbox dies with its worker: bwrap --die-with-parent)."""
    proc.kill()
    proc.wait(timeout=30)


def pids(log: Path, word: str) -> list[int]:
    return [int(line.split()[1]) for line in lines(log) if line.startswith(word + " ")]


def test_sigkill_mid_step_another_worker_finishes_without_rerunning_finished_steps(
    cli_env: dict[str, str], database_url: str, tmp_path: Path, work_dir: Path, workers: Workers
) -> None:
    safe, unsafe, rerun = work_dir / "safe.log", work_dir / "unsafe.log", work_dir / "rerun"
    add_hosts(database_url, ["node-a", "node-b"])
    resumable = submit_file(
        cli_env,
        tmp_path,
        "resumable",
        [
            command_step("one", f"echo one >> {safe}", action_class="modify", **on("node-a")),
            # idempotent (read): may run again; the first run hangs until the crash
            command_step(
                "two",
                f"echo two $$ >> {safe}; [ -f {rerun} ] || {{ touch {rerun}; sleep 60; }}",
                timeout_s=120,
                **on("node-a"),
            ),
            command_step("three", f"echo three >> {safe}", action_class="modify", **on("node-a")),
        ],
    )
    stuck = submit_file(
        cli_env,
        tmp_path,
        "not-idempotent",
        [
            command_step("one", f"echo one >> {unsafe}", action_class="modify", **on("node-b")),
            command_step(
                "two",
                f"echo two $$ >> {unsafe}; sleep 60",
                action_class="deploy",
                timeout_s=120,
                **on("node-b"),
            ),
            command_step("three", f"echo three >> {unsafe}", action_class="modify", **on("node-b")),
        ],
    )
    first = workers.start("--concurrency", "2", *FAST_RECOVERY)
    wait_until(lambda: bool(pids(safe, "two") and pids(unsafe, "two")), "both executions mid-step")
    crash(first)

    second = workers.start("--concurrency", "2", *FAST_RECOVERY)
    wait_until(
        lambda: all(status_of(database_url, i)[0] in TERMINAL for i in (resumable, stuck)),
        "the second worker to finish both",
    )
    status, reason = status_of(database_url, resumable)
    assert status == "completed"
    # seen dead by its session or by its 2 s lease, whichever came first
    assert reason is not None and reason.startswith("interrupted by ") and "resumed after" in reason
    status, reason = status_of(database_url, stuck)
    assert status == "failed" and reason is not None and reason.startswith("interrupted")
    ran = Counter(line.split()[0] for line in lines(safe))
    assert ran == {"one": 1, "two": 2, "three": 1}  # only the idempotent step ran again
    ran = Counter(line.split()[0] for line in lines(unsafe))
    assert ran == {"one": 1, "two": 1}  # the interrupted deploy was not re-run
    assert workers.stop(second) == 0
    assert query(database_url, "SELECT * FROM execution.execution_queue") == []


async def _submit_all(url: str, plans: list[Plan]) -> list[str]:
    async with Database(url, max_size=4) as db:
        async with db.connection() as conn:  # the submitter's role, for the worker's re-check
            await auth.ensure_local_admin(conn, "default", "tester")
        ids = []
        for plan in plans:
            submitted = await submit(db, Request(plan, "default", "tester", enqueue=True))
            ids.append(str(submitted.execution.id))
        return ids


async def _add_hosts(url: str, names: list[str]) -> None:
    async with Database(url, max_size=1) as db, db.transaction() as conn:
        for name in names:
            await assets.add(conn, "default", Asset(name, name, "127.0.0.1", "dev"))


def add_hosts(url: str, names: list[str]) -> None:
    """One asset per execution: the queue is under test here, not the per-asset locks that
    keep two executions off one host at once."""
    asyncio.run(_add_hosts(url, names))


def on(host: str) -> dict[str, Any]:
    return {"targets": {"hostnames": [host]}}


def submit_all(url: str, plans: list[Plan]) -> list[str]:
    """Queue many plans in-process (faster than one ``opsc submit`` process each)."""
    return asyncio.run(_submit_all(url, plans))


def test_four_workers_drain_500_executions_each_exactly_once(
    cli_env: dict[str, str], database_url: str, work_dir: Path, workers: Workers
) -> None:
    counter = work_dir / "counter"
    add_hosts(database_url, [f"n{i}" for i in range(500)])
    pool = [workers.start("--concurrency", "8") for _ in range(4)]
    ids = set(
        submit_all(
            database_url,
            [
                plan_of(
                    command_step(
                        "count", f'echo "{i} $OPSC_EXECUTION_ID" >> {counter}', **on(f"n{i}")
                    ),
                    name=f"no-op {i}",
                )
                for i in range(500)
            ],
        )
    )

    def done() -> int:
        ((n,),) = query(
            database_url, "SELECT count(*) FROM execution.executions WHERE status = 'completed'"
        )
        return int(n)

    wait_until(lambda: done() == 500, "500 completed executions", timeout_s=240)
    assert [workers.stop(proc) for proc in pool] == [0, 0, 0, 0]

    records = [line.split() for line in lines(counter)]
    assert len(records) == 500
    assert sorted(int(n) for n, _ in records) == list(range(500))  # none lost, none twice
    assert {execution_id for _, execution_id in records} == ids
    starts = query(
        database_url,
        "SELECT execution_id, count(*) FROM execution.execution_events "
        "WHERE from_status = 'queued' AND to_status = 'running' GROUP BY execution_id",
    )
    assert len(starts) == 500 and {n for _, n in starts} == {1}
    ((attempts,),) = query(database_url, "SELECT count(*) FROM execution.execution_steps")
    assert attempts == 500
    owners = query(database_url, "SELECT DISTINCT worker_id FROM execution.executions")
    assert len(owners) >= 2  # the work was shared
    assert query(database_url, "SELECT * FROM execution.execution_queue") == []


def test_max_attempts_dead_letter_then_requeue_completes(
    cli_env: dict[str, str], database_url: str, tmp_path: Path, work_dir: Path, workers: Workers
) -> None:
    log, ok = work_dir / "tries.log", work_dir / "ok"
    execution_id = submit_file(
        cli_env,
        tmp_path,
        "crashes its workers",
        [
            command_step(
                "hang",
                f"[ -f {ok} ] && echo fine || {{ echo try $$ >> {log}; sleep 60; }}",
                timeout_s=120,
            )
        ],
    )
    for attempt in range(1, 4):  # fast/read policy: 3 attempts
        proc = workers.start("--concurrency", "1", *FAST_RECOVERY)
        wait_until(lambda n=attempt: len(lines(log)) == n, f"attempt {attempt} to start")
        crash(proc)

    last = workers.start("--concurrency", "1", *FAST_RECOVERY)

    def dead_lettered() -> bool:
        return bool(query(database_url, "SELECT 1 FROM execution.execution_dlq"))

    wait_until(dead_lettered, "the reaper to dead-letter the execution")
    listed = opsc(cli_env, "dlq", "list")
    assert listed.returncode == 0 and execution_id in listed.stdout
    assert "(attempt 3 of 3)" in listed.stdout
    assert "died (its database session ended)" in listed.stdout or "lease expired" in listed.stdout
    assert len(lines(log)) == 3  # the dead-lettered execution is left alone

    ok.touch()
    requeued = opsc(cli_env, "dlq", "requeue", execution_id[:8])
    assert requeued.returncode == 0, requeued.stderr
    wait_until(lambda: status_of(database_url, execution_id)[0] in TERMINAL, "the requeued run")
    assert status_of(database_url, execution_id) == ("completed", None)
    assert len(lines(log)) == 3
    assert workers.stop(last) == 0
    assert execution_id not in opsc(cli_env, "dlq", "list").stdout
    history = opsc(cli_env, "dlq", "list", "--all")
    assert execution_id in history.stdout and "by local-admin:" in history.stdout


def test_sigterm_lets_in_flight_work_finish_and_leaves_the_rest_queued(
    cli_env: dict[str, str], database_url: str, work_dir: Path, workers: Workers
) -> None:
    log = work_dir / "log"
    add_hosts(database_url, [f"job-{i}" for i in range(4)])
    ids = submit_all(
        database_url,
        [
            plan_of(
                command_step(
                    "work",
                    f"echo start {i} >> {log}; sleep 2; echo end {i} >> {log}",
                    action_class="modify",  # not idempotent: must not be cut or re-run
                    **on(f"job-{i}"),
                ),
                name=f"job {i}",
            )
            for i in range(4)
        ],
    )
    first = workers.start("--concurrency", "2", "--grace-period", "60")
    wait_until(lambda: len(lines(log)) >= 2, "two executions in flight")
    assert workers.stop(first) == 0
    assert "handed back 0" in workers.log_of(first)
    statuses = sorted(status_of(database_url, i)[0] for i in ids)
    assert statuses == ["completed", "completed", "queued", "queued"]

    second = workers.start("--concurrency", "2")
    wait_until(
        lambda: all(status_of(database_url, i)[0] == "completed" for i in ids),
        "the second worker to run the rest",
    )
    assert workers.stop(second) == 0
    assert Counter(lines(log)) == {f"{kind} {i}": 1 for kind in ("start", "end") for i in range(4)}


def test_sigterm_past_the_grace_period_hands_the_lease_back(
    cli_env: dict[str, str], database_url: str, tmp_path: Path, work_dir: Path, workers: Workers
) -> None:
    log, marker = work_dir / "log", work_dir / "marker"
    execution_id = submit_file(
        cli_env,
        tmp_path,
        "long read",
        [
            command_step(
                "scan",
                f"echo try $$ >> {log}; [ -f {marker} ] || {{ touch {marker}; sleep 60; }}",
                timeout_s=120,
            )
        ],
    )
    first = workers.start("--concurrency", "1", "--grace-period", "0.5")  # policy lease: 35 s
    wait_until(lambda: bool(pids(log, "try")), "the step to start")
    sandbox = sandbox_of(str(marker))
    assert workers.stop(first) == 0
    assert "handed back 1" in workers.log_of(first)
    ((token, attempts),) = query(
        database_url, "SELECT lease_token, attempt_count FROM execution.execution_queue"
    )
    assert token is None and attempts == 0  # claimable at once; no attempt spent
    assert live_in(sandbox) == []  # its command was stopped, not left behind

    second = workers.start("--concurrency", "1")
    wait_until(lambda: status_of(database_url, execution_id)[0] in TERMINAL, "the takeover")
    status, reason = status_of(database_url, execution_id)
    assert status == "completed"
    assert reason is not None and reason.startswith("interrupted by worker shutdown, resumed")
    assert len(pids(log, "try")) == 2  # idempotent: run again by the new owner
    assert workers.stop(second) == 0


def test_cli_bad_input_exits_2_naming_what_is_wrong(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    missing = opsc(cli_env, "submit", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2 and "nope.yaml: no such file" in missing.stderr
    zero = opsc(cli_env, "worker", "--concurrency", "0")
    assert zero.returncode == 2 and "--concurrency" in zero.stderr
    unknown = opsc(cli_env, "dlq", "requeue", "00000000-0000-0000-0000-000000000000")
    assert unknown.returncode == 2 and "not found" in unknown.stderr
    assert "Traceback" not in missing.stderr + zero.stderr + unknown.stderr
