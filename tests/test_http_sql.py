"""HTTP steps against a real local HTTP server; SQL steps against the test PostgreSQL."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg
import pytest

from opsconductor.db.connection import Database
from opsconductor.errors import BadInput
from opsconductor.status_machine import Status
from tests.helpers import run_plan

# These plans send http and sql steps to test servers on this host's loopback.
pytestmark = pytest.mark.usefixtures("host_network")


@pytest.fixture
def web() -> Iterator[tuple[int, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def _reply(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path == "/healthz":
                self._reply(200, json.dumps({"status": "ok", "checks": [{"db": 1}]}).encode())
            else:
                self._reply(503, b'{"status": "down"}')

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", 0))
            body = json.loads(self.rfile.read(length))
            seen.append({"path": self.path, "token": self.headers.get("x-token"), "body": body})
            if self.headers.get("authorization"):
                seen[-1]["authorization"] = self.headers["authorization"]
            self._reply(201, json.dumps({"received": body}).encode())

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield server.server_address[1], seen
    server.shutdown()


def http_step(name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "type": "http", "targets": {"hostnames": ["localhost"]}, **fields}


async def test_http_steps_template_expect_and_validate(
    db: Database, web: tuple[int, list[dict[str, Any]]]
) -> None:
    port, seen = web
    plan = {
        "name": "http",
        "steps": [
            http_step(
                "health",
                url=f"http://{{{{ asset.address }}}}:{port}/healthz",
                expect={
                    "status": 200,
                    "body_regex": '"ok"',
                    "json_path": {"path": "$.checks[0].db", "equals": 1},
                },
            ),
            http_step(
                "post",
                method="POST",
                url=f"http://127.0.0.1:{port}/hook",
                headers={"x-token": "t-{{ asset.id }}"},
                json={"host": "{{ asset.hostname }}", "n": 2},
                expect={"status": [200, 201]},
            ),
            {
                "name": "check",
                "type": "validate",
                "step": "post",
                "expect": {"json_path": {"path": "$.received.host", "equals": "localhost"}},
            },
        ],
    }
    status, rows, _ = await run_plan(db, plan)
    assert status == Status.COMPLETED, rows
    assert seen == [
        {"path": "/hook", "token": "t-localhost", "body": {"host": "localhost", "n": 2}}
    ]
    assert rows[0].stderr == "HTTP 200 OK"


async def test_http_expectation_failures_and_template_errors(
    db: Database, web: tuple[int, list[dict[str, Any]]]
) -> None:
    port, _ = web
    status, rows, _ = await run_plan(
        db,
        {
            "name": "down",
            "steps": [
                http_step(
                    "down", url=f"http://127.0.0.1:{port}/other", expect={"body_regex": "ok"}
                ),
            ],
        },
    )
    assert status == Status.FAILED
    assert rows[0].error == "status 503, expected 200; body does not match /ok/"

    # A name that does not exist is refused before anything runs (template_check); one
    # that fails only on what an earlier step printed fails that step at run time.
    with pytest.raises(BadInput, match=r"steps\[0\]\.url \(step 'typo', target localhost\)"):
        await run_plan(
            db, {"name": "typo", "steps": [http_step("typo", url="http://{{ asset.adress }}/")]}
        )
    status, rows, _ = await run_plan(
        db,
        {
            "name": "typo",
            "steps": [
                {
                    "name": "print",
                    "type": "command",
                    "targets": {"hostnames": ["localhost"]},
                    "command": "echo {}",
                },
                http_step("typo", url="http://{{ steps.print.output | int // 0 }}/"),
            ],
        },
    )
    assert status == Status.FAILED
    assert rows[1].error.startswith("steps[1].url: template error:")
    assert "ZeroDivisionError" in rows[1].error or "ValueError" in rows[1].error


def sql_step(name: str, dsn: str, **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "type": "sql",
        "targets": {"hostnames": ["localhost"]},
        "dsn": dsn,
        **fields,
    }


@pytest.fixture
def sql_table(database_url: str) -> str:
    with psycopg.connect(database_url) as conn:
        conn.execute("CREATE TABLE public.servers (name text PRIMARY KEY, state text)")
        conn.execute("INSERT INTO public.servers VALUES ('a', 'up'), ('b', 'up'), ('c', 'down')")
    return database_url


def states(url: str) -> list[tuple[str, str]]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT name, state FROM public.servers ORDER BY name").fetchall()


async def test_sql_read_returns_rows_and_checks_values(db: Database, sql_table: str) -> None:
    plan = {
        "name": "read",
        "steps": [
            sql_step(
                "up",
                sql_table,
                query="SELECT name FROM public.servers WHERE state = %(s)s ORDER BY name",
                params={"s": "up"},
                expect={"rows": 2, "values": [["a"], ["b"]]},
            ),
            {
                "name": "check",
                "type": "validate",
                "step": "up",
                "expect": {"json_path": {"path": "$[1].name", "equals": "b"}},
            },
        ],
    }
    status, rows, _ = await run_plan(db, plan)
    assert status == Status.COMPLETED, rows
    assert json.loads(rows[0].output) == [{"name": "a"}, {"name": "b"}]


async def test_sql_read_step_is_a_read_only_transaction(db: Database, sql_table: str) -> None:
    status, rows, _ = await run_plan(
        db,
        {
            "name": "sneaky",
            "steps": [
                sql_step("sneaky", sql_table, query="DELETE FROM public.servers"),
            ],
        },
    )
    assert status == Status.FAILED
    assert "read-only transaction" in rows[0].error
    assert len(states(sql_table)) == 3


async def test_sql_write_guard_rolls_back_and_commits(db: Database, sql_table: str) -> None:
    too_many = sql_step(
        "too many",
        sql_table,
        action_class="modify",
        query="UPDATE public.servers SET state = 'drain'",
        expect={"rows": 1},
    )
    status, rows, _ = await run_plan(db, {"name": "guarded", "steps": [too_many]})
    assert status == Status.FAILED
    assert rows[0].error == "3 rows affected, expected 1; rolled back"
    assert states(sql_table) == [("a", "up"), ("b", "up"), ("c", "down")]

    one = sql_step(
        "one",
        sql_table,
        action_class="modify",
        query="UPDATE public.servers SET state = 'drain' WHERE name = 'a'",
        expect={"rows": 1},
    )
    status, rows, _ = await run_plan(db, {"name": "exact", "steps": [one]})
    assert status == Status.COMPLETED, rows
    assert json.loads(rows[0].output) == {"rows_affected": 1}
    assert states(sql_table)[0] == ("a", "drain")


async def test_templates_read_earlier_step_results_on_the_same_target(
    db: Database, web: tuple[int, list[dict[str, Any]]]
) -> None:
    port, seen = web
    plan = {
        "name": "chained",
        "steps": [
            {
                "name": "read version",
                "type": "command",
                "targets": {"hostnames": ["localhost"]},
                "command": "echo 4.2.1",
            },
            http_step(
                "report",
                method="POST",
                url=f"http://127.0.0.1:{port}/versions",
                json={
                    "host": "{{ asset.hostname }}",
                    "version": "{{ steps['read version'].output | trim }}",
                    "exit": "{{ steps['read version'].exit_code }}",
                },
                expect={"status": 201},
            ),
        ],
    }
    status, _, _ = await run_plan(db, plan)
    assert seen == [
        {
            "path": "/versions",
            "token": None,
            "body": {"host": "localhost", "version": "4.2.1", "exit": "0"},
        }
    ]
    assert status == Status.COMPLETED
    broken = {
        **plan,
        "steps": [*plan["steps"], http_step("broken", url="http://x/{{ steps.nope.output }}")],
    }
    with pytest.raises(BadInput, match=r"steps\.nope is undefined"):
        await run_plan(db, broken)  # refused at submission, before step 0 ran


async def test_http_auth_from_secret_references(
    db: Database, web: tuple[int, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    port, seen = web
    monkeypatch.setenv("OPSC_SECRET_ENV_TOKEN", "tok-123")
    monkeypatch.setenv("OPSC_SECRET_ENV_PASSWORD", "pw")
    monkeypatch.delenv("OPSC_SECRET_ENV_MISSING", raising=False)
    url = f"http://127.0.0.1:{port}/auth"
    plan = {
        "name": "auth",
        "steps": [
            http_step(
                "bearer",
                method="POST",
                url=url,
                json={},
                expect={"status": 201},
                auth={"bearer": {"secret": "env:OPSC_SECRET_ENV_TOKEN"}},
            ),
            http_step(
                "basic",
                method="POST",
                url=url,
                json={},
                expect={"status": 201},
                auth={
                    "username": "ops",
                    "password": {"secret": "env:OPSC_SECRET_ENV_PASSWORD"},
                },
            ),
            http_step(
                "missing",
                method="POST",
                url=url,
                json={},
                auth={"bearer": {"secret": "env:OPSC_SECRET_ENV_MISSING"}},
            ),
        ],
    }
    status, rows, _ = await run_plan(db, plan)
    assert [s["authorization"] for s in seen] == ["Bearer tok-123", "Basic b3BzOnB3"]
    assert status == Status.FAILED and len(seen) == 2
    assert "env:OPSC_SECRET_ENV_MISSING" in rows[2].error and "not found" in rows[2].error
    assert all("tok-123" not in (r.output + (r.error or "")) for r in rows)
