"""bounded.Deferred: a helper that starts only after its delay, and whose stop before then
leaves nothing running (a lock's heartbeat, the cancel watcher)."""

from __future__ import annotations

import asyncio
import gc
import weakref

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


class _Owner:
    """Holds its Deferred, whose work is its own bound method (a lock hold, the cancel
    watcher): the pair is a reference cycle until the Deferred lets go."""

    def __init__(self, delay_s: float) -> None:
        self.helper = bounded.Deferred(delay_s, self.work)

    async def work(self) -> None:
        await asyncio.sleep(0)


@pytest.mark.parametrize("fired", [False, True])
async def test_once_stopped_its_owner_is_freed_without_the_cyclic_collector(
    fired: bool,
) -> None:
    """A cycle would leave the owner (and a whole run it points to) to the cyclic collector:
    most of a busy worker's collection time, measured."""
    gc.disable()
    try:
        owner = _Owner(0.0 if fired else 10.0)
        await asyncio.sleep(0.05)
        assert (owner.helper.task is not None) is fired
        assert await owner.helper.stop(what="test")
        gone = weakref.ref(owner)
        del owner
        assert gone() is None
    finally:
        gc.enable()
