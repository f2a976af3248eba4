"""Live output: the lines a running command or script prints, as ``step_output`` events,
while it runs (the API's events, its SSE and WebSocket streams and ``opsc watch`` show
them), not only in the step's result once it ends.

Bounded three ways, so a step printing gigabytes cannot flood the event log or the
streams: lines go out at most every ``FLUSH_S`` per attempt, at most ``FLUSH_BYTES`` per
flush (lines beyond it until the next flush are dropped and counted, ``skipped``), and at
most ``TOTAL_BYTES`` per attempt (then one event says ``truncated`` and the live view of
that attempt stops). The step's result keeps its capped output as before.

Masked first, here: whole lines only reach us (``output.LineSplitter``), so a secret
printed on one line is never split across events; each flush is masked together with the
``CONTEXT`` characters printed before it, so a private key block that began in an earlier
flush is masked to its end. A multi-line secret *value* printed across two flushes can
show its first lines (it is matched whole only): the stored result is masked whole.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import structlog

from opsconductor.db import executions
from opsconductor.db.connection import Database
from opsconductor.engine.state import Run
from opsconductor.inventory import Asset
from opsconductor.output import Capped

log = structlog.get_logger("opsconductor.engine")

EVENT = "step_output"
#: Seconds between two flushes of one attempt's lines.
FLUSH_S = 0.5
#: Characters of lines per flush; more before the next flush are dropped (and counted).
FLUSH_BYTES = 16_384
#: Characters of lines per attempt; then the live view of the attempt stops.
TOTAL_BYTES = 262_144
#: Characters of earlier output each flush is masked with (``output.MARGIN`` as well).
CONTEXT = 4_096


class LiveOutput:
    """One attempt's output lines on their way to its execution's events."""

    def __init__(self, db: Database, run: Run, where: dict[str, Any]) -> None:
        self.db = db
        self.run = run
        #: what every event names: step_index, step, target, attempt
        self.where = where
        self._pending: list[tuple[str, str]] = []
        self._pending_size = 0
        self._taken = 0
        self._skipped = 0
        self._truncated = False
        self._noted = False
        self._context = {"stdout": "", "stderr": ""}
        self._wake = asyncio.Event()
        self._closing = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._next_flush = 0.0

    @classmethod
    def of(cls, db: Database, run: Run, index: int, asset: Asset, attempt: int) -> LiveOutput:
        where = {
            "step_index": index,
            "step": run.plan.steps[index].name,
            "target": asset.asset_id,
            "attempt": attempt,
        }
        return cls(db, run, where)

    def line(self, stream: str, text: str) -> None:
        """A whole line of ``stream``: called by the connector as the step prints it."""
        if self._truncated or self._closing.is_set():
            return
        if isinstance(text, Capped):  # a long line, cut: masked with what lay beyond the cut
            text = self.run.masker.mask_output(text)
        size = len(text) + 1
        if self._taken + size > TOTAL_BYTES:
            self._truncated = True
        elif self._pending_size + size > FLUSH_BYTES:
            self._skipped += 1
        else:
            self._pending.append((stream, text))
            self._pending_size += size
            self._taken += size
        if self._task is None:
            self._task = asyncio.create_task(self._pump())
        self._wake.set()

    async def close(self) -> None:
        """The step ended: send what is left (before its ``step_finished`` event)."""
        if self._task is None:
            return
        self._closing.set()
        self._wake.set()
        try:
            await self._task
            await self._flush()
        finally:
            if not self._task.done():
                self._task.cancel()

    async def _pump(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closing.is_set():
            await self._wake.wait()
            self._wake.clear()
            delay = self._next_flush - loop.time()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), delay)
            self._next_flush = loop.time() + FLUSH_S
            await self._flush()

    async def _flush(self) -> None:
        lines, skipped = self._pending, self._skipped
        self._pending, self._pending_size, self._skipped = [], 0, 0
        note = self._truncated and not self._noted
        payloads = [self._payload(stream, texts) for stream, texts in _runs(lines)]
        if payloads and skipped:
            payloads[0]["skipped"] = skipped
        if note:
            self._noted = True
            last = {"stream": "stdout", "lines": [], "truncated": True, "limit": TOTAL_BYTES}
            payloads.append({**self.where, **last})
        if not payloads:
            return
        try:
            await executions.append_events(
                self.db.batch, self.run.execution, EVENT, self.run.actor_id, payloads
            )
        except Exception as exc:  # the live view is best effort: it never fails the step
            log.warning(
                "step_output_lost", error=type(exc).__name__, lines=len(lines), **self.where
            )

    def _payload(self, stream: str, texts: list[str]) -> dict[str, Any]:
        """Masked lines of one stream, masked together with what the stream printed
        before them (``CONTEXT``)."""
        before = self._context.get(stream, "")
        text = "\n".join(texts)
        whole = f"{before}\n{text}" if before else text
        start = len(whole) - len(text)
        masked = self.run.masker.mask_cut(whole, start, len(whole))
        self._context[stream] = whole[-CONTEXT:]
        return {**self.where, "stream": stream, "lines": masked.split("\n")}


def _runs(lines: list[tuple[str, str]]) -> list[tuple[str, list[str]]]:
    """Consecutive lines of the same stream, together, in the order they came."""
    runs: list[tuple[str, list[str]]] = []
    for stream, text in lines:
        if runs and runs[-1][0] == stream:
            runs[-1][1].append(text)
        else:
            runs.append((stream, [text]))
    return runs
