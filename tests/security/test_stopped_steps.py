"""A step that is stopped (cancelled, or past its timeout) has no process left by the time
its end is known: killing bwrap ends the sandbox's PID 1 (and with it every process of the
sandbox) only through ``--die-with-parent``, a moment later, so the connector waits for that
PID 1 to end before it returns. (Before, 14 of 20 cancelled steps still had processes
running when the connector returned: seen as a flaky `opsc cancel` test in CI.)"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from opsconductor.connectors import local, sandbox
from opsconductor.connectors.access import TenantAccess
from tests.safety_support import live_in, sandbox_of
from tests.security.local_support import needs_sandbox

pytestmark = needs_sandbox

#: cancelled steps, then steps past their timeout
CANCELLED, TIMED_OUT = 5, 2


async def _sandbox_of(marker: str) -> str:
    for _ in range(1000):  # a generous bound: the sandbox starts in milliseconds
        try:
            return sandbox_of(marker)
        except AssertionError:  # not up yet
            await asyncio.sleep(0.01)
    raise AssertionError(f"no sandbox ran {marker}")


async def test_a_stopped_step_has_no_process_left_when_its_end_is_known(tmp_path: Path) -> None:
    access = TenantAccess("t", tmp_path / "files", tmp_path / "work", local_execution=True)
    box = await asyncio.to_thread(sandbox.prepare, access)
    for round_ in range(CANCELLED + TIMED_OUT):
        marker = f"m{uuid.uuid4().hex}"
        cancel = asyncio.Event()
        # long enough to see the sandbox up before it is stopped
        timeout_s = 60.0 if round_ < CANCELLED else 2.0
        step = asyncio.create_task(
            local.run_command(
                box, f"sleep 600 & exec sleep 601 # {marker}", timeout_s=timeout_s, cancel=cancel
            )
        )
        group = await _sandbox_of(marker)
        if round_ < CANCELLED:
            cancel.set()
        result = await step
        assert result.cancelled or result.timed_out
        assert live_in(group) == [], f"round {round_}: the sandbox still runs"
