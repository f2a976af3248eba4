"""Commands and uploaded scripts on SSH targets, and how they end.

**Stopping** a remote command must not depend on the server honouring SSH ``signal``
requests (OpenSSH refuses them in many set-ups), so every command first prints the pid of
its shell on stderr. sshd starts each session in its own session and process group, so that
pid is the group id, and a second channel on the same connection can ``kill`` the group.

**Dying with the worker**: when the connection drops (the worker was SIGKILLed, its host
died), sshd closes the pipes of a session without a pty but signals nothing, so a ``sleep``
would run on, and the step's re-run, once the lease is reclaimed, would overlap it. A pty
would make sshd hang the session up, but it merges stderr into stdout, turns ``\\n`` into
``\\r\\n`` and leaves a HUP-ignoring command alive. So the command runs under a small POSIX
supervisor (``SUPERVISE``) instead: we never close the channel's stdin while the command
runs, a watcher in the session blocks reading it, and end-of-file there (sshd closes the
pipe when the channel or the connection goes) makes it SIGKILL the session's process group
at once: whoever would read the output is gone, and a grace period would only let the old
attempt overlap a new one. The command reads ``/dev/null`` (it used to get a stdin closed at
once: the same end-of-file), its stdout and stderr are untouched, and its exit status is
passed on.
**Privilege escalation** (``become``): the login shell reports its pid as above, then
``exec``s ``sudo -S -p '' -u USER -- /bin/sh -c BECOME ...``. sudo reads the password from
the channel's stdin one byte at a time up to the newline, so what follows stays on stdin for
the command under it: ``BECOME`` (running as USER) skips lines up to a marker line (the
password, had sudo not needed it; the empty lines that make a wrong password fail at once
instead of waiting for a second try), evaluates the step's ``cd`` and ``export``s sent
between two marker lines (sudo resets the environment, and its log records its command
line: the values travel on stdin, not there), and ``exec``s the supervisor, which keeps
watching the same stdin. sudo keeps the session's process group (no pty is asked for), so
the watcher, as USER, still kills the whole group, sudo included, when the channel goes.
The password is never on a command line, in an environment or in a file.
The limit: sshd must learn that the connection is gone. A killed process's connection is
closed by its kernel at once; a host that vanishes from the network is noticed only by the
target's ``ClientAliveInterval``/TCP keepalives (docs/security.md, "Process lifetime").
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shlex
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncssh

from opsconductor.connectors.local import KILL_GRACE_S, CommandResult
from opsconductor.output import OutputBuffer, OutputSink, buffers

#: How long a stop waits for the pid report of a command that has only just started.
PID_WAIT_S = 10.0
_CHUNK = 65_536
#: Prefix of the line that reports the remote shell's pid (= its process group) on stderr.
_PID_MARK = b"opsc-pid:"

#: Run by the target's ``/bin/sh`` with the step's command as ``$1``. The watcher ignores
#: TERM, HUP and INT so that a stop (TERM to the group) or a hang-up cannot take it away
#: while a command that ignores them still runs; it is killed when the command ends. The
#: supervisor's own stderr goes to /dev/null (dash reports a killed command there, even
#: with the command's ``2>&4`` still in effect: so the subshell redirects, not the
#: supervisor), the command's to the channel (fd 4 carries it past). The exit status is the
#: command's, or 128+N after a death by signal N, as ``bwrap`` reports a local step's.
SUPERVISE = """exec 3<&0 </dev/null 4>&2 2>/dev/null
(trap '' TERM HUP INT; while read -r _ <&3; do :; done; kill -s KILL -- -${2:-$$}) >/dev/null 4>&- &
w=$!
exec 3<&-
(exec 2>&4 4>&-; exec /bin/sh -c "$1")
rc=$?
kill -s KILL "$w"
exit "$rc"
"""


#: Run by ``/bin/sh`` under sudo, as the become user, with ``$1`` the session's process
#: group, ``$2`` the marker line, ``$3`` the command (see the module docstring). Reading
#: stops at end-of-file too: then no marker came, and nothing runs.
BECOME = f"""while IFS= read -r l; do [ "$l" = "$2" ] && break; done
[ "$l" = "$2" ] || exit 125
s=
while IFS= read -r l; do [ "$l" = "$2" ] && break; s="$s$l
"; done
[ "$l" = "$2" ] || exit 125
l=
eval "$s" || exit
exec /bin/sh -c {shlex.quote(SUPERVISE)} opsc-step "$3" "$1"
"""


@dataclass(frozen=True)
class Become:
    """Run as ``user`` through sudo; ``password`` is what sudo may ask for (None: sudo
    must not ask, ``-n``)."""

    user: str
    password: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.password is not None and ("\n" in self.password or "\r" in self.password):
            # sudo reads one line: the rest would be taken for the next try or the marker.
            raise ValueError("become_password: a sudo password cannot hold a line break")


def _setup(env: Mapping[str, str] | None, cwd: str | None) -> list[str]:
    parts = [f"cd {shlex.quote(cwd)}"] if cwd else []
    return parts + [f"export {name}={shlex.quote(value)}" for name, value in (env or {}).items()]


def wrap(command: str, env: Mapping[str, str] | None = None, cwd: str | None = None) -> str:
    """The command line sent to the server: report the group id, then run ``command``
    under ``/bin/sh``, supervised (``SUPERVISE``)."""
    parts = [f'echo "{_PID_MARK.decode()}$$" >&2', *_setup(env, cwd)]
    parts.append(f"exec /bin/sh -c {shlex.quote(SUPERVISE)} opsc-step {shlex.quote(command)}")
    return " && ".join(parts)


def wrap_become(
    command: str, become: Become, env: Mapping[str, str] | None = None, cwd: str | None = None
) -> tuple[str, bytes]:
    """The command line for a ``become`` step, and what to write on its stdin first (the
    password, the environment and working directory): see the module docstring."""
    mark = f"opsc-setup-{secrets.token_hex(16)}"
    sudo = ["sudo", "-S", "-p", ""] if become.password is not None else ["sudo", "-n"]
    line = " ".join(
        [
            f'echo "{_PID_MARK.decode()}$$" >&2 && exec',
            *(shlex.quote(part) for part in [*sudo, "-u", become.user, "--", "/bin/sh", "-c"]),
            shlex.quote(BECOME),
            'opsc-become "$$"',
            mark,
            shlex.quote(command),
        ]
    )
    setup = " && ".join([*_setup(env, cwd), ":"])
    password = "" if become.password is None else f"{become.password}\n\n\n"
    return line, f"{password}{mark}\n{setup}\n{mark}\n".encode()


async def _pump(stream: asyncssh.SSHReader[bytes], sink: OutputBuffer) -> None:
    while chunk := await stream.read(_CHUNK):
        sink.feed(chunk)


async def _pump_stderr(
    stream: asyncssh.SSHReader[bytes], sink: OutputBuffer, pid: asyncio.Future[int]
) -> None:
    """Find the ``opsc-pid:`` line that ``wrap`` printed and keep it out of the output;
    whatever the login shell printed before it (a noisy profile) is kept as output."""
    pending = b""
    while not pid.done():
        chunk = await stream.read(_CHUNK)
        if not chunk:
            sink.feed(pending)
            pid.set_result(0)
            return
        pending += chunk
        while not pid.done() and b"\n" in pending:
            line, _, pending = pending.partition(b"\n")
            if line.startswith(_PID_MARK) and line[len(_PID_MARK) :].isdigit():
                pid.set_result(int(line[len(_PID_MARK) :]))
            else:
                sink.feed(line + b"\n")
        if not pid.done() and len(pending) > _CHUNK:  # no marker in sight: stop looking
            pid.set_result(0)
    sink.feed(pending)
    await _pump(stream, sink)


async def _kill_group(conn: asyncssh.SSHClientConnection, pid: int, signal_name: str) -> None:
    if pid <= 1:
        return
    with contextlib.suppress(Exception):  # a dead connection has nothing left to kill
        await asyncio.wait_for(conn.run(f"kill -{signal_name} -{pid}", check=False), 5.0)


async def _stop(
    conn: asyncssh.SSHClientConnection,
    process: asyncssh.SSHClientProcess[bytes],
    pid: asyncio.Future[int],
) -> None:
    """TERM the remote process group, KILL it after the grace period, close the channel
    (which makes the supervisor KILL whatever of the group is left)."""
    try:  # a command stopped right after it started may not have reported its pid yet;
        # the wait is bounded by the channel too: its stderr ending settles the future.
        group = await asyncio.wait_for(asyncio.shield(pid), PID_WAIT_S)
    except TimeoutError:
        group = 0
    if group <= 1:  # no pid: ask the server itself (OpenSSH honours this with privsep)
        with contextlib.suppress(Exception):
            process.send_signal("KILL")
    await _kill_group(conn, group, "TERM")
    try:
        await asyncio.wait_for(process.wait_closed(), KILL_GRACE_S)
    except TimeoutError:
        await _kill_group(conn, group, "KILL")
    process.close()
    with contextlib.suppress(Exception, TimeoutError):
        await asyncio.wait_for(process.wait_closed(), 1.0)


async def run_command(
    conn: asyncssh.SSHClientConnection,
    command: str,
    *,
    timeout_s: float,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    cancel: asyncio.Event | None = None,
    become: Become | None = None,
    on_output: OutputSink | None = None,
) -> CommandResult:
    """Run ``command`` on the target; stop it (remote processes included) on timeout, on
    ``cancel``, when our caller is cancelled, or when the connection drops. ``on_output``
    gets each whole line of output as it comes."""
    started = time.monotonic()
    if become is None:
        line, feed = wrap(command, env, cwd), b""
    else:
        line, feed = wrap_become(command, become, env, cwd)
    # stdin stays open (no write_eof): its end-of-file is the supervisor's signal to kill.
    process = await conn.create_process(line, encoding=None)
    if feed:
        process.stdin.write(feed)
    out, err = buffers(on_output)
    pid: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def finish() -> None:
        await asyncio.gather(_pump(process.stdout, out), _pump_stderr(process.stderr, err, pid))
        await process.wait_closed()

    work = asyncio.ensure_future(finish())
    stopper = asyncio.ensure_future(cancel.wait()) if cancel else None
    waiters: set[asyncio.Future[Any]] = {work, stopper} if stopper else {work}
    try:
        done, _ = await asyncio.wait(waiters, timeout=timeout_s, return_when="FIRST_COMPLETED")
    except asyncio.CancelledError:
        await asyncio.shield(_stop(conn, process, pid))
        work.cancel()
        raise
    finally:
        if stopper:
            stopper.cancel()
    timed_out = not done
    cancelled = stopper is not None and stopper in done and work not in done
    if timed_out or cancelled:
        await _stop(conn, process, pid)
        work.cancel()
    out.close()
    err.close()
    return CommandResult(
        exit_code=process.returncode,
        stdout=out.render(),
        stderr=err.render(),
        timed_out=timed_out,
        cancelled=cancelled,
        duration_s=time.monotonic() - started,
    )


async def run_script(
    conn: asyncssh.SSHClientConnection,
    script: str,
    *,
    interpreter: str,
    args: Sequence[str],
    timeout_s: float,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    cancel: asyncio.Event | None = None,
    become: Become | None = None,
    on_output: OutputSink | None = None,
) -> CommandResult:
    """Upload ``script`` to a fresh private file, run it, remove it whatever happened."""
    path = f"/tmp/opsc-script-{uuid.uuid4().hex}"
    # 'x' fails if the name exists, so nobody can have planted the file beforehand. Another
    # become user than root could not read a private file of the login user: it gets a
    # read-only one (plan text, as the approver saw it; still nobody else's to change).
    readable = become is not None and become.user != "root"
    private = asyncssh.SFTPAttrs(permissions=0o755 if readable else 0o700)
    async with conn.start_sftp_client() as sftp, sftp.open(path, "xb", private) as remote:
        await remote.write(script.encode())
        if readable:  # the umask trimmed the mode given at creation
            await sftp.chmod(path, 0o755)
    try:
        line = " ".join(shlex.quote(part) for part in (interpreter, path, *args))
        return await run_command(
            conn,
            line,
            timeout_s=timeout_s,
            env=env,
            cwd=cwd,
            cancel=cancel,
            become=become,
            on_output=on_output,
        )
    finally:
        with contextlib.suppress(Exception):
            async with conn.start_sftp_client() as sftp:
                await sftp.remove(path)
