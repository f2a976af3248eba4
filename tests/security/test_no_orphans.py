"""A step's processes never outlive their worker, so a re-run never overlaps them.

A real ``opsc worker`` runs a step that records its start (and end) with a timestamp and
sleeps, in the background too and ignoring TERM/HUP; the worker is SIGKILLed mid-sleep
while a second worker waits to take over. Whatever the first attempt started must be gone
within seconds (locally: its sandbox; over SSH, on the target: the remote session), its
asset lock freed, and the re-run must start only after the last of those processes died
(the process table is read by this test, the start time is written by the step)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from opsconductor.db.connection import Database
from tests.helpers import add_ssh_assets
from tests.plans import command_step
from tests.security.local_support import needs_sandbox
from tests.test_worker_processes import (
    FAST_RECOVERY,
    Workers,
    add_hosts,
    crash,
    lines,
    query,
    status_of,
    submit_file,
    wait_until,
)

#: Liveness bounds, generous for a loaded machine; the processes go within milliseconds.
GONE_WITHIN_S = 5.0
#: The dead worker's asset lock: released by dead-worker detection, or expired (the
#: workers of these tests run with OPSC_LOCK_TTL_S=3).
LOCK_FREE_WITHIN_S = 15.0


@pytest.fixture
def workers(cli_env: dict[str, str], tmp_path: Path) -> Iterator[Workers]:
    logs = tmp_path / "worker-logs"
    logs.mkdir()
    pool = Workers({**cli_env, "OPSC_LOCK_TTL_S": "3"}, logs)
    yield pool
    pool.kill_all()


def processes_with(marker: str) -> set[int]:
    """Live processes (not zombies) whose command line mentions ``marker``."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if marker.encode() in cmdline.replace(b"\0", b" ") and stat[stat.rindex(")") + 2] != "Z":
            found.add(int(entry))
    return found


def sleeping(marker: str) -> set[int]:
    """The ``sleep <marker>`` processes themselves (not the shells that mention them)."""
    argv = f"sleep\0{marker}\0".encode()
    return {pid for pid in processes_with(marker) if _cmdline(pid) == argv}


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def alive(pids: set[int], marker: str) -> set[int]:
    return pids & processes_with(marker)


def step_command(log: Path, flag: Path, marker: str) -> str:
    """First attempt: a TERM/HUP-ignoring shell with a background and a foreground sleep
    that outlast the test; a re-run (the flag exists) just records its lifetime."""
    stamp = "$$ $(date +%s.%N)"
    return (
        f"if [ -f {flag} ]; then echo start {stamp} 2 >> {log}; sleep 0.2; "
        f"echo end {stamp} 2 >> {log}; "
        f"else touch {flag}; echo start {stamp} 1 >> {log}; trap '' TERM HUP INT; "
        f"sleep {marker} & sleep {marker}; echo end {stamp} 1 >> {log}; fi"
    )


async def _ssh_asset(url: str, lab: Any) -> str:
    async with Database(url, max_size=1) as db:
        (asset,) = await add_ssh_assets(db, lab, [lab.ports[1]], prefix="orphan")
    return asset.asset_id


def _scenario(
    cli_env: dict[str, str],
    database_url: str,
    tmp_path: Path,
    workers: Workers,
    folder: Path,
    asset_id: str,
) -> None:
    marker = f"{600 + uuid.uuid4().int % 1000}.{uuid.uuid4().int % 10**6:06d}"
    log, flag = folder / "lifetimes.log", folder / "ran-once"
    execution_id = submit_file(
        cli_env,
        tmp_path,
        "long sleep",
        [
            command_step(
                "sleep",
                step_command(log, flag, marker),
                timeout_s=900,
                targets={"assets": [asset_id]},
            )
        ],
    )
    first = workers.start("--concurrency", "1", *FAST_RECOVERY)
    wait_until(lambda: len(sleeping(marker)) == 2, "the first attempt's sleeps")
    old = processes_with(marker)  # its shells, sleeps (and sandbox or remote session)
    second = workers.start("--concurrency", "1", *FAST_RECOVERY)  # ready to take over

    killed_at = time.monotonic()
    crash(first)  # SIGKILL
    while alive(old, marker):
        assert time.monotonic() - killed_at < GONE_WITHIN_S, (
            f"processes of the killed worker's step still alive: {alive(old, marker)}"
        )
        time.sleep(0.01)
    gone_at = time.time()  # wall clock, as the step's `date` stamps are
    gone_after = time.monotonic() - killed_at

    dead_pid = f":{first.pid}:"  # the worker id names its pid

    def lock_held_by_dead_worker() -> bool:
        return bool(
            query(
                database_url,
                "SELECT 1 FROM execution.execution_locks "
                "WHERE asset_id = %s AND owner_tag LIKE %s AND expires_at > now()",
                asset_id,
                f"%{dead_pid}%",
            )
        )

    wait_until(
        lambda: not lock_held_by_dead_worker(), "the asset lock", timeout_s=LOCK_FREE_WITHIN_S
    )
    if os.environ.get("OPSC_TEST_SHOW_TIMES"):  # the figures quoted in the report
        print(f"gone {gone_after:.3f} s, lock free {time.monotonic() - killed_at:.3f} s")
    wait_until(lambda: status_of(database_url, execution_id)[0] == "completed", "the re-run")
    assert workers.stop(second) == 0

    records = [line.split() for line in lines(log)]
    starts = {attempt: float(ts) for kind, _, ts, attempt in records if kind == "start"}
    ends = {attempt: float(ts) for kind, _, ts, attempt in records if kind == "end"}
    assert set(starts) == {"1", "2"} and set(ends) == {"2"}  # the first never finished
    # The last process of the first attempt was seen gone before the re-run began.
    assert starts["2"] > gone_at, (starts["2"], gone_at)
    if os.environ.get("OPSC_TEST_SHOW_TIMES"):
        print(f"re-run started {starts['2'] - gone_at:.3f} s after the last old process died")
    assert gone_after < GONE_WITHIN_S
    wait_until(lambda: not processes_with(marker), "the re-run's processes to end", 10)


@needs_sandbox
def test_sigkilled_worker_leaves_no_local_process_and_the_rerun_never_overlaps(
    cli_env: dict[str, str],
    database_url: str,
    tmp_path: Path,
    work_dir: Path,
    workers: Workers,
) -> None:
    add_hosts(database_url, ["node-00"])
    work_dir.mkdir(parents=True, exist_ok=True)
    _scenario(cli_env, database_url, tmp_path, workers, work_dir, "node-00")


def test_sigkilled_worker_leaves_no_remote_process_and_the_rerun_never_overlaps(
    cli_env: dict[str, str],
    database_url: str,
    tmp_path: Path,
    ssh_lab: Any,
    workers: Workers,
) -> None:
    folder = tmp_path / "remote"
    folder.mkdir()
    asset_id = asyncio.run(_ssh_asset(database_url, ssh_lab))
    _scenario(cli_env, database_url, tmp_path, workers, folder, asset_id)


# -- the outer bwrap: guarded by setpriv --pdeathsig and a parent check (sandbox.guarded) ---


def _spawn_and_die(parent_pid_offset: int, argv: list[str], started: Path | None = None) -> None:
    """A process spawns ``argv`` through the guard and dies (``os._exit``), as a worker
    SIGKILLed right after a spawn would: at once, or once ``started`` exists."""
    code = (
        "import os, pathlib, subprocess, time\n"
        "from opsconductor.connectors.sandbox import guarded\n"
        f"argv = {argv!r}\n"
        f"subprocess.Popen(guarded('/usr/bin/setpriv', argv, os.getpid() + {parent_pid_offset}))\n"
        f"started = {str(started) if started else None!r}\n"
        "deadline = time.monotonic() + 10\n"
        "while started and not pathlib.Path(started).exists() and time.monotonic() < deadline:\n"
        "    time.sleep(0.01)\n"
        "os._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)


@pytest.mark.parametrize("when", ["at once", "once it runs"])
def test_what_a_dying_spawner_started_dies_with_it(when: str, tmp_path: Path) -> None:
    """At once: the guard sees another parent and starts nothing. Once it runs: past the
    guard, the kernel's parent-death signal ends it (a plain child sleeps on a minute)."""
    marker = f"opsc-guard-{uuid.uuid4().hex}"
    started = tmp_path / "started" if when == "once it runs" else None
    body = f"import pathlib, time; pathlib.Path({str(tmp_path / 'started')!r}).touch()"
    _spawn_and_die(0, [sys.executable, "-c", f"{body}; time.sleep(60)  # {marker}"], started)
    if started is not None:
        assert started.exists(), "the guarded process never ran"
    deadline = time.monotonic() + GONE_WITHIN_S
    while processes_with(marker):
        assert time.monotonic() < deadline, "the spawned process outlived its spawner"
        time.sleep(0.05)


def test_nothing_starts_when_the_spawner_is_already_gone(tmp_path: Path) -> None:
    ran = tmp_path / "ran"
    # the guard expects another parent: as if the spawner had died before the guard ran
    _spawn_and_die(1, ["/bin/sh", "-c", f"echo ran > {ran}"])
    time.sleep(0.5)
    assert not ran.exists()
