"""Record-only (dark launch): everything resolved and recorded, no target touched."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest

from opsconductor.db import connectors
from opsconductor.db.connection import Database
from opsconductor.status_machine import Status
from tests.helpers import add_ssh_assets, run_plan

# These plans send http and sql steps to test servers on this host's loopback.
pytestmark = pytest.mark.usefixtures("host_network")


@pytest.fixture
def http_hits() -> Iterator[tuple[int, list[str]]]:
    """A local HTTP server that records every request it receives."""
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server.server_address[1], hits
    server.shutdown()


def destructive_plan(tmp_path: Path, port: int, dsn: str) -> dict[str, Any]:
    src = tmp_path / "files" / "default" / "config"  # the tenant's files root
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_text("new config\n")
    victim = tmp_path / "victim"
    return {
        "name": "destructive",
        "steps": [
            {
                "name": "delete",
                "type": "command",
                "action_class": "modify",
                "targets": {"tags": {"role": "dark"}},
                "command": f"rm -f {victim}",
            },
            {
                "name": "script",
                "type": "script",
                "action_class": "modify",
                "targets": {"tags": {"role": "dark"}},
                "script": f"echo x > {victim}.script\n",
            },
            {
                "name": "overwrite",
                "type": "file",
                "action_class": "deploy",
                "targets": {"tags": {"role": "dark"}},
                "src": str(src),
                "dest": str(victim),
            },
            {
                "name": "drop rows",
                "type": "sql",
                "action_class": "modify",
                "targets": {"hostnames": ["localhost"]},
                "dsn": dsn,
                "query": "DELETE FROM execution.tenants WHERE tenant_id <> 'nobody'",
            },
            {
                "name": "notify",
                "type": "http",
                "action_class": "modify",
                "targets": {"hostnames": ["localhost"]},
                "method": "POST",
                "url": f"http://{{{{ asset.address }}}}:{port}/deploy",
            },
            {"name": "check", "type": "validate", "step": "delete", "expect": {"exit_code": 0}},
        ],
    }


async def test_record_only_run_of_a_destructive_plan_touches_nothing(
    db: Database,
    ssh_lab: Any,
    tmp_path: Path,
    database_url: str,
    http_hits: tuple[int, list[str]],
) -> None:
    await add_ssh_assets(db, ssh_lab, ssh_lab.ports[:2], prefix="dark")
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    port, hits = http_hits
    plan = destructive_plan(tmp_path, port, database_url)

    status, rows, execution_id = await run_plan(db, plan, record_only=True)

    assert status == Status.COMPLETED
    assert {r.status for r in rows} == {"skipped"}
    assert all(r.output.startswith("skipped: record-only") for r in rows)
    by_step = {r.step_name: r.output for r in rows}
    assert f"would run 'rm -f {victim}' on" in by_step["delete"]
    assert by_step["notify"] == f"skipped: record-only: would POST http://127.0.0.1:{port}/deploy"
    # Untouched: the file, the script's output, the table, the HTTP server.
    assert victim.read_text() == "precious\n"
    assert not (tmp_path / "victim.script").exists()
    with psycopg.connect(database_url) as conn:
        (tenants,) = conn.execute("SELECT count(*) FROM execution.tenants").fetchone() or (0,)
        (flag,) = conn.execute(
            "SELECT record_only FROM execution.executions WHERE id = %s", (execution_id,)
        ).fetchone() or (None,)
    assert tenants >= 1 and flag is True
    assert hits == []


async def test_tenant_flag_makes_every_run_record_only(
    db: Database, work_dir: Path, http_hits: tuple[int, list[str]]
) -> None:
    port, hits = http_hits
    async with db.connection() as conn:
        await connectors.set_record_only(conn, "default", True)
    plan = {
        "name": "dark tenant",
        "steps": [
            {
                "name": "touch",
                "type": "command",
                "targets": {"hostnames": ["localhost"]},
                "command": f"touch {work_dir / 'touched'}",
            },
            {
                "name": "call",
                "type": "http",
                "targets": {"hostnames": ["localhost"]},
                "method": "POST",
                "url": f"http://127.0.0.1:{port}/x",
            },
        ],
    }
    status, rows, _ = await run_plan(db, plan)
    assert status == Status.COMPLETED
    assert {r.status for r in rows} == {"skipped"}
    assert not (work_dir / "touched").exists() and hits == []

    async with db.connection() as conn:
        await connectors.set_record_only(conn, "default", False)
    status, rows, _ = await run_plan(db, plan)  # same plan, now for real: not deduplicated
    assert status == Status.COMPLETED
    assert {r.status for r in rows} == {"completed"}
    assert (work_dir / "touched").exists() and hits == ["/x"]


async def test_record_only_still_resolves_credentials(
    db: Database, ssh_lab: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPSC_SECRET_ENV_NOT_SET", raising=False)
    await add_ssh_assets(
        db,
        ssh_lab,
        ssh_lab.ports[:1],
        prefix="nocred",
        credential_ref="env:OPSC_SECRET_ENV_NOT_SET",
    )
    plan = {
        "name": "no credential",
        "steps": [
            {
                "name": "x",
                "type": "command",
                "targets": {"tags": {"role": "nocred"}},
                "command": "true",
            }
        ],
    }
    status, rows, _ = await run_plan(db, plan, record_only=True)
    assert status == Status.FAILED
    assert "env:OPSC_SECRET_ENV_NOT_SET" in rows[0].error and "not found" in rows[0].error
