"""Run ``ansible-playbook`` (ansible-core) for an ``ansible`` step: once, for all its targets.

The controller runs on this machine, and a playbook runs code on its controller
(``delegate_to: localhost``, ``local_action``, lookup plugins such as ``env`` and
``file``). So it never runs as the worker: it runs in the tenant's bubblewrap sandbox
(``sandbox.py``) as the unprivileged sandbox user, with an empty environment, a private
``/tmp``, its own PID namespace and **no network**: each target's SSH port is reached
through a Unix socket that this worker forwards to that target's address and port only
(``Forwarder``), so a playbook can reach neither the database's loopback port nor any
other address. It sees ``/usr``, ``/etc``, the Python it runs on, a copy of the approved
playbook files (``playbook_files.stage``) and what we hand it, read-only, from memory
(never from disk): the inventory, the extra-vars file, the private keys and a
``known_hosts`` built from the tenant's trusted keys (``StrictHostKeyChecking yes``);
a password login's password is in that in-memory inventory only. A target behind a
bastion is forwarded through the worker's own SSH connection to that bastion (a
``direct-tcpip`` channel, ``Dial``): the controller still sees one Unix socket, and its
ssh checks the target's host key end to end.
Cancellation and timeouts stop it as a group (``local.run_process``); the sandbox's PID
namespace takes every process it started with it (SSH control masters included).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.util
import json
import logging
import os
import shlex
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import asyncssh

from opsconductor.connectors import local
from opsconductor.connectors.outcome import StepInputError
from opsconductor.connectors.sandbox import DATA_DIR, Sandbox
from opsconductor.output import OutputSink

log = logging.getLogger(__name__)

#: inside the sandbox
HERE = f"{DATA_DIR}/ansible"
PROJECT = "/run/opsc-project"
SOCKETS = "/run/opsc-net"
CALLBACK = "opsc_events"
CONNECT_TIMEOUT_S = 10.0
#: inventory variables of an asset that are never passed on: the connection is ours
_OURS = ("ansible_", "opsc_")
#: ... except these, which say nothing about how to connect or what to trust
_ALLOWED = frozenset({"ansible_python_interpreter", "ansible_remote_tmp"})

#: ``ssh -o ProxyCommand``: the controller's only way out, the Unix socket of the host and
#: port ssh was asked for (``sockets.json``; any other host:port has none).
RELAY = b"""import json, os, socket, sys, threading
sockets = json.load(open(os.path.join(os.path.dirname(__file__), "sockets.json")))
path = sockets.get(sys.argv[1] + ":" + sys.argv[2])
if path is None:
    sys.exit("opsc: " + sys.argv[1] + ":" + sys.argv[2] + " is not a target of this step")
s = socket.socket(socket.AF_UNIX)
s.connect(path)
def up():
    while data := os.read(0, 65536):
        s.sendall(data)
    s.shutdown(socket.SHUT_WR)
threading.Thread(target=up, daemon=True).start()
while data := s.recv(65536):
    os.write(1, data)
"""


@dataclass(frozen=True)
class Host:
    """One target as the inventory names it, resolved by the session (address, login,
    credential, trusted host keys)."""

    name: str
    address: str
    port: int
    user: str
    private_key: str
    known_keys: tuple[str, ...]
    variables: Mapping[str, Any]
    #: a password login instead of ``private_key`` (handed to ssh by Ansible's askpass)
    password: str | None = None


class ByteReader(Protocol):
    """An asyncio stream's or an asyncssh channel's reading end."""

    async def read(self, n: int = -1) -> bytes: ...


class ByteWriter(Protocol):
    def write(self, data: bytes) -> None: ...
    async def drain(self) -> None: ...
    def can_write_eof(self) -> bool: ...
    def write_eof(self) -> None: ...
    def close(self) -> None: ...


#: Opens the worker's stream to a host's SSH port (raises OSError when it cannot).
Dial = Callable[[Host], Awaitable[tuple[ByteReader, ByteWriter]]]


async def dial_direct(host: Host) -> tuple[ByteReader, ByteWriter]:
    return await asyncio.open_connection(host.address, host.port)


def available() -> str | None:
    """None if ansible-core can run here, else why not."""
    if importlib.util.find_spec("ansible") is None or not _playbook_program().exists():
        return (
            "ansible-core is not installed on this worker "
            "(install the extra: pip install 'opsconductor[ansible]')"
        )
    return None


def _playbook_program() -> Path:
    return Path(sys.prefix) / "bin" / "ansible-playbook"


def python_binds() -> list[tuple[str, str]]:
    """The interpreter and its packages, read-only at their own paths (often /usr already)."""
    found: list[str] = []
    for path in (sys.prefix, sys.base_prefix, os.path.dirname(os.path.realpath(sys.executable))):
        real = os.path.realpath(path)
        if not real.startswith(("/usr/", "/bin", "/lib")) and real not in found:
            found.append(real)
            if path != real:
                found.append(path)
    return [(p, p) for p in found]


def ssh_names(hosts: Sequence[Host]) -> list[str]:
    """The name each host's ssh connects to (``%h``): its address, unless another host of
    the step has the same address and port (two sites behind two bastions may both use
    10.0.0.5): then an alias of its own, so each reaches its own socket and its own
    known_hosts lines."""
    seen: set[tuple[str, int]] = set()
    names = []
    for index, host in enumerate(hosts):
        key = (host.address, host.port)
        names.append(host.address if key not in seen else f"opsc-target-{index}")
        seen.add(key)
    return names


def host_vars(host: Host, index: int, ssh_name: str | None = None) -> dict[str, Any]:
    """A host's inventory variables: where it is and who logs in (a playbook may change
    these for its own hosts: it still reaches only the targets' sockets)."""
    own = {k: v for k, v in host.variables.items() if not k.startswith(_OURS) or k in _ALLOWED}
    return {
        "ansible_remote_tmp": "~/.ansible/tmp",  # the targets' default (see environment())
        **own,
        "ansible_connection": "ssh",
        "ansible_host": ssh_name or host.address,
        "ansible_port": host.port,
        "ansible_user": host.user,
        **(
            {"ansible_password": host.password}  # in the inventory: from memory, masked
            if host.password is not None
            else {"ansible_ssh_private_key_file": f"{HERE}/keys/{index}"}
        ),
    }


def connection_vars() -> dict[str, Any]:
    """How ssh checks host keys and gets out, as *extra-vars*: those take precedence over
    everything a playbook sets (play ``vars:``, ``set_fact``), so a playbook cannot turn
    host key checking off for its hosts through Ansible's own settings."""
    relay = f"{shlex.quote(sys.executable)} {HERE}/relay.py %h %p"
    common = [
        "-F /dev/null",  # no ~/.ssh/config of the sandbox's home
        f"-o UserKnownHostsFile={HERE}/known_hosts",
        "-o GlobalKnownHostsFile=/dev/null",
        "-o StrictHostKeyChecking=yes",
        "-o IdentitiesOnly=yes",
        # No BatchMode: a password host's ssh asks Ansible's askpass. Key hosts are never
        # asked (Ansible adds PasswordAuthentication=no for them), nor is a host key ever
        # confirmed (StrictHostKeyChecking=yes).
        f"-o ProxyCommand={shlex.quote(relay)}",
    ]
    return {
        "ansible_ssh_common_args": " ".join(common),
        "ansible_ssh_extra_args": "",
        "ansible_ssh_args": "-C -o ControlMaster=auto -o ControlPersist=60s",
        "ansible_ssh_executable": "ssh",
        # False would put StrictHostKeyChecking=no ahead of ours (ssh takes the first)
        "ansible_host_key_checking": True,
        "ansible_ssh_host_key_checking": True,
        # a password reaches ssh through shared memory and SSH_ASKPASS (Ansible's own
        # helper), never as sshpass's command line or a file
        "ansible_ssh_password_mechanism": "ssh_askpass",
    }


def socket_map(hosts: Sequence[Host]) -> dict[str, str]:
    """``name:port`` (as ssh is asked) -> the Unix socket (inside the sandbox) forwarded
    to that host."""
    names = ssh_names(hosts)
    return {f"{names[i]}:{h.port}": f"{SOCKETS}/{i}.sock" for i, h in enumerate(hosts)}


def inventory(hosts: Sequence[Host]) -> dict[str, Any]:
    names = ssh_names(hosts)
    return {"all": {"hosts": {h.name: host_vars(h, i, names[i]) for i, h in enumerate(hosts)}}}


def known_hosts(hosts: Sequence[Host]) -> str:
    """The tenant's trusted keys of each host, under the name ssh is asked for (behind a
    bastion that is the address as the bastion sees it, or the host's alias)."""
    lines = []
    for host, alias in zip(hosts, ssh_names(hosts), strict=True):
        name = alias if host.port == 22 else f"[{alias}]:{host.port}"
        lines += [f"{name} {key}\n" for key in host.known_keys]
    return "".join(lines)


class Forwarder:
    """One Unix socket per host in ``folder``; a connection to it is piped to that host's
    address and port, and nowhere else (directly, or through its bastion: ``dial``)."""

    def __init__(self, folder: Path, dial: Dial = dial_direct) -> None:
        self.folder = folder
        self.dial = dial
        self._servers: list[asyncio.AbstractServer] = []
        self._pipes: set[asyncio.Task[None]] = set()

    async def open(self, hosts: Sequence[Host]) -> None:
        for index, host in enumerate(hosts):
            path = self.folder / f"{index}.sock"
            server = await asyncio.start_unix_server(
                functools.partial(self._accept, host=host), path=str(path)
            )
            os.chmod(path, 0o666)  # the sandbox user connects; the folder is ours
            self._servers.append(server)

    async def _accept(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, host: Host
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._pipes.add(task)
        try:
            up_r, up_w = await asyncio.wait_for(self.dial(host), CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError) as exc:
            # the controller's ssh reports the host unreachable; the worker's log says why
            log.warning("ansible: cannot forward to %s: %s", host.name, exc or type(exc).__name__)
            writer.close()
            self._pipes.discard(task)
            return
        try:
            await asyncio.gather(_copy(reader, up_w), _copy(up_r, writer))
        finally:
            for w in (writer, up_w):
                w.close()
            self._pipes.discard(task)

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        for task in list(self._pipes):
            task.cancel()
        for task in list(self._pipes):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._servers.clear()


async def _copy(reader: ByteReader, writer: ByteWriter) -> None:
    with contextlib.suppress(OSError, asyncssh.Error):
        while data := await reader.read(65_536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()


def environment() -> dict[str, str]:
    """Ansible's settings for the controller: ours, nothing from the worker."""
    return {
        "ANSIBLE_STDOUT_CALLBACK": CALLBACK,
        "ANSIBLE_CALLBACK_PLUGINS": f"{HERE}/callbacks",
        "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
        "ANSIBLE_HOME": "/tmp/ansible",
        "ANSIBLE_LOCAL_TEMP": "/tmp/ansible/tmp",
        # for tasks delegated to the controller itself: the sandbox user has no home
        "ANSIBLE_REMOTE_TEMP": "/tmp/ansible/remote",
        "ANSIBLE_SSH_CONTROL_PATH_DIR": "/tmp/ansible/cp",
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_INVENTORY_ENABLED": "yaml",
        "ANSIBLE_PYTHON_INTERPRETER": "auto_silent",
        "ANSIBLE_DEPRECATION_WARNINGS": "False",
        "PYTHONDONTWRITEBYTECODE": "1",
    }


async def run_playbook(
    box: Sandbox,
    hosts: Sequence[Host],
    *,
    project: Path,
    playbook: str,
    extra_vars: Mapping[str, Any],
    become_user: str | None,
    tags: Sequence[str],
    forks: int,
    sockets: Path,
    timeout_s: float,
    cancel: asyncio.Event | None,
    on_output: OutputSink,
    dial: Dial = dial_direct,
) -> local.CommandResult:
    """Run the staged ``project``'s ``playbook`` (relative path) on ``hosts``; every line
    it prints goes to ``on_output``. ``sockets``: a folder of ours for the forwarder."""
    files = {
        f"{HERE}/inventory.json": json.dumps(inventory(hosts)).encode(),
        f"{HERE}/extra_vars.json": json.dumps({**extra_vars, **connection_vars()}).encode(),
        f"{HERE}/sockets.json": json.dumps(socket_map(hosts)).encode(),
        f"{HERE}/known_hosts": known_hosts(hosts).encode(),
        f"{HERE}/relay.py": RELAY,
        f"{HERE}/callbacks/{CALLBACK}.py": Path(__file__)
        .with_name("ansible_callback.py")
        .read_bytes(),
        **{
            f"{HERE}/keys/{i}": _key_text(h.private_key)
            for i, h in enumerate(hosts)
            if h.password is None
        },
    }
    argv = [
        sys.executable,
        str(_playbook_program()),
        "-i",
        f"{HERE}/inventory.json",
        "-e",
        f"@{HERE}/extra_vars.json",  # a file, never the command line: ps shows that
        "--forks",
        str(forks),
    ]
    if tags:
        argv += ["--tags", ",".join(tags)]
    if become_user is not None:
        argv += ["--become", "--become-method", "sudo", "--become-user", become_user]
    argv.append(f"{PROJECT}/{playbook}")
    binds = [*python_binds(), (str(project), PROJECT), (str(sockets), SOCKETS)]
    forwarder = Forwarder(sockets, dial)
    try:
        await forwarder.open(hosts)
        return await local.run_sandboxed(
            box,
            argv,
            timeout_s=timeout_s,
            env=environment(),
            cwd=str(Path(f"{PROJECT}/{playbook}").parent),
            cancel=cancel,
            files=files,
            on_output=on_output,
            binds=binds,
        )
    finally:
        await forwarder.close()


def _key_text(key: str) -> bytes:
    if not key.lstrip().startswith("-----BEGIN"):
        raise StepInputError("an ansible step's targets log in with a private key")
    return key.strip().encode() + b"\n"  # ssh refuses a key file without its last newline
