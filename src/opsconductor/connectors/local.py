"""Run a local step on this machine: always in the tenant's sandbox (``sandbox.py``), as its
unprivileged user, bounded in time, output capped, killable as a group, and never outliving
its worker.

**Process lifetime.** A SIGKILLed worker runs no cleanup, so the sandbox must end by itself:
``bwrap --die-with-parent`` has the kernel SIGKILL it when the worker dies
(``PR_SET_PDEATHSIG``), and the death of its PID 1 ends every process of its PID
namespace, daemonised, ``setsid`` or TERM-ignoring ones included (a process group kill
would miss the first two; a cgroup needs a delegated hierarchy we cannot count on). bwrap
binds itself only once it runs, so a worker that dies between the spawn and that moment
would leave it unbound: the step therefore waits on a gate (``Gate``) that we open only
after bwrap reported (``--info-fd``, written after the binding); if we die first, the gate
reads end-of-file and the step never starts. bwrap itself is spawned under ``setpriv
--pdeathsig KILL`` behind a parent check (``sandbox.guarded``): a worker that dies while
bwrap is still setting up takes it along, or it never starts. PR_SET_PDEATHSIG follows the
*thread* that spawned: we spawn from the event loop's thread, which lives as long as the
worker's work.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import select
import shlex
import signal
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opsconductor.connectors import sandbox
from opsconductor.connectors.sandbox import Sandbox
from opsconductor.output import OutputBuffer, OutputSink, buffers

#: Seconds between SIGTERM and SIGKILL when a command must stop.
KILL_GRACE_S = 2.0


@dataclass(frozen=True)
class CommandResult:
    exit_code: int | None
    stdout: str
    stderr: str
    timed_out: bool
    cancelled: bool
    duration_s: float


async def _pump(stream: asyncio.StreamReader, sink: OutputBuffer) -> None:
    while chunk := await stream.read(65_536):
        sink.feed(chunk)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


async def _stop(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM the whole process group, SIGKILL it after a grace period."""
    _signal_group(proc.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), KILL_GRACE_S)
    except TimeoutError:
        _signal_group(proc.pid, signal.SIGKILL)
        await proc.wait()


@dataclass
class Gate:
    """Two pipes: bwrap reports on ``info`` once it is bound to us; the step's launcher
    reads a line from its stdin, ``go`` (``sandbox.LAUNCHER``), and then the rest of it:
    ``feed``'s bytes, if any, else nothing."""

    info_r: int
    info_w: int
    go_r: int
    go_w: int
    feed: Path | None = None
    _closed: set[int] = field(default_factory=set)
    _feeding: bool = False
    #: a pidfd of the sandbox's PID 1 (bwrap's ``child-pid``), once reported
    _init: int | None = None

    @classmethod
    def make(cls, feed: Path | None = None) -> Gate:
        info_r, info_w = os.pipe()
        go_r, go_w = os.pipe()
        return cls(info_r, info_w, go_r, go_w, feed)

    def _close(self, fd: int) -> None:
        if fd not in self._closed:
            self._closed.add(fd)
            os.close(fd)

    def spawned(self) -> None:
        """The child holds its ends now; ours must go, or no end-of-file would ever come."""
        self._close(self.info_w)
        self._close(self.go_r)

    async def open(self) -> None:
        """Let the step start once bwrap reported (bound to us by then); end-of-file there
        (bwrap failed) opens it too: nothing is left to start. Then feed its stdin."""
        os.set_blocking(self.info_r, False)
        seen = b""
        while b"}" not in seen:
            await _readable(self.info_r)
            try:
                chunk = os.read(self.info_r, 4096)
            except BlockingIOError:
                continue
            if not chunk:
                break
            seen += chunk
        self._watch_init(seen)
        with contextlib.suppress(BrokenPipeError):  # BrokenPipe: the sandbox is gone already
            os.write(self.go_w, b"go\n")  # a pipe takes 3 bytes without blocking
        if self.feed is None:
            self._close(self.go_w)
            return
        self._feeding = True  # the thread closes go_w: it may still write after a cancel
        await asyncio.to_thread(self._feed_and_close, self.feed)

    def _watch_init(self, info: bytes) -> None:
        """Hold a pidfd of the sandbox's PID 1 from bwrap's report: the kernel ends every
        process of the namespace before that one ends (``gone``)."""
        try:
            pid = int(json.loads(info)["child-pid"])
            self._init = os.pidfd_open(pid)
        except (ValueError, KeyError, TypeError, AttributeError, OSError):
            return  # no report (bwrap failed) or no pidfds: nothing to wait for

    async def gone(self, within_s: float) -> None:
        """Once bwrap's own process has ended: end the sandbox's PID 1 if it still runs, and
        wait (bounded) until it has, and with it every process of the sandbox (the kernel
        ends them all before a namespace's PID 1). Killed, bwrap ends its PID 1 only through
        ``--die-with-parent``, a moment later, or under load later still: without this the
        step could be recorded as stopped while its processes still ran."""
        if self._init is None:
            return
        fd, self._init = self._init, None
        try:
            if not select.select([fd], [], [], 0)[0]:  # ended already: the usual case
                with contextlib.suppress(OSError):  # ProcessLookupError: it just ended
                    signal.pidfd_send_signal(fd, signal.SIGKILL)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(_readable(fd), within_s)
        finally:
            os.close(fd)

    def _feed_and_close(self, feed: Path) -> None:
        try:  # BrokenPipe: the step ended (or was stopped) before reading it all
            with contextlib.suppress(BrokenPipeError):
                _copy_into(feed, self.go_w)
        finally:
            self._close(self.go_w)

    def close(self) -> None:
        for fd in (self.info_r, self.info_w, self.go_r):
            self._close(fd)
        if not self._feeding:
            self._close(self.go_w)
        if self._init is not None:
            os.close(self._init)
            self._init = None


def _copy_into(src: Path, fd: int) -> None:
    with src.open("rb") as source:
        while chunk := source.read(65_536):
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view) :]


async def _readable(fd: int) -> None:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, wake)
    try:
        await ready
    finally:
        loop.remove_reader(fd)


def use_pidfd_child_watcher() -> bool:
    """Have this process's event loop learn of child exits through pidfds (Linux 5.3+).

    Python 3.11's default child watcher starts a thread per child process; the pidfd
    watcher needs no thread and no signal (bench/RESULTS.md: about 30 % less worker CPU
    per spawn). 3.12+ picks it by itself, so this changes nothing there. Call it from the
    one long-lived loop of a process (``opsc worker``): a pidfd watcher follows the main
    thread's loop. Returns whether it was installed.
    """
    if sys.platform != "linux" or sys.version_info >= (3, 12):
        return False
    if not isinstance(asyncio.get_running_loop(), asyncio.BaseEventLoop):
        return False  # uvloop: libuv watches its children itself, without threads
    try:  # the kernel or a seccomp filter may not allow it
        os.close(os.pidfd_open(os.getpid()))
    except (AttributeError, OSError):
        return False
    watcher = asyncio.PidfdChildWatcher()
    watcher.attach_loop(asyncio.get_running_loop())
    asyncio.set_child_watcher(watcher)
    return True


async def run_process(
    argv: Sequence[str],
    *,
    timeout_s: float,
    cancel: asyncio.Event | None = None,
    stdin: int | None = None,
    stdout: int | None = None,
    pass_fds: Sequence[int] = (),
    gate: Gate | None = None,
    on_output: OutputSink | None = None,
) -> CommandResult:
    """Run ``argv`` with an empty environment; stop it on timeout or when ``cancel`` is
    set. ``stdin``/``stdout``: descriptors to use instead of /dev/null and a capture;
    ``gate``: opened once the process is started (``stdin`` is its ``go_r`` then);
    ``on_output``: gets each whole line of output as it comes."""
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL if stdin is None else stdin,
        stdout=asyncio.subprocess.PIPE if stdout is None else stdout,
        stderr=asyncio.subprocess.PIPE,
        env={},  # nothing of ours: the sandbox's PID 1 would show it to the step
        start_new_session=True,  # own process group, so a kill reaches its children too
        pass_fds=tuple(pass_fds),
    )
    opener = None
    if gate is not None:
        gate.spawned()
        opener = asyncio.ensure_future(gate.open())
    try:
        return await _supervise(proc, started, timeout_s, cancel, on_output)
    finally:
        if opener is not None and not opener.done():
            opener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await opener
        if gate is not None:
            await asyncio.shield(gate.gone(KILL_GRACE_S))


async def _supervise(
    proc: asyncio.subprocess.Process,
    started: float,
    timeout_s: float,
    cancel: asyncio.Event | None,
    on_output: OutputSink | None = None,
) -> CommandResult:
    out, err = buffers(on_output)
    assert proc.stderr is not None
    streams = [_pump(proc.stderr, err)]
    if proc.stdout is not None:
        streams.append(_pump(proc.stdout, out))
    pumps = asyncio.gather(*streams, proc.wait())
    stopper = asyncio.ensure_future(cancel.wait()) if cancel else None
    waiters: set[asyncio.Future[Any]] = {pumps, stopper} if stopper else {pumps}
    try:
        done, _ = await asyncio.wait(
            waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
        )
    except asyncio.CancelledError:  # our caller gave up: the process must not outlive it
        await asyncio.shield(_stop(proc))
        pumps.cancel()
        raise
    timed_out = not done
    cancelled = stopper is not None and stopper in done and pumps not in done
    if stopper:
        stopper.cancel()
    if timed_out or cancelled:
        await _stop(proc)
        # Grandchildren may hold the pipes open after the kill; don't wait on them forever.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(pumps), 1.0)
        pumps.cancel()
    out.close()
    err.close()
    return CommandResult(
        exit_code=proc.returncode,
        stdout=out.render(),
        stderr=err.render(),
        timed_out=timed_out,
        cancelled=cancelled,
        duration_s=time.monotonic() - started,
    )


def _memfd(name: str, data: bytes) -> int:
    """An anonymous in-memory file holding ``data``, positioned at its start."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    try:
        os.write(fd, data)  # small: an environment, a script
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd


async def run_sandboxed(
    box: Sandbox,
    inner: Sequence[str],
    *,
    timeout_s: float,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    cancel: asyncio.Event | None = None,
    files: Mapping[str, bytes] | None = None,
    feed: Path | None = None,
    stdout: int | None = None,
    on_output: OutputSink | None = None,
    binds: Sequence[tuple[str, str]] = (),
) -> CommandResult:
    """Run ``inner`` in the sandbox as its user, with exactly ``env`` (plus PATH, HOME,
    LANG); ``files`` are handed in read-only at their paths under ``sandbox.DATA_DIR``;
    ``feed`` is streamed to its stdin (else it reads end-of-file there); ``binds``: (path
    here, path inside) directories shown read-only."""
    data = {sandbox.ENV_FILE: box.environment(env or {}).encode(), **(files or {})}
    fds: dict[str, int] = {}
    gate = Gate.make(feed)
    try:
        for path, content in data.items():
            fds[path] = _memfd(Path(path).name, content)
        return await run_process(
            box.argv(inner, cwd=cwd, data=fds, info_fd=gate.info_w, binds=binds),
            timeout_s=timeout_s,
            cancel=cancel,
            stdin=gate.go_r,
            stdout=stdout,
            pass_fds=(*fds.values(), gate.info_w),
            gate=gate,
            on_output=on_output,
        )
    finally:
        for fd in fds.values():
            os.close(fd)
        gate.close()


async def run_command(
    box: Sandbox,
    command: str,
    *,
    timeout_s: float,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    cancel: asyncio.Event | None = None,
    on_output: OutputSink | None = None,
) -> CommandResult:
    """Run ``command`` under ``/bin/sh`` in the sandbox."""
    return await run_sandboxed(
        box,
        ["/bin/sh", "-c", command],
        timeout_s=timeout_s,
        env=env,
        cwd=cwd,
        cancel=cancel,
        on_output=on_output,
    )


async def run_script(
    box: Sandbox,
    script: str,
    *,
    interpreter: str,
    args: list[str],
    timeout_s: float,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    cancel: asyncio.Event | None = None,
    on_output: OutputSink | None = None,
) -> CommandResult:
    """Hand ``script`` in read-only and run it with ``interpreter`` in the sandbox."""
    inner = [*shlex.split(interpreter), sandbox.SCRIPT_FILE, *args]
    return await run_sandboxed(
        box,
        inner,
        timeout_s=timeout_s,
        env=env,
        cwd=cwd,
        cancel=cancel,
        files={sandbox.SCRIPT_FILE: script.encode()},
        on_output=on_output,
    )


#: Copy stdin to a temporary name beside the destination, compare its SHA-256, rename into
#: place; the same contract as the SFTP copy, carried out by the sandbox's user.
_PUSH = """set -eu
trap 'rm -f -- "$OPSC_TEMP"' EXIT
cat > "$OPSC_TEMP"
got=$(sha256sum -- "$OPSC_TEMP")
got=${got%% *}
if [ "$got" != "$OPSC_SHA256" ]; then
    echo "$OPSC_DEST: checksum mismatch after copy ($OPSC_SHA256 != $got)" >&2
    exit 3
fi
if [ -n "$OPSC_MODE" ]; then chmod "$OPSC_MODE" "$OPSC_TEMP"; fi
mv -f -- "$OPSC_TEMP" "$OPSC_DEST"
"""


async def push_file(
    box: Sandbox,
    src: Path,
    dest: str,
    mode: int | None,
    *,
    sha256: str,
    timeout_s: float,
    cancel: asyncio.Event | None = None,
) -> CommandResult:
    """Copy ``src`` (opened here, in the tenant's files root) to ``dest`` as the sandbox
    sees it: the step's user writes, so only the tenant's working directory can take it."""
    env = {
        "OPSC_DEST": dest,
        "OPSC_TEMP": f"{dest}.opsc-{uuid.uuid4().hex[:12]}",
        "OPSC_SHA256": sha256,
        "OPSC_MODE": "" if mode is None else f"{mode:o}",
    }
    return await run_sandboxed(
        box, ["/bin/sh", "-c", _PUSH], timeout_s=timeout_s, env=env, cancel=cancel, feed=src
    )


async def fetch_file(
    box: Sandbox,
    src: str,
    dest: Path,
    mode: int | None,
    *,
    timeout_s: float,
    cancel: asyncio.Event | None = None,
) -> tuple[CommandResult, str, int]:
    """Read ``src`` as the sandbox sees it into a temporary name beside ``dest`` (in the
    tenant's files root), rename it into place if the read succeeded; the result, the
    SHA-256 and the size of the copy."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    temporary = dest.with_name(f"{dest.name}.opsc-{uuid.uuid4().hex[:12]}")
    try:
        with temporary.open("xb") as sink:
            result = await run_sandboxed(
                box,
                ["/bin/cat", "--", src],
                timeout_s=timeout_s,
                cancel=cancel,
                stdout=sink.fileno(),
            )
        if result.exit_code != 0 or result.timed_out or result.cancelled:
            temporary.unlink(missing_ok=True)
            return result, "", 0
        digest, size = _sha256(temporary), temporary.stat().st_size
        if mode is not None:
            temporary.chmod(mode)
        temporary.replace(dest)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return result, digest, size


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(65_536):
            digest.update(chunk)
    return digest.hexdigest()
