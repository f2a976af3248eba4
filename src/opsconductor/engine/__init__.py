"""The engine, split by concern: ``core`` (the run: begin, steps, targets, locks, end),
``state`` (what a run knows), ``dispatch`` (one attempt on one target), ``attempts`` (their
records), ``secrets`` (just in time), ``resume`` (after a crash), ``verdict`` (how it ends)."""

from opsconductor.engine.core import Engine
from opsconductor.engine.slots import DEFAULT_STEP_CONCURRENCY, DEFAULT_TARGET_CONCURRENCY
from opsconductor.engine.state import INTERRUPTED, Observer, StepEvent

__all__ = [
    "DEFAULT_STEP_CONCURRENCY",
    "DEFAULT_TARGET_CONCURRENCY",
    "INTERRUPTED",
    "Engine",
    "Observer",
    "StepEvent",
]
