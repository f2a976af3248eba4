"""Secrets printed in every form reach no sink unmasked.

Three secrets holding ``" \\ / + & % =`` and ``{{ }}``: one stored with ``opsc secrets set``
from a CRLF file (so it ends in ``\\r``), one stored over the API with a trailing ``\\n``, one
from the worker's environment. A plan prints them trimmed, JSON-escaped (also twice), as
Python and bytes ``repr``, URL-encoded (``quote``, ``quote_plus``, ``safe=''``, lower-case
hex) and base64 (plain, URL-safe, wrapped at 76 and 8 columns, inside a larger blob); prints
more than the output cap with a secret across the head cut and ``password=...`` across the
tail cut; and sends one as an HTTP header to a server that echoes it back as JSON (and as
JSON inside JSON), failing on a JSON path check whose message shows the value's ``repr``.
Then every column of every table, the run's logs, ``opsc show``/``opsc list``, the API's
execution, steps and events, a long-poll and the SSE stream are searched for every form.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from opsconductor.db import assets, auth
from opsconductor.db.connection import Database
from tests.api.live import collect_until_end, live_server
from tests.conftest import allow_local
from tests.security.test_masking_forms import _secret_runs
from tests.served import opsc

FROM_FILE = 'p4"ss\\wo/rd+&%=x{{ 6*7 }}Q'  # stored from a CRLF file: ends in "\r"
FROM_API = 'api"key/+&%=={{ asset.hostname }}-7'  # stored over the API with a trailing "\n"
FROM_ENV = 'env{{ 6*7 }}"\\/+&%=tok3n'  # the worker's environment: sent as an HTTP header
PAIR_VALUE = "hunter2xyz"  # printed as password=hunter2xyz across the tail cut

# The plan prints everything from Python; the code is in the plan (so in the database):
# it spells no value, not even the pair's (built reversed).
FORMS = r"""
import base64, json, os, re, sys, urllib.parse as u
for name in ("S1", "S2", "S3"):
    v = os.environ[name]
    s = v.strip()
    print(name, "raw", v)
    print(name, "trimmed", s)
    print(json.dumps({"token": s}))
    print(json.dumps(json.dumps({"token": s})))
    print("error:", repr(s), repr(s.encode()), repr({"X-Token": s}))
    q = u.quote(s)
    print(q, u.quote(s, safe=""), u.quote_plus(s), re.sub("%..", lambda m: m.group().lower(), q))
    print(base64.b64encode(s.encode()).decode(), base64.urlsafe_b64encode(s.encode()).decode())
"""

TRUNCATED = r"""
import os, sys
s = os.environ["S1"].strip()
pair = "password=" + "zyx2retnuh"[::-1]
head = "h" * (6144 - 5) + s + "\n"
sys.stdout.write(head + "m" * 20000 + "\n" + pair + " " + "b" * (3072 - len(pair) - 1 + 4))
"""


def _plan(echo_url: str) -> str:
    def py(code: str) -> str:
        return json.dumps(f"python3 -c {_sh_quote(code)}")

    blob = '"0123456789-$S1-abc-$S2-xyz-$S3-tail"'
    return f"""
name: every form, every sink
steps:
  - name: forms
    type: command
    targets: {{hostnames: [localhost]}}
    env:
      S1: {{secret: kv/app/from-file}}
      S2: {{secret: kv/app/from-api}}
      S3: {{secret: "env:OPSC_SECRET_ENV_FORMS"}}
    command: {py(FORMS)}
  - name: wrapped
    type: command
    targets: {{hostnames: [localhost]}}
    env:
      S1: {{secret: kv/app/from-file}}
      S2: {{secret: kv/app/from-api}}
      S3: {{secret: "env:OPSC_SECRET_ENV_FORMS"}}
    command: >-
      printf %s {blob} | base64 -w 76;
      printf %s {blob} | base64 -w 8;
      printf %s {blob} | base64 -w 0 >&2
  - name: truncated
    type: command
    targets: {{hostnames: [localhost]}}
    env: {{S1: {{secret: kv/app/from-file}}}}
    command: {py(TRUNCATED)}
  - name: echo
    type: http
    targets: {{hostnames: [localhost]}}
    method: POST
    url: {echo_url}
    headers: {{X-Token: {{secret: "env:OPSC_SECRET_ENV_FORMS"}}}}
    json: {{hello: world}}
    expect:
      status: 200
      json_path: {{path: "$.seen.X-Token", equals: "x"}}
"""


def _sh_quote(code: str) -> str:
    return "'" + code.replace("'", "'\"'\"'") + "'"


@pytest.fixture
def echo() -> Iterator[tuple[str, list[dict[str, str]]]]:
    """An API that echoes what it got as JSON, and the raw JSON again as a string (like
    httpbin's ``data``): the value comes back JSON-escaped, and escaped twice."""
    seen: list[dict[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", 0)))
            headers = {k: v for k, v in self.headers.items() if k.lower().startswith("x-")}
            seen.append(headers)
            body = json.dumps({"seen": headers, "data": json.dumps(headers)}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/echo", seen
    server.shutdown()


def _needles(value: str) -> set[str]:
    """What must not be found anywhere: the value in every form the plan printed."""
    found = set()
    for v in {value, value.strip()}:
        raw = v.encode()
        quoted = {
            urllib.parse.quote(v),
            urllib.parse.quote(v, safe=""),
            urllib.parse.quote_plus(v),
        }
        found |= {
            v,
            json.dumps(v)[1:-1],
            json.dumps(json.dumps(v)[1:-1])[1:-1],
            repr(v)[1:-1],
            repr(raw)[2:-1],
            base64.b64encode(raw).decode(),
            base64.urlsafe_b64encode(raw).decode(),
            *quoted,
            *(re.sub("%..", lambda m: m.group().lower(), q) for q in quoted),
        }
    return {n for n in found if len(n) >= 6}


def _wrapped_needles(values: dict[str, str]) -> set[str]:
    """Every chunk of 8+ characters of a wrapped line that only the values' bytes make up."""
    blob = f"0123456789-{values['S1']}-abc-{values['S2']}-xyz-{values['S3']}-tail"
    data = blob.encode()
    encoded = base64.b64encode(data).decode()
    needles = set()
    for name in ("S1", "S2", "S3"):
        piece = values[name].encode()
        start = data.index(piece)
        for width in (76, 8, len(encoded)):
            for lo in range(0, len(encoded), width):
                for a, b in _secret_runs(encoded, start, len(piece), lo, lo + width):
                    if b - a >= 8:
                        needles.add(encoded[a:b])
    return needles


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield str(key)
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)


def _every_column(database_url: str) -> str:
    """Every value of every column of every table, as stored (JSON values decoded, and
    their text too)."""
    with psycopg.connect(database_url) as conn:
        tables = conn.execute(
            "SELECT quote_ident(table_schema) || '.' || quote_ident(table_name) FROM "
            "information_schema.tables WHERE table_type = 'BASE TABLE' AND table_schema NOT IN "
            "('pg_catalog', 'information_schema')"
        ).fetchall()
        chunks = []
        for (table,) in tables:
            for (row,) in conn.execute(f"SELECT to_jsonb(t) FROM {table} t").fetchall():
                chunks.append(json.dumps(row))
                chunks.extend(_strings(row))
                for value in row.values():  # jsonb columns hold JSON: their own strings
                    if isinstance(value, str) and value[:1] in "[{":
                        with contextlib.suppress(ValueError):
                            chunks.extend(_strings(json.loads(value)))
    return "\n".join(chunks)


async def test_every_form_of_every_secret_is_masked_at_every_sink(
    db: Database,
    cli_env: dict[str, str],
    database_url: str,
    tmp_path: Path,
    echo: tuple[str, list[dict[str, str]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    echo_url, seen = echo
    monkeypatch.setenv("OPSC_HOME", cli_env["OPSC_HOME"])  # the API seals with opsc's key
    async with db.transaction() as conn:
        await assets.ensure_tenant(conn, "default")
        await allow_local(conn, "default", network=True)
        token = (await auth.create_token(conn, "default", "secret-admin")).token
        await auth.grant(conn, "default", "secret-admin", "admin", granted_by="test")
    headers = {"Authorization": f"Bearer {token}"}
    env = {**cli_env, "OPSC_LOG_LEVEL": "debug", "OPSC_SECRET_ENV_FORMS": FROM_ENV}

    crlf_file = tmp_path / "secret.txt"
    crlf_file.write_bytes(FROM_FILE.encode() + b"\r\n")  # as an editor on Windows saves it
    stored = opsc(env, "secrets", "set", "kv/app/from-file", stdin=crlf_file.read_bytes().decode())
    assert stored.returncode == 0, stored.stderr
    async with live_server(db) as live, httpx.AsyncClient(base_url=live.base) as http:
        put = await http.put(
            "/api/v1/secrets/kv/app/from-api", json={"value": FROM_API + "\n"}, headers=headers
        )
        assert put.status_code == 201, put.text

        plan_file = tmp_path / "forms.yaml"
        plan_file.write_text(_plan(echo_url))
        ran = opsc(env, "run", str(plan_file))
        assert ran.returncode == 1, ran.stdout + ran.stderr  # the echo step fails on purpose

        with psycopg.connect(database_url) as conn:
            (execution_id,) = conn.execute(
                "SELECT id::text FROM execution.executions"
            ).fetchone() or ("",)
            steps = conn.execute(
                "SELECT step_name, status, output, stderr, error FROM execution.execution_steps "
                "ORDER BY step_index"
            ).fetchall()
        base = f"/api/v1/executions/{execution_id}"
        api = {
            "execution": (await http.get(base, headers=headers)).text,
            "steps": (await http.get(f"{base}/steps", headers=headers)).text,
            "events": (await http.get(f"{base}/events", headers=headers)).text,
            "long-poll": (await http.get(f"{base}/events?after=0&wait=1", headers=headers)).text,
            "list": (await http.get("/api/v1/executions", headers=headers)).text,
        }
        sse = await collect_until_end(http, f"{base}/stream", headers)
    shown = opsc(env, "show", execution_id)
    listed = opsc(env, "list")

    # The plan ran as intended: every form was printed (and masked), the header went out
    # as the value itself, never rendered as a template.
    by_name = {name: (status, out, err, error) for name, status, out, err, error in steps}
    assert [s[0] for s in by_name.values()] == ["completed", "completed", "completed", "failed"]
    assert seen == [{"X-Token": FROM_ENV}]
    forms_out = by_name["forms"][1]
    assert forms_out.count("****") >= 3 * 9, forms_out
    assert "S1 trimmed ****\n" in forms_out and "S2 raw ****" in forms_out
    truncated = by_name["truncated"][1]
    assert "…[truncated " in truncated and "password=" not in truncated
    assert truncated.split("bytes]…\n")[1].startswith("word=****")
    assert by_name["echo"][3] and by_name["echo"][3].startswith("$.seen.X-Token is '****'")
    assert '"X-Token": "****"' in by_name["echo"][1]
    assert len(sse) > 5 and api["long-poll"].count('"event_type"') > 5

    haystacks = {
        "database": _every_column(database_url),
        "logs and run output": ran.stdout + ran.stderr,
        "opsc show": shown.stdout + shown.stderr,
        "opsc list": listed.stdout + listed.stderr,
        "sse": "\n".join(json.dumps(m.data) + "\n" + "\n".join(_strings(m.data)) for m in sse),
        **{f"api {k}": v + "\n" + "\n".join(_strings(json.loads(v))) for k, v in api.items()},
    }
    stored_values = {"S1": FROM_FILE + "\r", "S2": FROM_API + "\n", "S3": FROM_ENV}
    needles = {n for v in stored_values.values() for n in _needles(v)}
    needles |= _wrapped_needles(stored_values)
    needles |= {PAIR_VALUE[-k:] for k in range(4, len(PAIR_VALUE) + 1)}
    needles |= {FROM_FILE[:5], FROM_FILE[5:]}  # the pieces of the value cut by the head cut
    assert len(needles) > 60
    for where, text in haystacks.items():
        for needle in needles:
            assert needle not in text, f"{needle!r} leaked into {where}"
