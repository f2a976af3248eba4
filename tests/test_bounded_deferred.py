"""bounded.Deferred: a helper that starts only after its delay, and whose stop before then
leaves nothing running (a lock's heartbeat, the cancel watcher)."""

from __future__ import annotations

import asyncio

import pytest

from opsconductor import bounded

pytestmark = pytest.mark.unit


async def test_stopped_before_its_delay_it_never_runs() -> None:
    ran: list[str] = []

    async def work() -> None:
        ran.append("ran")

    helper = bounded.Deferred(0.2, work)
    flag = asyncio.Event()
    assert await helper.stop(flag, what="test")
    await asyncio.sleep(0.3)
    assert ran == [] and helper.task is None and flag.is_set()


async def test_after_its_delay_it_runs_and_stops_like_a_task() -> None:
    beats: list[float] = []
    stopping = asyncio.Event()

    async def work() -> None:
        while not stopping.is_set():
            beats.append(asyncio.get_running_loop().time())
            await bounded.sleep_unless(stopping, 0.02)

    started = asyncio.get_running_loop().time()
    helper = bounded.Deferred(0.05, work)
    await asyncio.sleep(0.15)
    assert await helper.stop(stopping, what="test")
    assert beats and beats[0] - started >= 0.05  # not before its delay
    assert helper.task is not None and helper.task.done()
