"""How many targets run at once: per step, and per process over all its engines."""

from __future__ import annotations

import asyncio
import weakref

#: How many targets of one step run at once unless the step sets ``concurrency``.
DEFAULT_STEP_CONCURRENCY = 10
#: How many targets one process runs at once, over all its executions and engines.
DEFAULT_TARGET_CONCURRENCY = 100

_SLOTS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)


def target_slots(limit: int) -> asyncio.Semaphore:
    """The process's target slots (per event loop): however many engines a process builds
    (the API's requests, its worker pool), ``limit`` bounds them together. A different
    ``limit`` (tests, benchmarks) gets a semaphore of its own."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.Semaphore(limit)
    if limit != DEFAULT_TARGET_CONCURRENCY:
        return asyncio.Semaphore(limit)
    return _SLOTS.setdefault(loop, asyncio.Semaphore(limit))
