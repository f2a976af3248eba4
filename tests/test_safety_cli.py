"""`opsc secrets` and `opsc masking` as an operator uses them: values never printed, tenant
patterns applied to what a run stores and shows."""

from __future__ import annotations

import stat
from pathlib import Path

import psycopg

from tests.served import opsc


def test_secrets_set_list_delete_never_print_the_value(
    cli_env: dict[str, str], database_url: str
) -> None:
    value = "cli-Secret-value-0xC0FFEE"
    first = opsc(cli_env, "secrets", "set", "kv/db/password", stdin=value + "\n")
    assert first.returncode == 0 and "stored secret kv/db/password" in first.stdout
    again = opsc(cli_env, "secrets", "set", "kv/db/password", stdin=value)
    assert "replaced secret kv/db/password" in again.stdout
    listed = opsc(cli_env, "secrets", "list")
    assert "kv/db/password" in listed.stdout
    key_file = Path(cli_env["OPSC_HOME"]) / "secret.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    rotated = opsc(cli_env, "secrets", "rotate-key")
    assert rotated.returncode == 0 and "1 secret(s) re-sealed" in rotated.stdout
    for result in (first, again, listed, rotated):
        assert value not in result.stdout + result.stderr
    with psycopg.connect(database_url) as conn:
        (count,) = conn.execute("SELECT count(*) FROM execution.secrets").fetchone() or (0,)
    assert count == 1
    assert opsc(cli_env, "secrets", "delete", "kv/db/password").returncode == 0
    missing = opsc(cli_env, "secrets", "delete", "kv/db/password")
    assert missing.returncode == 2 and "not found" in missing.stderr
    bad = opsc(cli_env, "secrets", "set", "env:HOME", stdin="x")
    assert bad.returncode == 2 and "only built-in store paths" in bad.stderr
    empty = opsc(cli_env, "secrets", "set", "kv/empty", stdin="")
    assert empty.returncode == 2 and "empty" in empty.stderr


def test_tenant_masking_patterns_apply_to_runs(cli_env: dict[str, str], tmp_path: Path) -> None:
    bad = opsc(cli_env, "masking", "add", "broken", "(unclosed")
    assert bad.returncode == 2 and "not a valid regular expression" in bad.stderr
    added = opsc(cli_env, "masking", "add", "employee-id", r"EMP-\d{6}")
    assert added.returncode == 0
    assert r"EMP-\d{6}" in opsc(cli_env, "masking", "list").stdout
    plan = tmp_path / "p.yaml"
    plan.write_text(
        "name: prints an employee id\nsteps:\n  - name: who\n    type: command\n"
        "    targets: {hostnames: [localhost]}\n    command: echo owner EMP-123456 done\n"
    )
    ran = opsc(cli_env, "run", str(plan))
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "EMP-123456" not in ran.stdout and "owner **** done" in ran.stdout
    assert opsc(cli_env, "masking", "remove", "employee-id").returncode == 0
    assert opsc(cli_env, "masking", "remove", "employee-id").returncode == 2


def test_secret_example_plan_runs_as_its_comment_says(cli_env: dict[str, str]) -> None:
    plan = Path(__file__).resolve().parent.parent / "examples" / "plans" / "secret.yaml"
    missing = opsc(cli_env, "run", str(plan))
    assert missing.returncode == 1 and "kv/demo/token" in missing.stdout
    opsc(cli_env, "secrets", "set", "kv/demo/token", stdin="n0t-a-real-token")
    ran = opsc(cli_env, "run", "--idempotency-key", "second", str(plan))
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "token=****" in ran.stdout and "n0t-a-real-token" not in ran.stdout
