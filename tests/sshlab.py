"""Real SSH servers on loopback for the tests and the fan-out bench.

``OpenSshLab`` runs the system's OpenSSH ``sshd`` (one process listening on many ports:
each port is a distinct target). ``AsyncsshLab`` is the fall-back when no ``sshd`` binary
exists, and the server for password logins (OpenSSH checks passwords against the system's
accounts, which a test must not touch): an asyncssh server that runs every command with a
real ``/bin/sh -c`` in its own session, as sshd does, and serves SFTP from the real disk.
"""

from __future__ import annotations

import asyncio
import getpass
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh

SSHD = shutil.which("sshd") or next(
    (p for p in ("/usr/sbin/sshd", "/usr/local/sbin/sshd") if os.access(p, os.X_OK)), None
)


def free_ports(count: int) -> list[int]:
    sockets = []
    for _ in range(count):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        sockets.append(s)
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@dataclass
class Keys:
    """A host key and a client key pair, as files and as text."""

    folder: Path
    host_key: asyncssh.SSHKey = field(init=False)
    client_key: asyncssh.SSHKey = field(init=False)

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.host_key = asyncssh.generate_private_key("ssh-ed25519")
        self.client_key = asyncssh.generate_private_key("ssh-ed25519")
        self.host_key.write_private_key(self.host_key_path)
        self.host_key_path.chmod(0o600)
        self.client_key.write_private_key(self.client_key_path)
        self.client_key_path.chmod(0o600)
        self.client_key.write_public_key(self.folder / "authorized_keys")

    def new_host_key(self, algorithm: str = "ssh-ed25519") -> None:
        """Replace the host key file, as a re-installed (or impersonated) host would have."""
        self.host_key = asyncssh.generate_private_key(algorithm)
        self.host_key_path.unlink()
        self.host_key.write_private_key(self.host_key_path)
        self.host_key_path.chmod(0o600)

    @property
    def host_key_path(self) -> Path:
        return self.folder / "host_ed25519"

    @property
    def client_key_path(self) -> Path:
        return self.folder / "client_ed25519"

    @property
    def host_public(self) -> str:
        return " ".join(self.host_key.export_public_key().decode().split()[:2])

    @property
    def client_private_pem(self) -> str:
        return self.client_key.export_private_key().decode()


class OpenSshLab:
    """One ``sshd`` listening on ``ports`` of 127.0.0.1; key logins for this user."""

    kind = "openssh"

    def __init__(self, folder: Path, ports: Sequence[int]) -> None:
        assert SSHD is not None
        self.keys = Keys(folder)
        self.ports = list(ports)
        self.username = getpass.getuser()
        self.password: str | None = None
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privsep directory
        # sshd listens on at most 16 sockets (MAX_LISTEN_SOCKS): one process per 16 ports.
        self.processes = [
            self._start(folder, n, self.ports[i : i + 16])
            for n, i in enumerate(range(0, len(self.ports), 16))
        ]

    def _start(self, folder: Path, n: int, ports: list[int]) -> subprocess.Popen[bytes]:
        config = folder / f"sshd_config.{n}"
        listen = "".join(f"ListenAddress 127.0.0.1:{port}\n" for port in ports)
        config.write_text(
            listen
            + f"HostKey {self.keys.host_key_path}\n"
            + f"AuthorizedKeysFile {folder / 'authorized_keys'}\n"
            + f"PidFile {folder / f'sshd.{n}.pid'}\n"
            + "StrictModes no\nPermitRootLogin prohibit-password\nUsePAM no\n"
            + "PasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            + "MaxStartups 500\nMaxSessions 100\nLogLevel ERROR\n"
            + "Subsystem sftp internal-sftp\n"
            # bash sources ~/.bashrc for commands that come over SSH unless it is nested
            # (SHLVL >= 2); this keeps a heavy personal bashrc (pyenv init: ~0.2 s) out of
            # every command, so the figures measure the connector, not someone's dotfiles.
            + ("SetEnv SHLVL=1\n" if os.environ.get("OPSC_LAB_BASHRC") != "1" else "")
        )
        assert SSHD is not None
        process = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=open(folder / f"sshd.{n}.log", "ab"),  # noqa: SIM115 - lives with sshd
        )
        _wait_listening(ports, process)
        return process

    def stop(self) -> None:
        for process in self.processes:
            process.send_signal(signal.SIGTERM)
        for process in self.processes:
            process.wait(10)

    def restart_with_new_host_key(self, algorithm: str = "ssh-ed25519") -> None:
        """Stop sshd, regenerate its host key file, start it again on the same ports."""
        self.stop()
        self.keys.new_host_key(algorithm)
        self.processes = [
            self._start(self.keys.folder, n, self.ports[i : i + 16])
            for n, i in enumerate(range(0, len(self.ports), 16))
        ]


class AsyncsshLab:
    """An asyncssh server on ``ports``, in a thread of its own; key and password logins."""

    kind = "asyncssh"

    def __init__(self, folder: Path, ports: Sequence[int], password: str | None = None) -> None:
        self.keys = Keys(folder)
        self.ports = list(ports)
        self.username = getpass.getuser()
        self.password = password
        self.loop = asyncio.new_event_loop()
        self._servers: list[asyncssh.SSHAcceptor] = []
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self.loop).result(10)

    async def _listen(self) -> None:
        password = self.password
        authorized = asyncssh.import_authorized_keys(
            (self.keys.folder / "authorized_keys").read_text()
        )

        class Server(asyncssh.SSHServer):
            def password_auth_supported(self) -> bool:
                return password is not None

            def validate_password(self, username: str, given: str) -> bool:
                return given == password

        for port in self.ports:
            self._servers.append(
                await asyncssh.listen(
                    "127.0.0.1",
                    port,
                    server_host_keys=[self.keys.host_key],
                    authorized_client_keys=authorized,
                    server_factory=Server,
                    process_factory=_run_shell,
                    sftp_factory=True,
                    encoding=None,
                )
            )

    async def _close(self) -> None:
        servers, self._servers = self._servers, []
        for server in servers:
            server.close()
            await server.wait_closed()

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    def restart_with_new_host_key(self, algorithm: str = "ssh-ed25519") -> None:
        """Close the listeners, regenerate the host key, listen again on the same ports."""
        asyncio.run_coroutine_threadsafe(self._close(), self.loop).result(10)
        self.keys.new_host_key(algorithm)
        asyncio.run_coroutine_threadsafe(self._listen(), self.loop).result(10)


async def _run_shell(process: asyncssh.SSHServerProcess[bytes]) -> None:
    """What sshd does for an exec request: the command under a shell, in a new session."""
    peer = process.get_extra_info("peername")
    here = process.get_extra_info("sockname")
    env = {**os.environ, "SSH_CONNECTION": f"{peer[0]} {peer[1]} {here[0]} {here[1]}"}
    proc = await asyncio.create_subprocess_exec(
        "/bin/sh",
        "-c",
        process.command or "exit 0",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
        env=env,
    )
    assert proc.stdin and proc.stdout and proc.stderr

    async def feed() -> None:
        assert proc.stdin
        while chunk := await process.stdin.read(65_536):
            proc.stdin.write(chunk)
        proc.stdin.close()

    async def drain(source: asyncio.StreamReader, sink: asyncssh.SSHWriter[bytes]) -> None:
        while chunk := await source.read(65_536):
            sink.write(chunk)

    feeder = asyncio.ensure_future(feed())
    await asyncio.gather(drain(proc.stdout, process.stdout), drain(proc.stderr, process.stderr))
    code = await proc.wait()
    feeder.cancel()
    process.exit(code if code >= 0 else 128 - code)


def _wait_listening(ports: Sequence[int], process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 15
    for port in ports:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"sshd exited with {process.returncode}")
            try:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"sshd does not listen on {port}") from None
                time.sleep(0.02)


def start_lab(folder: Path, ports: Sequence[int]) -> OpenSshLab | AsyncsshLab:
    """OpenSSH when installed (``OPSC_TEST_SSHD=asyncssh`` forces the fall-back)."""
    if SSHD and os.environ.get("OPSC_TEST_SSHD") != "asyncssh":
        return OpenSshLab(folder, ports)
    return AsyncsshLab(folder, ports)
