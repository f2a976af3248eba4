"""The no-leak test: secrets used every way a step can use them never reach a sink.

A plan takes secrets from all three backends (built-in store, environment, Vault KV v2),
puts them in environment variables, echoes them to stdout and stderr, base64- and
URL-encodes them, sends one as a bearer header and fails with one in its messages. Then
every row of every table, every log line, every event and everything the CLI printed is
searched for each value and its encoded forms: zero hits.
"""

from __future__ import annotations

import base64
import json
import urllib.parse
from pathlib import Path

import hvac
import psycopg

from tests.fake_vault import fake_vault
from tests.served import opsc

STORE_VALUE = "n0-LEAK/value+42=ok?"
ENV_VALUE = "env-Secret-9f8e7d6c"
VAULT_VALUE = "vault-Pass-3c2b1a0z"

PLAN = """
name: uses secrets every way
steps:
  - name: echo everywhere
    type: command
    targets: {hostnames: [localhost]}
    env: {TOKEN: {secret: kv/app/token}}
    command: >-
      echo "token is $TOKEN";
      echo "to stderr $TOKEN" >&2;
      printf %s "$TOKEN" | base64;
      echo "prefix-$TOKEN" | base64;
      python3 -c "import os, urllib.parse as u; print(u.quote(os.environ['TOKEN'], safe=''))";
      python3 -c "import os, urllib.parse as u; print(u.quote_plus(os.environ['TOKEN']))";
      echo "curl -H 'Authorization: Bearer $TOKEN' https://api.internal/deploy"
  - name: other backends
    type: command
    targets: {hostnames: [localhost]}
    env:
      FROM_ENV: {secret: "env:OPSC_SECRET_ENV_LEAK_ENV"}
      FROM_VAULT: {secret: "vault:kv/app/db#password"}
    command: >-
      echo "env=$FROM_ENV vault=$FROM_VAULT";
      printf %s "$FROM_VAULT" | base64 >&2
  - name: fails loudly
    type: command
    targets: {hostnames: [localhost]}
    retries: 1
    env: {TOKEN: {secret: kv/app/token}, DB: {secret: "vault:kv/app/db#password"}}
    command: >-
      echo "fatal: token $TOKEN rejected by postgres://app:$DB@db:5432/app" >&2;
      echo "error: $TOKEN";
      exit 3
"""


def _forms(value: str) -> set[str]:
    raw = value.encode()
    forms = {
        value,
        base64.b64encode(raw).decode(),
        base64.b64encode(raw).decode().rstrip("="),
        base64.urlsafe_b64encode(raw).decode(),
        urllib.parse.quote(value, safe=""),
        urllib.parse.quote_plus(value),
    }
    # what ``echo "prefix-$V" | base64`` prints, minus the characters shared with the prefix
    shifted = base64.b64encode(b"prefix-" + raw + b"\n").decode()
    forms.add(shifted[12:-8])
    return forms


def _dump_every_table(database_url: str) -> str:
    with psycopg.connect(database_url) as conn:
        tables = conn.execute(
            "SELECT quote_ident(table_schema) || '.' || quote_ident(table_name) FROM "
            "information_schema.tables WHERE table_type = 'BASE TABLE' AND table_schema NOT IN "
            "('pg_catalog', 'information_schema')"
        ).fetchall()
        chunks = []
        for (table,) in tables:
            rows = conn.execute(f"SELECT t::text FROM {table} t").fetchall()
            chunks.append(f"== {table} ({len(rows)} rows)\n" + "\n".join(r[0] for r in rows))
    return "\n".join(chunks)


def test_no_secret_reaches_any_sink(
    cli_env: dict[str, str], database_url: str, tmp_path: Path
) -> None:
    plan_file = tmp_path / "secrets.yaml"
    plan_file.write_text(PLAN)
    with fake_vault() as vault:
        hvac.Client(url=vault.url, token=vault.token).secrets.kv.v2.create_or_update_secret(
            path="app/db", secret={"password": VAULT_VALUE}, mount_point="kv"
        )
        env = {
            **cli_env,
            "OPSC_LOG_LEVEL": "debug",
            "OPSC_SECRET_ENV_LEAK_ENV": ENV_VALUE,
            "VAULT_ADDR": vault.url,
            "VAULT_TOKEN": vault.token,
        }
        stored = opsc(env, "secrets", "set", "kv/app/token", stdin=STORE_VALUE + "\n")
        assert stored.returncode == 0, stored.stderr
        ran = opsc(env, "run", str(plan_file))
    assert ran.returncode == 1, ran.stdout + ran.stderr  # the last step fails on purpose

    with psycopg.connect(database_url) as conn:
        (execution_id, status, reason) = conn.execute(
            "SELECT id::text, status::text, status_reason FROM execution.executions"
        ).fetchone() or ("", "", "")
        outputs = conn.execute(
            "SELECT step_name, status, output, stderr FROM execution.execution_steps "
            "ORDER BY step_index, attempt"
        ).fetchall()
        events = conn.execute(
            "SELECT event_type, payload::text FROM execution.execution_events ORDER BY id"
        ).fetchall()
    # The run did what we think: the secrets were really used, and shown masked.
    assert status == "failed" and "fails loudly" in reason
    assert [(name, st) for name, st, _, _ in outputs] == [
        ("echo everywhere", "completed"),
        ("other backends", "completed"),
        ("fails loudly", "failed"),
        ("fails loudly", "failed"),
    ]
    assert outputs[0][2].startswith("token is ****\n") and outputs[0][3] == "to stderr ****\n"
    assert "Authorization: Bearer ****" in outputs[0][2]
    assert outputs[1][2] == "env=**** vault=****\n"
    assert "postgres://app:****@db" in outputs[2][3]
    assert sum(1 for kind, _ in events if kind == "secret_resolved") == 5  # once per step and path

    shown = opsc(env, "show", execution_id)
    listed = opsc(env, "list")
    secrets_listed = opsc(env, "secrets", "list")
    assert shown.returncode == 1 or shown.returncode == 0
    assert "kv/app/token" in secrets_listed.stdout
    log_lines = [line for line in ran.stderr.splitlines() if line.startswith("{")]
    assert any(json.loads(line).get("event") == "step_finished" for line in log_lines)

    haystacks = {
        "database": _dump_every_table(database_url),
        "logs and run output": ran.stdout + ran.stderr,
        "events": "\n".join(payload for _, payload in events),
        "opsc show": shown.stdout + shown.stderr,
        "opsc list": listed.stdout + listed.stderr,
        "opsc secrets": stored.stdout + stored.stderr + secrets_listed.stdout,
    }
    assert "secret_resolved" in haystacks["database"]
    for value in (STORE_VALUE, ENV_VALUE, VAULT_VALUE):
        for form in _forms(value):
            for where, text in haystacks.items():
                assert form not in text, f"{form!r} (from {value!r}) leaked into {where}"
