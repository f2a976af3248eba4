"""A tenant's masking pattern runs at every sink (step output, events, logs, API answers):
a backtracking pattern must not stall them. Tenant patterns run in RE2 (linear time)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from opsconductor import masking
from opsconductor.errors import BadInput

PROBE = """
from opsconductor import masking
m = masking.for_patterns({"redos": "(?:a+)+$", "ticket": "TCK-\\\\d{6}"})
line = "a" * 64 + "b TCK-123456"
print(m.mask(line))
"""


def test_a_catastrophic_tenant_pattern_masks_in_linear_time() -> None:
    # In Python's re, (?:a+)+$ against 64 a's and a b backtracks for longer than any test
    # runs; a separate process, because a backtracking regex holds the GIL.
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "TCK-123456" not in done.stdout and "a" * 64 in done.stdout


def test_patterns_re2_cannot_run_are_refused_when_added() -> None:
    for pattern in (r"(?:(?=secret)\w+)", r"(?:x)\1"):
        with pytest.raises(BadInput, match="RE2"):
            masking.validate_pattern(pattern)
    assert masking.validate_pattern(r"TCK-\d{6}") == r"TCK-\d{6}"
