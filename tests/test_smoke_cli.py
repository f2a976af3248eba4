"""`opsc run` end to end, as a user runs it: a real process against a real database."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
PLANS = ROOT / "examples" / "plans"


def opsc(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "opsconductor.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_hello_plan_completes_and_is_recorded(cli_env: dict[str, str], database_url: str) -> None:
    result = opsc(cli_env, "run", str(PLANS / "hello.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "completed" in result.stdout
    with psycopg.connect(database_url) as conn:
        (status,) = conn.execute("SELECT status::text FROM execution.executions").fetchone() or ()
        events = conn.execute(
            "SELECT from_status::text, to_status::text FROM execution.execution_events "
            "WHERE event_type = 'status_changed' ORDER BY id"
        ).fetchall()
    assert status == "completed"
    assert events == [("approved", "running"), ("running", "completed")]
