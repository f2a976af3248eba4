"""An unexpected error is logged without the frames' local variables: they held request
bodies and secrets' values, and made one error hundreds of kilobytes of log."""

from __future__ import annotations

import json

import pytest
import structlog

from opsconductor import logs


def test_exception_logs_carry_frames_but_no_locals(capsys: pytest.CaptureFixture[str]) -> None:
    structlog.reset_defaults()  # whatever an earlier test configured: ours, fresh
    logs.configure("info")
    log = structlog.get_logger("test")

    def fails(body: str) -> None:
        held = body * 3  # noqa: F841 (a local the log must not show)
        raise ValueError("boom")

    try:
        fails("local-value-7c1e")
    except ValueError:
        log.exception("unhandled error", request_id="r1")
    line = capsys.readouterr().err.strip().splitlines()[-1]
    record = json.loads(line)  # one JSON line
    assert record["request_id"] == "r1"
    assert record["exception"][0]["exc_type"] == "ValueError"
    assert record["exception"][0]["frames"]  # where it happened is still there
    assert "local-value-7c1e" not in line
