"""What a prepared step is (``Action``), and the small rules every connector shares: the
plain value of a field, the budget and cancel bound of in-process work, the outcome of a
finished command."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from opsconductor.connectors.local import CommandResult
from opsconductor.connectors.outcome import Outcome, StepInputError
from opsconductor.plan import HttpAuth, StrOrSecret

Runner = Callable[[float, asyncio.Event | None], Awaitable[Outcome]]


@dataclass(frozen=True)
class Action:
    """A prepared step on one target: what it would do, and how to do it."""

    summary: str
    run: Runner


async def _nothing(_budget: float, _cancel: asyncio.Event | None) -> Outcome:
    return Outcome("completed")


#: A ``noop`` step on any target: no connection, no process, no I/O; it completes at once.
NOOP = Action("do nothing", _nothing)


def plain(value: StrOrSecret | None, where: str) -> str:
    """A field's text; the engine fills secret references in before a step runs, so one
    still here means the caller skipped that (a connector never fetches secrets itself)."""
    if not isinstance(value, str):
        raise StepInputError(f"{where}: secret reference not resolved")
    return value


def plain_env(env: Mapping[str, StrOrSecret], where: str) -> dict[str, str]:
    return {name: plain(value, f"{where}.env.{name}") for name, value in env.items()}


def authorization(auth: HttpAuth, where: str) -> str:
    if auth.bearer is not None:
        return f"Bearer {plain(auth.bearer, f'{where}.bearer')}"
    password = plain(auth.password, f"{where}.password")
    token = base64.b64encode(f"{auth.username}:{password}".encode()).decode()
    return f"Basic {token}"


async def bounded(
    work: Awaitable[Outcome], timeout_s: float, cancel: asyncio.Event | None
) -> Outcome:
    """``work`` within ``timeout_s``, abandoned (cancelled) when ``cancel`` is set."""
    task = asyncio.ensure_future(work)
    stopper = asyncio.ensure_future(cancel.wait()) if cancel else None
    waiters: set[asyncio.Future[Any]] = {task, stopper} if stopper else {task}
    try:
        done, _ = await asyncio.wait(waiters, timeout=timeout_s, return_when="FIRST_COMPLETED")
    finally:
        if stopper:
            stopper.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    if task in done:
        return task.result()
    if stopper is not None and stopper in done:
        return Outcome("cancelled", error="cancelled")
    return Outcome("timeout", error=f"timed out after {timeout_s:g} s")


def from_command(result: CommandResult, budget: float) -> Outcome:
    if result.timed_out:
        error = f"timed out after {budget:g} s"
        return Outcome("timeout", result.exit_code, result.stdout, result.stderr, error)
    if result.cancelled:
        return Outcome("cancelled", result.exit_code, result.stdout, result.stderr, "cancelled")
    if result.exit_code == 0:
        return Outcome("completed", 0, result.stdout, result.stderr)
    error = f"exit code {result.exit_code}"
    return Outcome("failed", result.exit_code, result.stdout, result.stderr, error)
