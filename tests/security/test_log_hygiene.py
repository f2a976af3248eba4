"""An unexpected error is logged without the frames' local variables: they held request
bodies and secrets' values, and made one error hundreds of kilobytes of log."""

from __future__ import annotations

import json
import subprocess
import sys

#: Run in its own process: logging is configured once per process (and caches its stream).
PROGRAM = """
import structlog
from opsconductor import logs

logs.configure("info")

def fails(body):
    held = body * 3
    raise ValueError("boom")

try:
    fails("local-value-7c1e")
except ValueError:
    structlog.get_logger("test").exception("unhandled error", request_id="r1")
"""


def test_exception_logs_carry_frames_but_no_locals() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM], capture_output=True, text=True, timeout=60, check=True
    )
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr  # one line
    record = json.loads(lines[0])
    assert record["request_id"] == "r1"
    assert record["exception"][0]["exc_type"] == "ValueError"
    assert record["exception"][0]["frames"]  # where it happened is still there
    assert "local-value-7c1e" not in lines[0]
