"""The opsc command as a user meets it: real processes, real database, exit codes 0/1/2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from tests.served import logged_in, opsc, serving

ROOT = Path(__file__).resolve().parent.parent
PLANS = ROOT / "examples" / "plans"


__all__ = ["opsc"]


BAD_FILES = {
    "syntax.yaml": ("name: x\nsteps: [\n", "not valid YAML at line 3"),
    "unknown.yaml": (
        "name: x\nsteps:\n  - {name: a, type: command, command: ls, colour: red,"
        " targets: {hostnames: [localhost]}}\n",
        "steps[0].colour: unknown field",
    ),
    "wrong-type.yaml": (
        "name: x\nsteps:\n  - {name: a, type: command, command: ls, timeout_s: soon,"
        " targets: {hostnames: [localhost]}}\n",
        "steps[0].timeout_s: must be a number (got str)",
    ),
    "empty.yaml": ("name: x\nsteps: []\n", "steps: must not be empty"),
    "no-target.yaml": (
        "name: x\nsteps:\n  - {name: a, type: command, command: ls,"
        " targets: {tags: {role: nothing-has-this}}}\n",
        "steps[0].targets: no asset matches {'tags': {'role': 'nothing-has-this'}}",
    ),
}


@pytest.mark.parametrize("filename", sorted(BAD_FILES))
def test_bad_plan_file_exits_2_with_one_line_naming_the_field(
    filename: str, cli_env: dict[str, str], database_url: str, tmp_path: Path
) -> None:
    text, message = BAD_FILES[filename]
    path = tmp_path / filename
    path.write_text(text)
    for command in ("run", "validate"):
        result = opsc(cli_env, command, str(path))
        assert result.returncode == 2, result.stdout + result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert message in lines[0]
        assert "Traceback" not in result.stderr
    with psycopg.connect(database_url) as conn:  # nothing was stored for a bad plan
        assert conn.execute("SELECT count(*) FROM execution.executions").fetchone() == (0,)


def test_missing_file_exits_2(cli_env: dict[str, str]) -> None:
    result = opsc(cli_env, "run", "/nonexistent/plan.yaml")
    assert result.returncode == 2 and "no such file" in result.stderr


def test_running_twice_reuses_the_execution(cli_env: dict[str, str], database_url: str) -> None:
    first = opsc(cli_env, "run", str(PLANS / "hello.yaml"))
    second = opsc(cli_env, "run", str(PLANS / "hello.yaml"))
    assert first.returncode == 0 and second.returncode == 0, second.stdout + second.stderr
    assert "already submitted within the deduplication window" in second.stdout
    keyed = opsc(cli_env, "run", "--idempotency-key", "again", str(PLANS / "hello.yaml"))
    assert keyed.returncode == 0
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM execution.executions").fetchone() == (2,)


@pytest.mark.parametrize(
    ("plan", "code", "status"),
    [
        ("failing-validation.yaml", 1, "failed"),
        ("timeout.yaml", 1, "timeout"),
        ("retry.yaml", 0, "completed"),
    ],
)
def test_examples_end_as_documented(
    plan: str, code: int, status: str, cli_env: dict[str, str]
) -> None:
    result = opsc(cli_env, "run", str(PLANS / plan))
    assert result.returncode == code, result.stdout + result.stderr
    assert status in result.stdout


def test_validate_list_show_and_assets(cli_env: dict[str, str]) -> None:
    validated = opsc(cli_env, "validate", str(PLANS / "hello.yaml"))
    assert validated.returncode == 0 and "plan hash: " in validated.stdout
    assert opsc(cli_env, "run", str(PLANS / "hello.yaml")).returncode == 0
    listed = opsc(cli_env, "list")
    assert "Hello from OpsConductor" in listed.stdout and "completed" in listed.stdout
    execution_id = listed.stdout.split("│")[1].strip() if "│" in listed.stdout else ""
    shown = opsc(cli_env, "show", execution_id[:8])
    assert shown.returncode == 0, shown.stderr
    assert "status_changed" in shown.stdout and "who and where" in shown.stdout
    assert opsc(cli_env, "show", "ffffffff").returncode == 2
    assert opsc(cli_env, "show", "not-an-id").returncode == 2
    assert opsc(cli_env, "list", "--status", "bogus").returncode == 2
    added = opsc(cli_env, "assets", "add", "web-1", "--environment", "staging", "--tag", "role=web")
    assert added.returncode == 0, added.stderr
    dup = opsc(cli_env, "assets", "add", "web-1")
    assert dup.returncode == 2 and "already exists" in dup.stderr
    bad_tag = opsc(cli_env, "assets", "add", "web-2", "--tag", "novalue")
    assert bad_tag.returncode == 2 and "--tag 'novalue'" in bad_tag.stderr
    assets = opsc(cli_env, "assets", "list")
    assert "web-1" in assets.stdout and "role=web" in assets.stdout and "localhost" in assets.stdout


def test_run_waits_for_approval_from_another_actor(cli_env: dict[str, str], tmp_path: Path) -> None:
    runner = subprocess.Popen(
        [sys.executable, "-m", "opsconductor.cli", "run", str(PLANS / "needs-approval.yaml")],
        env=cli_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert runner.stdout is not None
    line = ""
    for line in runner.stdout:  # "  opsc approve <id> --hash <hash>"
        if "opsc approve" in line:
            break
    _, _, execution_id, _, plan_hash = line.split()
    self_approval = opsc(cli_env, "approve", execution_id, "--hash", plan_hash)
    assert self_approval.returncode == 2 and "separation of duties" in self_approval.stderr
    # Another person is another credential: bob logs in with his own token.
    with serving(cli_env, "--workers", "0") as (url, _):
        bob = logged_in(cli_env, url, "bob", config=tmp_path / "bob")
        unbound = opsc(bob, "approve", execution_id, "--hash", plan_hash)
        assert unbound.returncode == 2 and "holds no role, so may not approve" in unbound.stderr
        assert opsc(cli_env, "roles", "grant", "bob", "approver").returncode == 0
        wrong = opsc(bob, "approve", execution_id, "--hash", "0" * 64)
        assert wrong.returncode == 2 and "not the plan's current hash" in wrong.stderr
        approved = opsc(bob, "approve", execution_id, "--hash", plan_hash, "--comment", "lgtm")
        assert approved.returncode == 0, approved.stderr
        rest, errors = runner.communicate(timeout=60)
    assert runner.returncode == 0, rest + errors
    assert "rotated at" in rest
    shown = opsc(cli_env, "show", execution_id)
    assert "bob approve (lgtm)" in shown.stdout and "approval_refused" in shown.stdout


def test_watch_follows_to_the_end(cli_env: dict[str, str]) -> None:
    assert opsc(cli_env, "run", str(PLANS / "retry.yaml")).returncode == 0
    listed = opsc(cli_env, "list", "--limit", "1")
    execution_id = listed.stdout.split("│")[1].strip()
    watched = opsc(cli_env, "watch", execution_id)
    assert watched.returncode == 0, watched.stderr
    assert "finished: completed" in watched.stdout
    assert "approved → running" in watched.stdout and "(attempt 3)" in watched.stdout


def test_run_refuses_level_3_and_points_to_submit(cli_env: dict[str, str], tmp_path: Path) -> None:
    plan = tmp_path / "l3.yaml"
    plan.write_text(
        "name: x\napproval_level: 3\nsteps:\n"
        "  - {name: a, type: command, command: 'true', targets: {hostnames: [localhost]}}\n"
    )
    result = opsc(cli_env, "run", str(plan))
    assert result.returncode == 2
    assert "approval_level: 3" in result.stderr and "opsc submit" in result.stderr


PARAM_PLAN = """\
name: params
params:
  version: {type: string, description: release to deploy}
  replicas: {type: int, default: 2}
steps:
  - name: show
    type: command
    action_class: read
    targets: {hostnames: [localhost]}
    command: echo "$OPSC_PARAM_VERSION x $OPSC_PARAM_REPLICAS"
"""


def test_parameters_from_set_and_values_and_a_bad_one_exits_2_naming_it(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(PARAM_PLAN)
    missing = opsc(cli_env, "validate", str(path))
    assert missing.returncode == 2
    assert "params.version: required string parameter not given" in missing.stderr
    wrong = opsc(cli_env, "run", str(path), "--set", "version=1", "--set", "replicas=many")
    assert wrong.returncode == 2
    assert "params.replicas: must be an integer (got 'many')" in wrong.stderr
    values = tmp_path / "values.yaml"
    values.write_text("version: '1.2'\nreplicas: '3'\n")  # typed: a string is not an int
    typed = opsc(cli_env, "validate", str(path), "--values", str(values))
    assert typed.returncode == 2 and "params.replicas: must be an integer (got str)" in typed.stderr
    values.write_text("version: '1.2'\n")
    one = opsc(cli_env, "validate", str(path), "--values", str(values), "--set", "replicas=3")
    two = opsc(cli_env, "validate", str(path), "--values", str(values), "--set", "replicas=4")
    assert one.returncode == 0, one.stderr
    assert "param replicas = 3" in one.stdout
    assert (
        "route: fast (immediate)" in one.stdout and "budget: 10 s, from the fast/read" in one.stdout
    )
    hashes = [line for r in (one, two) for line in r.stdout.splitlines() if "plan hash" in line]
    assert len(set(hashes)) == 2  # a parameter is part of the hash
    ran = opsc(cli_env, "run", str(path), "--set", "version=1.2")
    assert ran.returncode == 0, ran.stdout + ran.stderr


def test_validate_rejects_a_template_typo_naming_step_target_and_name(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    path = tmp_path / "typo.yaml"
    path.write_text(
        "name: typo\nsteps:\n  - {name: ping, type: command, action_class: read,"
        " targets: {hostnames: [localhost]}, command: 'true'}\n"
        "  - name: fetch\n    type: http\n    targets: {hostnames: [localhost]}\n"
        "    url: 'http://{{ asset.adress }}:8080/'\n    when: steps.ping.exit_code == 0\n"
    )
    result = opsc(cli_env, "validate", str(path))
    assert result.returncode == 2, result.stdout
    assert "Traceback" not in result.stderr
    assert (
        "steps[1].url (step 'fetch', target localhost): template error: asset.adress is "
        "undefined" in result.stderr
    )
