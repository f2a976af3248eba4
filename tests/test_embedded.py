"""The embedded PostgreSQL server as a user meets it: started by the first ``opsc`` process
and stopped by the last one, even when an earlier one was SIGKILLed."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


def postmaster_pid(pgdata: Path) -> int | None:
    try:
        return int((pgdata / "postmaster.pid").read_text().split()[0])
    except (FileNotFoundError, IndexError, ValueError):
        return None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def home() -> Iterator[Path]:
    # Not under pytest's basetemp: run as root the server runs as another user, and pytest
    # keeps /tmp/pytest-of-root at 0700 (see tests/conftest.py).
    folder = Path(tempfile.mkdtemp(prefix="opsc-emb-"))
    os.chmod(folder, 0o755)
    yield folder
    pid = postmaster_pid(folder / "pgdata")
    if pid is not None and alive(pid):
        os.kill(pid, signal.SIGTERM)  # the test failed: do not leave its server running
        deadline = time.monotonic() + 30
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
    shutil.rmtree(folder, ignore_errors=True)


# Starts a real server through opsc processes: the integration tier, not make test-unit.
@pytest.mark.integration
def test_the_server_stops_with_its_last_live_user_after_a_sigkilled_one(home: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("OPSC_") and k not in ("DATABASE_URL", "XDG_RUNTIME_DIR")
    }
    env.update(OPSC_HOME=str(home), XDG_CONFIG_HOME=str(home / "config"))
    pgdata = home / "pgdata"
    log = (home / "worker.log").open("w")
    worker = subprocess.Popen(
        [sys.executable, "-m", "opsconductor.cli", "worker", "--poll-interval", "1"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while "ready" not in (home / "worker.log").read_text():
            assert worker.poll() is None, (home / "worker.log").read_text()
            assert time.monotonic() < deadline, "the worker never became ready"
            time.sleep(0.1)
        server = postmaster_pid(pgdata)
        assert server is not None and alive(server)
        assert worker.pid in json.loads((pgdata / ".handle_pids.json").read_text())
        # No lock file under /run/user/<uid>: the package's lock lives beside the data.
        assert (home / "run" / ".lockfile").exists()
    finally:
        worker.kill()  # no exit handlers run: its pid stays on the package's list
        worker.wait(timeout=30)
    assert alive(server), "the server must outlive a killed user"

    listed = subprocess.run(
        [sys.executable, "-m", "opsconductor.cli", "workers"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert listed.returncode == 0, listed.stderr
    assert "stale" in listed.stdout or "alive" in listed.stdout  # it saw the killed worker
    # That command was the last live user: it stopped the server on its way out.
    deadline = time.monotonic() + 30
    while alive(server):
        assert time.monotonic() < deadline, "the embedded server kept running"
        time.sleep(0.1)
    assert json.loads((pgdata / ".handle_pids.json").read_text()) == []
