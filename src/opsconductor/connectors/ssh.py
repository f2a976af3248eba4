"""SSH targets with asyncssh: connections and their host keys.

Host keys are checked against the tenant's known_hosts, always; a host with no known key
is refused unless the tenant opted in to ``accept-new``, which trusts and records the first
key. A key other than the stored one(s) is refused as HOST KEY CHANGED, with both
fingerprints, under every policy (the rule is in ``opsconductor.host_keys``). One
connection per target is opened on first use and reused by every later step of the
execution (``SshPool``). Commands and scripts run through ``ssh_run``, file copies through
``ssh_files``.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import asyncssh

from opsconductor.connectors.outcome import StepInputError
from opsconductor.errors import BadInput, OpsError
from opsconductor.host_keys import HostKey, HostKeyChanged

#: Resolves a credential reference to a password or a private key (PEM/OpenSSH text).
CredentialResolver = Callable[[str], str | Awaitable[str]]

CONNECT_TIMEOUT_S = 10.0
KEEPALIVE_S = 15.0


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
    #: the bastion this target is reached through (its own target, checked alike)
    jump: SshTarget | None = None

    @property
    def where(self) -> str:
        via = f" via {self.jump.where}" if self.jump is not None else ""
        return f"{self.username}@{self.host}:{self.port}{via}"


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
        tunnel: asyncssh.SSHClientConnection | None = None
        if target.jump is not None:
            # The bastion is a connection of the pool like any other: its host key is
            # checked against the tenant's known_hosts before anything goes through it.
            try:
                tunnel = await self.connection(target.jump)
            except SshError as exc:
                raise SshError(f"{target.where}: bastion: {exc}") from None
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
            "tunnel": tunnel,  # None: a direct TCP connection
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

    @property
    def holding(self) -> bool:
        """Is any connection open (anything for ``close`` to do)?"""
        return bool(self._conns)

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
