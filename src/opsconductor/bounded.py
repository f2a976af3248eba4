"""Waits that cannot hang: stopping a helper task, sleeping until an event.

Python 3.11's ``asyncio.wait_for`` can swallow a cancellation (when the awaited future
completes in the same loop turn as the cancel; psycopg_pool waits for a connection that
way), so a helper task told to stop may go on running. A loop that stops on a flag, and a
caller that waits for it with a bound, survive that: ``stop`` sets the flag, cancels, and
waits at most ``timeout_s``; the loop, if the cancel was lost, sees the flag at its next
turn. Nothing here uses ``wait_for``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

log = structlog.get_logger("opsconductor.bounded")

#: How long stopping a helper may take before the caller goes on without it.
STOP_WITHIN_S = 5.0


async def sleep_unless(event: asyncio.Event, seconds: float | None) -> bool:
    """Sleep ``seconds`` (None: forever) or until ``event`` is set; True if it is set."""
    if event.is_set():
        return True
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
    return event.is_set()


async def stop(
    task: asyncio.Task[Any] | None,
    flag: asyncio.Event | None = None,
    *,
    timeout_s: float = STOP_WITHIN_S,
    what: str = "task",
) -> bool:
    """Set ``flag``, cancel ``task`` and wait for it at most ``timeout_s``; True if it
    ended. Its exception, if any, is logged, not raised (a helper's failure is not ours)."""
    if flag is not None:
        flag.set()
    if task is None:
        return True
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=timeout_s)
    if not done:
        log.error("task did not stop in time; going on without it", task=what)
        return False
    if not task.cancelled() and task.exception() is not None:
        log.warning("task ended with an error", task=what, error=repr(task.exception()))
    return True


class Deferred:
    """A helper task that starts ``delay_s`` from now, not before; until then it is only a
    timer. Helpers whose first move waits anyway (a lock's heartbeat, the cancel watcher's
    first check) cost a task, an event wait and a cancellation per run even when the run is
    over before they would act; a timer costs a sixth of that (measured: ~6 us vs ~40 us)."""

    def __init__(self, delay_s: float, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self.task: asyncio.Task[None] | None = None
        self._work: Callable[[], Coroutine[Any, Any, None]] | None = work
        # the callback runs in a copy of this context, as a task made here would
        self._timer: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(
            max(0.0, delay_s), self._begin
        )

    def _begin(self) -> None:
        # Let go of the timer and the work once used: both point back here (``work`` is
        # mostly a bound method of our owner), and a cycle leaves the owner and all it
        # holds (a whole run) to the cyclic collector (measured: ~70 objects per drained
        # execution, most of the worker's GC time).
        work, self._work, self._timer = self._work, None, None
        if work is not None:
            self.task = asyncio.create_task(work())

    async def stop(self, flag: asyncio.Event | None = None, *, what: str = "task") -> bool:
        """As ``stop``: the timer, if it has not fired, is all there is to stop."""
        if self._timer is not None:
            self._timer.cancel()  # uvloop's handle keeps its callback after a cancel
        self._work, self._timer = None, None
        return await stop(self.task, flag, what=what)
