"""``http`` and ``sql`` steps run inside the worker: aimed at this host they would reach the
control plane itself. Attack: a tenant's ``sql`` step with ``dsn: postgresql://postgres@
127.0.0.1/…`` (or the unix socket) reads every tenant's executions, since PostgreSQL trusts
local connections; an ``http`` step calls services that listen on loopback only."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from opsconductor.db.connection import Database
from opsconductor.status_machine import Status
from tests.security.local_support import LOCAL, run, tenant


@pytest.fixture
def loopback_server() -> Iterator[tuple[int, list[str]]]:
    """A service on 127.0.0.1 only, recording every request it gets."""
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"internal data")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server.server_address[1], hits
    server.shutdown()


def _sql(dsn: str) -> dict[str, Any]:
    return {
        "name": "steal",
        "type": "sql",
        "action_class": "read",
        "targets": LOCAL,
        "dsn": dsn,
        "query": "SELECT count(*) AS n FROM execution.executions",
    }


def _dsns(database_url: str) -> list[str]:
    parts = conninfo_to_dict(database_url)
    with psycopg.connect(database_url) as conn:
        (sockets,) = conn.execute("SHOW unix_socket_directories").fetchone() or ("",)
    socket_dir = str(sockets).split(",")[0].strip()
    base = {k: v for k, v in parts.items() if k not in ("host", "hostaddr")}
    return [
        make_conninfo(**{**base, "host": "127.0.0.1"}),
        make_conninfo(**{**base, "host": "localhost"}),
        make_conninfo(**{**base, "host": socket_dir}),
        make_conninfo(**{**base, "host": "db.example", "hostaddr": "127.0.0.1"}),
        make_conninfo(**base),  # no host: libpq's default local socket
    ]


@pytest.mark.parametrize("local", [False, True])
async def test_sql_steps_cannot_reach_the_control_planes_database(
    db: Database, database_url: str, local: bool
) -> None:
    """Refused whether or not the tenant may run local steps: only the network opt-in opens
    the host's loopback."""
    await tenant(db, "tb", local=local)
    for dsn in _dsns(database_url):
        ran = await run(db, "tb", _sql(dsn))
        assert ran.status is Status.FAILED, (dsn, ran.text)
        error = ran.rows[0].error or ""
        assert error.startswith("steps[0].dsn: "), error
        assert "is the control plane's own machine" in error
        assert "opsc tenant local-exec on --network --tenant tb" in error
        assert ran.rows[0].output == ""


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "127.1", "0.0.0.0", "[::1]"])
async def test_http_steps_cannot_reach_services_on_loopback(
    db: Database, loopback_server: tuple[int, list[str]], host: str
) -> None:
    port, hits = loopback_server
    await tenant(db, "tb", local=True)
    step = {
        "name": "call",
        "type": "http",
        "targets": LOCAL,
        "method": "GET",
        "url": f"http://{host}:{port}/internal",
    }
    ran = await run(db, "tb", step)
    assert ran.status is Status.FAILED
    assert (ran.rows[0].error or "").startswith("steps[0].url: ")
    assert "internal data" not in ran.text
    assert hits == []  # never even asked


async def test_the_network_opt_in_opens_the_loopback(
    db: Database, database_url: str, loopback_server: tuple[int, list[str]]
) -> None:
    """The installation admin's explicit choice (and the control that the refusals above
    are about the address, not a broken step)."""
    port, hits = loopback_server
    await tenant(db, "tn", local=True, network=True)
    step = {
        "name": "call",
        "type": "http",
        "targets": LOCAL,
        "method": "GET",
        "url": f"http://127.0.0.1:{port}/internal",
    }
    ran = await run(db, "tn", step, _sql(database_url))
    assert ran.status is Status.COMPLETED, ran.text
    assert hits == ["/internal"]
