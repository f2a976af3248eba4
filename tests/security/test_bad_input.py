"""Bad input, the same table through the CLI and the API: exit 2 with one line naming the
field, or a 4xx problem naming it; never a traceback, a 500 or a 503; nothing stored."""

from __future__ import annotations

from pathlib import Path

import httpx
import psycopg
import pytest

from tests.served import opsc, serving, token_of

STEP = "  - {name: s, type: command, command: 'true', targets: {hostnames: [localhost]}}\n"
SQL = "  - {name: q, type: sql, query: select 1, targets: {hostnames: [localhost]}, dsn: %s}\n"

#: case -> (plan text, what the message must say)
CASES: dict[str, tuple[str, str]] = {
    "duplicate key": (
        "name: x\napproval_level: 2\napproval_level: 0\nsteps:\n" + STEP,
        "duplicate key 'approval_level'",
    ),
    "NUL escape": ('name: "x\\0y"\nsteps:\n' + STEP, "name: control character U+0000"),
    "escape character": (
        'name: x\nsteps:\n  - {name: "a\\e", type: noop, targets: {hostnames: [localhost]}}\n',
        "steps[0].name: control character U+001B",
    ),
    "deep nesting": ("name: x\nsteps: " + "[" * 5000 + "]" * 5000 + "\n", "nested deeper than 64"),
    "recursive alias": ("name: x\nsteps: &s [*s]\n", "recursive alias"),
    "huge integer": ("name: x\npriority: " + "7" * 5001 + "\nsteps:\n" + STEP, "integer longer"),
    "empty dsn": ("name: x\nsteps:\n" + SQL % '""', "steps[0].dsn: must not be empty"),
    "backreference": (
        "name: x\nsteps:\n"
        + STEP
        + "  - {name: v, type: validate, step: s, expect: {stdout_regex: '(a)\\1'}}\n",
        "steps[1].expect.stdout_regex: not a valid regular expression for RE2",
    ),
}


def _executions(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM execution.executions").fetchone()
        assert row is not None
        return int(row[0])


@pytest.mark.parametrize("case", sorted(CASES))
def test_cli_exits_2_naming_the_field(
    case: str, cli_env: dict[str, str], database_url: str, tmp_path: Path
) -> None:
    text, message = CASES[case]
    path = tmp_path / "plan.yaml"
    path.write_text(text)
    for command in ("validate", "run"):
        result = opsc(cli_env, command, str(path))
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        assert message in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert "Traceback" not in result.stdout + result.stderr
    assert _executions(database_url) == 0


def test_api_answers_4xx_naming_the_field(cli_env: dict[str, str], database_url: str) -> None:
    env = {**cli_env, "OPSC_TENANT": "acme"}
    _, token = token_of(opsc(env, "tokens", "create", "mallory", "--role", "operator"))
    auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/yaml"}
    with serving(cli_env, "--workers", "0") as (url, proc), httpx.Client(base_url=url) as http:
        for case, (text, message) in CASES.items():
            for path in ("/executions", "/executions/validate"):
                r = http.post(path, content=text.encode(), headers=auth)
                assert 400 <= r.status_code < 500, (case, path, r.status_code, r.text)
                assert r.headers["content-type"].startswith("application/problem+json")
                assert message in r.json()["detail"], (case, r.text)
                assert "Traceback" not in r.text
        # A token that would be born expired is refused, not made.
        admin = opsc(env, "tokens", "create", "root", "--role", "admin")
        _, root = token_of(admin)
        r = http.post(
            "/tokens",
            json={"actor_id": "someone", "expires_at": 0},
            headers={"Authorization": f"Bearer {root}"},
        )
        assert 400 <= r.status_code < 500, r.text
        assert "expires_at" in r.json()["detail"]
        proc.kill()
        _, log = proc.communicate()
    assert "Traceback" not in log
    assert _executions(database_url) == 0


def test_sql_step_with_a_secret_dsn_validates(cli_env: dict[str, str], tmp_path: Path) -> None:
    """The documented form was a 500 and a CLI traceback (a model constraint that cannot
    apply to a secret reference)."""
    path = tmp_path / "plan.yaml"
    path.write_text("name: x\nsteps:\n" + SQL % "{secret: kv/db/dsn}")
    result = opsc(cli_env, "validate", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
