"""``opsc jobs``, ``opsc schedules`` and ``opsc hooks`` as a user types them (real
processes, the local administrator, the test database)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.test_worker_processes import opsc

pytestmark = pytest.mark.integration


def _plan(tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": name,
                "params": {"version": {"type": "string"}, "count": {"type": "int", "default": 1}},
                "steps": [
                    {"name": "nothing", "type": "noop", "targets": {"hostnames": ["localhost"]}}
                ],
            }
        )
    )
    return path


def test_jobs_schedules_and_hooks_from_the_shell(cli_env: dict[str, str], tmp_path: Path) -> None:
    def ok(*args: str) -> str:
        done = opsc(cli_env, *args)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done.stdout

    assert "saved job deploy version 1" in ok("jobs", "save", "deploy", str(_plan(tmp_path, "a")))
    assert "unchanged" in ok("jobs", "save", "deploy", str(_plan(tmp_path, "a")))
    assert "version 2" in ok("jobs", "save", "deploy", str(_plan(tmp_path, "b")))
    assert re.search(r"deploy\s.*2\s.*b", ok("jobs", "list"))
    assert '"version"' in ok("jobs", "show", "deploy", "--version", "1")
    history = ok("jobs", "history", "deploy")
    assert history.index(" 2 ") < history.index(" 1 ")
    bad = opsc(cli_env, "jobs", "run", "deploy", "--set", "count=many", "--set", "version=1")
    assert bad.returncode == 2 and "params.count" in bad.stderr
    ran = ok("jobs", "run", "deploy", "--set", "version=1.2", "--set", "count=3")
    execution = re.search(r"execution ([0-9a-f-]{36})", ran)
    assert execution and "job deploy version 2" in ran
    assert "job deploy version 2" in ok("show", execution[1])
    assert execution[1] in ok("jobs", "runs", "deploy")

    added = ok(
        "schedules",
        "add",
        "nightly",
        "--job",
        "deploy",
        "--cron",
        "30 2 * * *",
        "--tz",
        "Europe/Paris",
        "--set",
        "version=nightly",
        "--missed",
        "run_once",
    )
    assert added.count("next ") == 3 and "nightly" in added
    assert "job deploy (v2)" in added  # the version of now: a later save does not run
    listed = ok("schedules", "list")
    assert "nightly" in listed and "active" in listed and "run_once" in listed
    assert "v2" in listed
    ok("schedules", "pause", "nightly")
    assert "paused" in ok("schedules", "list")
    assert "next" in ok("schedules", "resume", "nightly")
    wrong = opsc(cli_env, "schedules", "add", "x", "--job", "deploy", "--cron", "* *")
    assert wrong.returncode == 2 and "cron:" in wrong.stderr

    made = ok("hooks", "add", "deploy", "--map", "version=/release/tag", "--set", "count=2")
    hook_id = re.search(r"webhook (\S+) starts job deploy", made)
    assert hook_id and "signing secret (shown once): " in made
    secret = made.split("signing secret (shown once): ")[1].strip()
    listing = ok("hooks", "list", "deploy")
    assert hook_id[1] in listing and secret not in listing
    ok("hooks", "deliveries", "deploy", hook_id[1])
    ok("hooks", "remove", "deploy", hook_id[1])
    ok("schedules", "remove", "nightly")
    ok("jobs", "delete", "deploy")
    assert "deploy" not in ok("jobs", "list")
