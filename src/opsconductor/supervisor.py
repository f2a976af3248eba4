"""``opsc worker --processes N``: N worker processes, restarted when they die.

The supervisor runs no work and opens no database: it starts N ``opsc worker`` children,
restarts one that exits abnormally (a crash, SIGKILL, the OOM killer) after an exponential
back-off, and on SIGTERM/SIGINT passes one SIGTERM to each child, which drains within its
own grace period; a second signal passes a second SIGTERM (a worker's "hand back now").

Children run in their own process group, so a Ctrl-C at the terminal reaches them once,
through the supervisor, not twice; and each asks the kernel for SIGTERM if the supervisor
dies (``PR_SET_PDEATHSIG``), so a SIGKILLed supervisor leaves no worker behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import FrameType

import structlog

log = structlog.get_logger("opsconductor.supervisor")

#: Exit code of a child that was given bad input (errors.BadInput): restarting cannot help.
BAD_INPUT = 2
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Backoff:
    """Delay before restart number ``failures`` (1 for the first crash in a row)."""

    first_s: float = 0.5
    cap_s: float = 30.0
    #: a child that ran this long before it died was healthy: its count starts again
    stable_s: float = 60.0

    def delay(self, failures: int) -> float:
        return min(self.cap_s, self.first_s * 2.0 ** max(failures - 1, 0))


@dataclass
class Slot:
    """One of the N places a worker runs in, across its restarts."""

    index: int
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    #: abnormal exits in a row, each after less than ``Backoff.stable_s`` of running
    failures: int = 0
    restart_at: float | None = None
    restarts: int = 0
    #: exit codes of its children that ended during the stop
    final: list[int] = field(default_factory=list)
    #: the stop found it dead, waiting for its restart
    down_at_stop: bool = False


def describe(returncode: int) -> str:
    if returncode < 0:
        return f"killed by {signal.Signals(-returncode).name}"
    return f"exited with status {returncode}"


class Supervisor:
    def __init__(
        self,
        command: Sequence[str],
        processes: int,
        *,
        backoff: Backoff | None = None,
        kill_after_s: float = 60.0,
    ) -> None:
        self.command = list(command)
        self.slots = [Slot(i + 1) for i in range(processes)]
        self.backoff = backoff or Backoff()
        #: after a stop, children still running this long are SIGKILLed (their leases
        #: expire and the reaper recovers the work): the stop always ends
        self.kill_after_s = kill_after_s
        self.signals = 0
        self.stop_at: float | None = None
        self.killed = 0
        self.fatal: int | None = None

    # --- the loop ------------------------------------------------------------------------

    def run(self) -> int:
        """Supervise until stopped; the exit status: 0 when every child stopped cleanly,
        2 when one refused its input, 1 when one failed or had to be killed."""
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        previous_fd = signal.set_wakeup_fd(wake_w)
        handlers = {
            sig: signal.signal(sig, self._on_signal)
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD)
        }
        try:
            for slot in self.slots:
                self._start(slot)
            while True:
                self._reap()
                self._restart_due()
                self._escalate()
                if all(slot.proc is None and slot.restart_at is None for slot in self.slots):
                    break  # all stopped, or each exited cleanly on its own
                select.select([wake_r], [], [], self._next_timeout())
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_r, 512)  # drain the wake-ups; the loop looks at everything
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            signal.set_wakeup_fd(previous_fd)
            os.close(wake_r)
            os.close(wake_w)
        return self._exit_status()

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        """SIGTERM/SIGINT: the first stops, the second hurries (each child's own meaning)."""
        if signum == signal.SIGCHLD:
            return  # only wakes the loop (set_wakeup_fd)
        self.signals += 1
        if self.stop_at is None:
            self.stop_at = time.monotonic()
            log.warning("stopping workers", signal=signal.Signals(signum).name)
        else:
            log.warning("stopping workers now: handing their work back")
        for slot in self.slots:
            slot.down_at_stop = slot.down_at_stop or slot.restart_at is not None
            slot.restart_at = None
            if slot.proc is not None and slot.proc.poll() is None:
                slot.proc.send_signal(signal.SIGTERM)

    def _start(self, slot: Slot) -> None:
        slot.proc = subprocess.Popen(
            self.command,
            process_group=0,  # the terminal's Ctrl-C reaches the supervisor only
            preexec_fn=_die_with(os.getpid()),
        )
        slot.started_at = time.monotonic()
        slot.restart_at = None
        log.info("worker started", slot=slot.index, pid=slot.proc.pid, restarts=slot.restarts)

    def _reap(self) -> None:
        for slot in self.slots:
            if slot.proc is None or slot.proc.poll() is None:
                continue
            code, pid = slot.proc.returncode, slot.proc.pid
            ran_s = time.monotonic() - slot.started_at
            slot.proc = None
            if self.stop_at is not None:
                slot.final.append(code)
                continue
            if code == 0:
                # Stopped on purpose (someone signalled that child): not a crash.
                log.warning("worker stopped; not restarting it", slot=slot.index, pid=pid)
                continue
            if code == BAD_INPUT:
                log.error("worker refused its input; stopping all", slot=slot.index, pid=pid)
                self.fatal = code
                self._on_signal(signal.SIGTERM, None)
                continue
            slot.failures = 1 if ran_s >= self.backoff.stable_s else slot.failures + 1
            delay = self.backoff.delay(slot.failures)
            slot.restart_at = time.monotonic() + delay
            fields = {
                "slot": slot.index,
                "pid": pid,
                "how": describe(code),
                "ran_s": round(ran_s, 1),
                "failures_in_a_row": slot.failures,
                "restart_in_s": delay,
            }
            if delay >= self.backoff.cap_s:
                log.error("worker crash loop", **fields)
            else:
                log.warning("worker died; restarting", **fields)

    def _restart_due(self) -> None:
        now = time.monotonic()
        for slot in self.slots:
            if slot.proc is None and slot.restart_at is not None and slot.restart_at <= now:
                slot.restarts += 1
                self._start(slot)

    def _escalate(self) -> None:
        """A child that outlives the stop by ``kill_after_s`` is killed: the stop ends."""
        if self.stop_at is None or time.monotonic() < self.stop_at + self.kill_after_s:
            return
        for slot in self.slots:
            if slot.proc is not None and slot.proc.poll() is None:
                log.error("worker did not stop in time; killing it", pid=slot.proc.pid)
                slot.proc.kill()
                self.killed += 1

    def _next_timeout(self) -> float:
        deadlines = [s.restart_at for s in self.slots if s.restart_at is not None]
        if self.stop_at is not None:
            deadlines.append(self.stop_at + self.kill_after_s)
        # A short ceiling: SIGCHLD wakes us, the ceiling covers a signal lost to a race.
        soonest = min(deadlines, default=time.monotonic() + 1.0)
        return min(1.0, max(0.0, soonest - time.monotonic()))

    def _exit_status(self) -> int:
        if self.fatal is not None:
            return self.fatal
        codes = [code for slot in self.slots for code in slot.final]
        crashed = any(slot.down_at_stop for slot in self.slots)
        return 0 if not self.killed and not crashed and all(c == 0 for c in codes) else 1


def _die_with(parent: int) -> Callable[[], None]:
    """In the child, before exec: SIGTERM me when my parent dies (Linux), and if it is
    already gone (it died between fork and here), exit now."""
    libc = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None

    def child() -> None:
        if libc is not None:
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return child


def worker_command(options: Sequence[str]) -> list[str]:
    """The ``opsc worker`` a supervisor runs, with the options it was given."""
    return [sys.executable, "-m", "opsconductor.cli", "worker", *options]
