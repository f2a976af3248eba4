"""SSH targets with asyncssh: commands, uploaded scripts and SFTP file copies.

Host keys are checked against the tenant's known_hosts, always; a host with no known key
is refused unless the tenant opted in to ``accept-new``, which trusts and records the first
key. A key other than the stored one(s) is refused as HOST KEY CHANGED, with both
fingerprints, under every policy (the rule is in ``opsconductor.host_keys``). One
connection per target is opened on first use and reused by every later step of the
execution (``SshPool``).

Stopping a remote command must not depend on the server honouring SSH ``signal`` requests
(OpenSSH refuses them in many set-ups), so every command first prints the pid of its shell
on stderr. sshd starts each session in its own session and process group, so that pid is
the group id, and a second channel on the same connection can ``kill`` the whole group.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import hashlib
import inspect
import shlex
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import asyncssh

from opsconductor.connectors.local import KILL_GRACE_S, CommandResult
from opsconductor.connectors.outcome import StepInputError
from opsconductor.errors import BadInput, OpsError
from opsconductor.host_keys import HostKey, HostKeyChanged
from opsconductor.output import OutputBuffer

#: Resolves a credential reference to a password or a private key (PEM/OpenSSH text).
CredentialResolver = Callable[[str], str | Awaitable[str]]

CONNECT_TIMEOUT_S = 10.0
#: How long a stop waits for the pid report of a command that has only just started.
PID_WAIT_S = 10.0
KEEPALIVE_S = 15.0
_CHUNK = 65_536
#: Prefix of the line that reports the remote shell's pid (= its process group) on stderr.
_PID_MARK = b"opsc-pid:"


#: How a server that has none of the host key types we offer ends the handshake.
_HANG_UP = (asyncssh.DisconnectError, ConnectionResetError, ConnectionAbortedError)


class HostKeyStore(Protocol):
    """The tenant's known_hosts."""

    accept_new: bool

    async def keys(self, host: str, port: int) -> list[str]: ...

    async def remember(self, host: str, port: int, public_key: str) -> None:
        """Store a first key; raises ``HostKeyChanged`` if a different one is stored."""


class SshError(Exception):
    """Could not reach or log in to a target; the message says which and why."""


@dataclass(frozen=True)
class SshTarget:
    host: str
    port: int
    username: str
    credential_ref: str | None

    @property
    def where(self) -> str:
        return f"{self.username}@{self.host}:{self.port}"


async def resolve(resolver: CredentialResolver, ref: str) -> str:
    value = resolver(ref)
    return await value if inspect.isawaitable(value) else value


def default_username() -> str:
    return getpass.getuser()


class SshPool:
    """Open connections of one execution, one per (address, port, user, credential)."""

    def __init__(
        self,
        known_hosts: HostKeyStore,
        resolve_credential: CredentialResolver,
        *,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        keepalive_s: float = KEEPALIVE_S,
    ) -> None:
        self.known_hosts = known_hosts
        self.resolve_credential = resolve_credential
        self.connect_timeout_s = connect_timeout_s
        self.keepalive_s = keepalive_s
        self._conns: dict[SshTarget, asyncssh.SSHClientConnection] = {}
        self._locks: dict[SshTarget, asyncio.Lock] = {}
        #: connections opened so far (reuse shows as fewer opens than steps)
        self.opened = 0

    async def credential(self, target: SshTarget) -> str | None:
        if target.credential_ref is None:
            return None
        try:
            return await resolve(self.resolve_credential, target.credential_ref)
        except (KeyError, LookupError, ValueError) as exc:
            raise StepInputError(f"credential_ref {target.credential_ref!r}: {exc}") from None

    async def connection(self, target: SshTarget) -> asyncssh.SSHClientConnection:
        lock = self._locks.setdefault(target, asyncio.Lock())
        async with lock:  # two steps on one target must not open two connections
            conn = self._conns.get(target)
            if conn is None or conn.is_closed():
                conn = await self._connect(target)
                self._conns[target] = conn
                self.opened += 1
            return conn

    async def _connect(self, target: SshTarget) -> asyncssh.SSHClientConnection:
        try:
            stored = await self.known_hosts.keys(target.host, target.port)
            trusted = [HostKey.parse(k) for k in stored]
        except BadInput as exc:  # a stored row no key parser accepts: trust nothing
            raise SshError(f"{target.where}: stored host key is unreadable: {exc}") from None
        learn = not trusted and self.known_hosts.accept_new
        witness = _Witness()
        options: dict[str, Any] = {
            "username": target.username,
            # With stored keys asyncssh offers the server only their key types, as ssh
            # does, so a host holding several keys answers with one we know.
            "known_hosts": None if learn else ([_public_key(k.text) for k in trusted], [], []),
            "client_factory": lambda: witness,
            "connect_timeout": self.connect_timeout_s,
            "keepalive_interval": self.keepalive_s,
            "config": [],  # this product's settings, not whatever ~/.ssh/config says
            **_auth_options(await self.credential(target)),
        }
        try:
            conn = await asyncssh.connect(target.host, target.port, **options)
        except asyncssh.HostKeyNotVerifiable:
            if trusted and witness.presented is not None:
                raise SshError(
                    f"{target.where}: "
                    f"{HostKeyChanged(target.host, target.port, trusted, witness.presented)}"
                ) from None
            raise SshError(
                f"{target.where}: host key is not in this tenant's known_hosts; "
                f"trust it with `opsc known-hosts add {target.host} --port {target.port}`"
            ) from None
        except asyncssh.PermissionDenied:
            raise SshError(f"{target.where}: authentication failed") from None
        except _HANG_UP as exc:
            # Offered only the stored key types, a host that has none of them any more
            # hangs up (OpenSSH: a disconnect or a reset, as the race goes) or fails the
            # key exchange (asyncssh): perhaps a change too.
            if trusted and witness.presented is None:
                await self._changed_type(target, trusted)
            raise SshError(f"{target.where}: cannot connect: {exc}") from None
        except (OSError, asyncssh.Error, TimeoutError) as exc:
            raise SshError(f"{target.where}: cannot connect: {exc or type(exc).__name__}") from None
        if learn:
            key = conn.get_server_host_key()
            if key is not None:
                try:
                    await self.known_hosts.remember(target.host, target.port, HostKey.of(key).text)
                except OpsError as exc:  # another run stored a different key first
                    conn.close()
                    raise SshError(f"{target.where}: {exc}") from None
        return conn

    async def _changed_type(self, target: SshTarget, trusted: list[HostKey]) -> None:
        """Raise HOST KEY CHANGED when the host offers none of the stored key types; just
        return when it cannot be asked or offers a stored key (some other failure)."""
        try:  # stored types first: a hang-up for another reason must not look like one
            presented = await scan_host_key(
                target.host, target.port, trusted, timeout_s=self.connect_timeout_s
            )
        except SshError:
            return
        if presented in trusted:
            return
        other_type = presented.key_type not in {k.key_type for k in trusted}
        note = " (the host offers no key of a stored type)" if other_type else ""
        changed = HostKeyChanged(target.host, target.port, trusted, presented, note=note)
        raise SshError(f"{target.where}: {changed}")

    async def close(self) -> None:
        conns, self._conns = list(self._conns.values()), {}
        for conn in conns:
            conn.close()
        for conn in conns:
            with contextlib.suppress(Exception):
                await conn.wait_closed()


def _public_key(text: str) -> asyncssh.SSHKey:
    return asyncssh.import_public_key(text)


class _Witness(asyncssh.SSHClient):
    """Keeps the key a server presented when it is not a stored one, so the refusal can
    show its fingerprint; it never accepts such a key."""

    presented: HostKey | None = None

    def validate_host_public_key(
        self, host: str, addr: str, port: int, key: asyncssh.SSHKey
    ) -> bool:
        self.presented = HostKey.of(key)
        return False


async def scan_host_key(
    host: str,
    port: int,
    prefer: Sequence[HostKey] = (),
    *,
    timeout_s: float = CONNECT_TIMEOUT_S,
) -> HostKey:
    """The key the host presents. With ``prefer`` (the stored keys) it is asked for those
    key types first, as a connection would, so a host with several keys answers with the
    one we know rather than whichever type asyncssh likes best."""
    types = [alg.decode() for k in prefer for alg in _public_key(k.text).sig_algorithms]
    attempts: list[dict[str, Any]] = [{"server_host_key_algs": types}] if types else []
    attempts.append({})
    for n, extra in enumerate(attempts):
        try:
            found = await asyncio.wait_for(
                asyncssh.get_server_host_key(host, port, config=[], **extra), timeout_s
            )
        except _HANG_UP as exc:
            if n + 1 < len(attempts):  # none of the preferred types (a hang-up): ask again
                continue
            raise SshError(f"{host}:{port}: cannot fetch the host key: {exc}") from None
        except (OSError, asyncssh.Error, TimeoutError) as exc:
            raise SshError(f"{host}:{port}: cannot fetch the host key: {exc}") from None
        if found is None:
            raise SshError(f"{host}:{port}: the server offered no host key")
        return HostKey.of(found)
    raise AssertionError("the last attempt returns or raises")


def _auth_options(secret: str | None) -> dict[str, Any]:
    """A private key or a password from the credential; nothing else is tried, so a run
    never depends on the worker's own ~/.ssh keys or agent once a credential is set."""
    if secret is None:
        return {}  # no credential: the worker's own keys and agent, as plain ssh would
    if secret.lstrip().startswith("-----BEGIN"):
        try:
            key = asyncssh.import_private_key(secret)
        except (asyncssh.KeyImportError, ValueError) as exc:
            raise StepInputError(f"credential is not a usable private key: {exc}") from None
        return {"client_keys": [key], "agent_path": None, "password": None}
    return {"client_keys": [], "agent_path": None, "password": secret}


def wrap(command: str, env: Mapping[str, str] | None = None, cwd: str | None = None) -> str:
    """The command line sent to the server: report the group id, then run under /bin/sh."""
    parts = [f'echo "{_PID_MARK.decode()}$$" >&2']
    if cwd:
        parts.append(f"cd {shlex.quote(cwd)}")
    parts += [f"export {name}={shlex.quote(value)}" for name, value in (env or {}).items()]
    parts.append(f"exec /bin/sh -c {shlex.quote(command)}")
    return " && ".join(parts)


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
    """TERM the remote process group, KILL it after the grace period, close the channel."""
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
) -> CommandResult:
    """Run ``command`` on the target; stop it (remote processes included) on timeout, on
    ``cancel``, or when our caller is cancelled."""
    started = time.monotonic()
    process = await conn.create_process(wrap(command, env, cwd), encoding=None)
    process.stdin.write_eof()
    out, err = OutputBuffer(), OutputBuffer()
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
) -> CommandResult:
    """Upload ``script`` to a fresh private file, run it, remove it whatever happened."""
    path = f"/tmp/opsc-script-{uuid.uuid4().hex}"
    # 'x' fails if the name exists, so nobody can have planted the file beforehand.
    private = asyncssh.SFTPAttrs(permissions=0o700)
    async with conn.start_sftp_client() as sftp, sftp.open(path, "xb", private) as remote:
        await remote.write(script.encode())
    try:
        line = " ".join(shlex.quote(part) for part in (interpreter, path, *args))
        return await run_command(conn, line, timeout_s=timeout_s, env=env, cwd=cwd, cancel=cancel)
    finally:
        with contextlib.suppress(Exception):
            async with conn.start_sftp_client() as sftp:
                await sftp.remove(path)


@dataclass(frozen=True)
class Copied:
    size: int
    sha256: str


def file_digest(path: Path) -> Copied:
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as source:
        while chunk := source.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return Copied(size, digest.hexdigest())


async def copy_file(
    conn: asyncssh.SSHClientConnection,
    src: Path,
    dest: str,
    mode: int | None,
    *,
    expected: str | None = None,
) -> Copied:
    """Upload to a temporary name beside ``dest``, read it back and compare SHA-256, then
    rename over ``dest``: a failed or corrupted copy never replaces the old file.

    ``expected`` (the digest checked and approved before the copy) is what the copy must
    hold, so a source edited in between is refused rather than deployed."""
    want = expected or file_digest(src).sha256
    temporary = f"{dest}.opsc-{uuid.uuid4().hex[:12]}"
    size = 0
    async with conn.start_sftp_client() as sftp:
        try:
            async with sftp.open(temporary, "xb") as remote:
                with src.open("rb") as source:
                    while chunk := source.read(_CHUNK):
                        size += len(chunk)
                        await remote.write(chunk)
            remote_digest = await _remote_sha256(sftp, temporary)
            if remote_digest != want:
                raise SshError(
                    f"{dest}: checksum mismatch after copy (expected {want}, remote "
                    f"{remote_digest}); the source may have changed since it was checked"
                )
            if mode is not None:
                await sftp.chmod(temporary, mode)
            await sftp.posix_rename(temporary, dest)
        except BaseException:
            with contextlib.suppress(Exception):
                await sftp.remove(temporary)
            raise
    return Copied(size, want)


async def _remote_sha256(sftp: asyncssh.SFTPClient, path: str) -> str:
    digest = hashlib.sha256()
    async with sftp.open(path, "rb") as remote:
        while chunk := await remote.read(_CHUNK):
            digest.update(chunk if isinstance(chunk, bytes) else chunk.encode())
    return digest.hexdigest()


async def fetch_file(
    conn: asyncssh.SSHClientConnection, src: str, dest: Path, mode: int | None
) -> Copied:
    """Download ``src`` to a temporary name beside ``dest``, compare its SHA-256 with a
    second read of the remote file, then rename over ``dest``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    temporary = dest.with_name(f"{dest.name}.opsc-{uuid.uuid4().hex[:12]}")
    try:
        async with conn.start_sftp_client() as sftp:
            async with sftp.open(src, "rb") as remote:
                with temporary.open("xb") as local:
                    while chunk := await remote.read(_CHUNK):
                        local.write(chunk if isinstance(chunk, bytes) else chunk.encode())
            remote_digest = await _remote_sha256(sftp, src)
        copied = file_digest(temporary)
        if copied.sha256 != remote_digest:
            raise SshError(
                f"{src}: checksum mismatch after fetch "
                f"(remote {remote_digest}, local {copied.sha256}); the file may be changing"
            )
        if mode is not None:
            temporary.chmod(mode)
        temporary.replace(dest)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return copied
