"""Rows of the workers table do not pile up: a starting worker deletes those silent for
longer than the retention (OPSC_WORKER_RETENTION_S), and never a live one's."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg

from opsconductor.db import workers
from opsconductor.db.connection import Database

ROWS = """
INSERT INTO execution.workers
    (worker_id, host, pid, concurrency, started_at, last_heartbeat_at, stopped_at)
VALUES
    ('crashed-long-ago', 'h', 1, 1, now() - interval '3 hours', now() - interval '2 hours', NULL),
    ('stopped-long-ago', 'h', 2, 1, now() - interval '3 hours', now() - interval '2 hours',
     now() - interval '2 hours'),
    ('crashed-lately', 'h', 3, 1, now() - interval '1 hour', now() - interval '10 minutes', NULL),
    ('alive', 'h', 4, 1, now() - interval '3 hours', now(), NULL)
"""


def names(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        return {row[0] for row in conn.execute("SELECT worker_id FROM execution.workers")}


def test_a_starting_worker_prunes_rows_older_than_the_retention(
    cli_env: dict[str, str], database_url: str, tmp_path: Path
) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(ROWS)
    log = tmp_path / "worker.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "opsconductor.cli", "worker"],
        env={**cli_env, "OPSC_WORKER_RETENTION_S": "3600"},
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 90
        while "ready" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        found = names(database_url)
        assert {"crashed-long-ago", "stopped-long-ago"}.isdisjoint(found)
        assert {"crashed-lately", "alive"} <= found
        assert any(f":{proc.pid}:" in name for name in found)  # its own row
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


async def test_prune_never_deletes_a_live_worker_whatever_the_retention(
    db: Database, database_url: str
) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(ROWS)
    async with db.connection() as conn:
        assert await workers.prune(conn, 0) == 3
    assert names(database_url) == {"alive"}
