"""Dead workers seen in seconds, with real ``opsc worker`` processes and the default leases
(35 s and more) and asset-lock TTL (30 s): whatever recovers faster than those was found
dead by its closed session, not by an expiry. A worker that is only slow keeps its work."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.plans import command_step
from tests.test_worker_processes import (
    TERMINAL,
    Workers,
    add_hosts,
    crash,
    lines,
    on,
    query,
    status_of,
    submit_file,
    wait_until,
)


@pytest.fixture
def pool(cli_env: dict[str, str], tmp_path: Path) -> Iterator[Workers]:
    logs = tmp_path / "worker-logs"
    logs.mkdir()
    workers = Workers(cli_env, logs)  # default lease and lock TTL
    yield workers
    workers.kill_all()


def events(url: str, execution_id: str, kind: str) -> list[dict[str, object]]:
    rows = query(
        url,
        "SELECT payload FROM execution.execution_events WHERE execution_id = %s "
        "AND event_type = %s ORDER BY id",
        execution_id,
        kind,
    )
    return [row[0] for row in rows]


def test_sigkilled_worker_is_seen_dead_in_seconds_and_its_asset_lock_freed(
    cli_env: dict[str, str], database_url: str, tmp_path: Path, work_dir: Path, pool: Workers
) -> None:
    log, gate, other = work_dir / "log", work_dir / "gate", work_dir / "other"
    add_hosts(database_url, ["node-x"])
    hung = submit_file(
        cli_env,
        tmp_path,
        "hangs on node-x",
        [
            command_step(
                "scan",
                f"echo start $$ >> {log}; [ -f {gate} ] || {{ touch {gate}; sleep 60; }}",
                timeout_s=120,
                **on("node-x"),
            )
        ],
    )
    doomed = pool.start("--concurrency", "1")
    wait_until(lambda: len(lines(log)) == 1, "the step to start on the doomed worker")
    # Queued after: it waits in the queue while node-x is held by the doomed worker (migration
    # 0042), not in a slot of the survivor.
    waiting = submit_file(
        cli_env,
        tmp_path,
        "waits for node-x",
        [command_step("touch", f"echo done >> {other}", action_class="modify", **on("node-x"))],
    )
    survivor = pool.start("--concurrency", "2")
    wait_until(lambda: "ready" in pool.log_of(survivor), "the survivor to start")
    assert status_of(database_url, waiting)[0] == "queued"

    crash(doomed)
    killed = time.monotonic()
    wait_until(lambda: len(lines(log)) == 2, "the step to be resumed", timeout_s=60)
    resumed_after = time.monotonic() - killed
    wait_until(
        lambda: all(status_of(database_url, i)[0] in TERMINAL for i in (hung, waiting)),
        "both to end",
    )
    # Well inside the 35 s lease and the 30 s lock TTL (a generous bound for a loaded CI).
    assert resumed_after < 20, resumed_after
    status, reason = status_of(database_url, hung)
    assert status == "completed"
    assert reason is not None and reason.startswith("interrupted by worker crash, resumed after")
    assert status_of(database_url, waiting)[0] == "completed"  # not asset_locked
    assert lines(other) == ["done"]
    (retry,) = events(database_url, hung, "retry_scheduled")
    assert retry["cause"] == "worker crash"
    (freed,) = events(database_url, hung, "lock_reaped")
    assert freed["cause"] == "worker crash" and freed["asset"] == "node-x"
    ((state,),) = query(
        database_url, "SELECT count(*) FROM execution.workers WHERE died_at IS NOT NULL"
    )
    assert state == 1


def test_a_stopped_but_live_worker_keeps_its_work(
    cli_env: dict[str, str], database_url: str, tmp_path: Path, work_dir: Path, pool: Workers
) -> None:
    log = work_dir / "log"
    execution_id = submit_file(
        cli_env,
        tmp_path,
        "slow deploy",
        [
            command_step(
                "deploy",  # not idempotent: taken back, it would fail "interrupted"
                f"echo start >> {log}; sleep 3; echo end >> {log}",
                action_class="modify",
                timeout_s=120,
            )
        ],
    )
    slow = pool.start("--concurrency", "1")
    wait_until(lambda: lines(log) == ["start"], "the step to start")
    pool.start("--concurrency", "1")  # a reaper that would take the work if it could
    os.kill(slow.pid, signal.SIGSTOP)  # frozen: no heartbeat, no renewal, session open
    try:
        time.sleep(6)
        assert status_of(database_url, execution_id)[0] == "running"
    finally:
        os.kill(slow.pid, signal.SIGCONT)
    wait_until(lambda: status_of(database_url, execution_id)[0] in TERMINAL, "the end")
    assert status_of(database_url, execution_id) == ("completed", None)
    assert Counter(lines(log)) == {"start": 1, "end": 1}
    assert events(database_url, execution_id, "retry_scheduled") == []
