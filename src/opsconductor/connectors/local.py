"""Run a shell command on this machine, bounded in time, output capped, killable as a group."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opsconductor.output import OutputBuffer

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
    try:  # the kernel or a seccomp filter may not allow it
        os.close(os.pidfd_open(os.getpid()))
    except (AttributeError, OSError):
        return False
    watcher = asyncio.PidfdChildWatcher()
    watcher.attach_loop(asyncio.get_running_loop())
    asyncio.set_child_watcher(watcher)
    return True


async def run_command(
    command: str,
    *,
    timeout_s: float,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    cancel: asyncio.Event | None = None,
) -> CommandResult:
    """Run ``command`` under ``/bin/sh``; stop it on timeout or when ``cancel`` is set."""
    started = time.monotonic()
    proc = await asyncio.create_subprocess_shell(
        command,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        start_new_session=True,  # own process group, so a kill reaches its children too
    )
    out, err = OutputBuffer(), OutputBuffer()
    assert proc.stdout is not None and proc.stderr is not None
    pumps = asyncio.gather(_pump(proc.stdout, out), _pump(proc.stderr, err), proc.wait())
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
    return CommandResult(
        exit_code=proc.returncode,
        stdout=out.render(),
        stderr=err.render(),
        timed_out=timed_out,
        cancelled=cancelled,
        duration_s=time.monotonic() - started,
    )


async def run_script(
    script: str,
    *,
    interpreter: str,
    args: list[str],
    timeout_s: float,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    cancel: asyncio.Event | None = None,
) -> CommandResult:
    """Write ``script`` to a private temporary file, run it, remove it."""
    fd, path = tempfile.mkstemp(prefix="opsc-script-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(script.encode())
        os.chmod(path, 0o700)
        line = " ".join(shlex.quote(part) for part in (interpreter, path, *args))
        return await run_command(line, timeout_s=timeout_s, env=env, cwd=cwd, cancel=cancel)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


def copy_file(src: Path, dest: str, mode: int | None, *, expected: str | None = None) -> str:
    """Copy to a temporary name beside ``dest``, compare SHA-256, rename into place; the
    same contract as the SFTP copy (``expected``: the digest the copy must hold). Returns
    the SHA-256."""
    target = Path(dest)
    temporary = target.with_name(f"{target.name}.opsc-{uuid.uuid4().hex[:12]}")
    expected = expected or _sha256(src)
    try:
        shutil.copyfile(src, temporary)
        copied = _sha256(temporary)
        if copied != expected:
            raise OSError(
                f"{dest}: checksum mismatch after copy (expected {expected}, copied {copied}); "
                "the source may have changed since it was checked"
            )
        if mode is not None:
            os.chmod(temporary, mode)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    return expected


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(65_536):
            digest.update(chunk)
    return digest.hexdigest()
