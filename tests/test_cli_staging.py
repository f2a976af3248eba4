"""opsc tenant stage / canary / staging, and what submissions then say (opsc show)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.served import opsc


def test_stage_canary_and_what_show_says(cli_env: dict[str, str], tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "name: level two\napproval_level: 2\nsteps:\n"
        "  - {name: hello, type: command, action_class: read, targets: {hostnames: [localhost]},\n"
        "     command: 'echo hello'}\n"
    )
    staged = opsc(cli_env, "tenant", "stage", "--level", "2", "record-only")
    assert staged.returncode == 0, staged.stderr
    assert "level 2: record-only" in staged.stdout
    canary = opsc(cli_env, "tenant", "canary", "50")
    assert canary.returncode == 0 and "canary 50%" in canary.stdout
    shown = opsc(cli_env, "tenant", "staging")
    assert "level 2: record-only" in shown.stdout and "canary 50%" in shown.stdout

    submitted = opsc(cli_env, "submit", str(plan))
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    found = re.search(r"[0-9a-f]{8}-[0-9a-f-]{27}", submitted.stdout)
    assert found, submitted.stdout
    detail = opsc(cli_env, "show", found.group(0))
    assert detail.returncode == 0, detail.stderr
    assert "record-only: level 2 not enabled for real in tenant default" in detail.stdout

    opsc(cli_env, "tenant", "stage", "--level", "2", "refuse")
    refused = opsc(cli_env, "submit", str(plan), "-k", "again")
    assert refused.returncode == 2
    assert "level 2 executions are refused in tenant default" in refused.stderr

    bad = opsc(cli_env, "tenant", "stage", "--level", "2", "dark")
    assert bad.returncode == 2 and "real, record-only, refuse" in bad.stderr
    assert opsc(cli_env, "tenant", "canary", "101").returncode == 2
