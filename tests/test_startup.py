"""The commands an operator types in a hurry (``opsc list``, ``show``, ``cancel``) start in a
fraction of a second because they do not load what they do not use: the API server, SSH,
Vault, templates, the plan models, the engine. Checked by what a real run imported, not by
a stopwatch (bench/startup.py has the timings)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from opsconductor.cli import QUICK, app_for

#: Never needed to list, show or cancel an execution from the shell.
HEAVY = frozenset(
    {
        "fastapi",
        "uvicorn",
        "starlette",
        "asyncssh",
        "hvac",
        "requests",
        "httpx",
        "websockets",
        "jinja2",
        "cryptography",
        "yaml",
        "prometheus_client",
        "rich.progress",
        # the API's answer shapes (api.models) are the CLI's too; the server is not
        "opsconductor.api.app",
        "opsconductor.api.server",
        "opsconductor.api.routes_executions",
        "opsconductor.engine",
        "opsconductor.plan",
        "opsconductor.worker",
        "opsconductor.connectors.ssh",
        "opsconductor.connectors.session",
    }
)

#: Runs ``opsc ARGS...`` in this interpreter and, however it exits, writes the modules it
#: loaded to OUT.
RUN_AND_REPORT = """
import json, sys
out, args = sys.argv[1], sys.argv[2:]
try:
    from opsconductor.cli import main
    sys.argv = ["opsc", *args]
    main()
finally:
    with open(out, "w") as f:
        json.dump(sorted(sys.modules), f)
"""


def loaded_by(env: dict[str, str], tmp_path: Path, *args: str) -> tuple[int, set[str]]:
    report = tmp_path / "modules.json"
    done = subprocess.run(
        [sys.executable, "-c", RUN_AND_REPORT, str(report), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.returncode, set(json.loads(report.read_text()))


def heavy(modules: set[str]) -> set[str]:
    return {m for m in modules if m in HEAVY or m.split(".")[0] in HEAVY}


@pytest.fixture
def execution_id(cli_env: dict[str, str], tmp_path: Path) -> str:
    plan = tmp_path / "plan.json"
    plan.write_text(
        json.dumps(
            {
                "name": "startup",
                "steps": [
                    {"name": "nothing", "type": "noop", "targets": {"hostnames": ["localhost"]}}
                ],
            }
        )
    )
    done = subprocess.run(
        [sys.executable, "-m", "opsconductor.cli", "submit", str(plan)],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.parametrize("command", [["list"], ["show"], ["cancel"], ["--help"], ["workers"]])
def test_a_quick_command_loads_nothing_it_does_not_use(
    cli_env: dict[str, str], tmp_path: Path, execution_id: str, command: list[str]
) -> None:
    args = [*command, execution_id] if command[0] in ("show", "cancel") else command
    code, modules = loaded_by(cli_env, tmp_path, *args)
    assert code == 0
    assert "opsconductor.services.executions" in modules or command[0] in ("--help", "workers")
    assert heavy(modules) == set()


def test_commands_that_need_them_still_load_them(cli_env: dict[str, str], tmp_path: Path) -> None:
    """The lazy imports are reached: ``validate`` loads the plan models it checks with."""
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "name: p\nsteps:\n  - {name: n, type: noop, targets: {hostnames: [localhost]}}\n"
    )
    code, modules = loaded_by(cli_env, tmp_path, "validate", str(plan))
    assert code == 0
    assert {"opsconductor.plan", "yaml"} <= modules


def test_importing_the_cli_loads_nothing_heavy() -> None:
    """The fast tier's version (no database): what every command pays before it runs."""
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json, sys, opsconductor.cli; print(json.dumps(sorted(sys.modules)))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert heavy(set(json.loads(done.stdout))) == set()


def click_command(app: object, name: str) -> object:
    import typer.main

    group = typer.main.get_command(app)  # type: ignore[arg-type]
    return group.commands[name]  # type: ignore[attr-defined]


@pytest.mark.unit
@pytest.mark.parametrize("name", sorted(QUICK))
def test_a_quick_command_is_the_same_command_as_in_the_full_app(name: str) -> None:
    """``opsc list`` builds an app of one module's commands: each must be exactly the
    command the full app has (same parameters, same help), and the module must define it."""
    from opsconductor.cli.commands import app as everything

    quick, full = click_command(app_for(name), name), click_command(everything, name)
    # typer wraps each callback anew: the same function is the same module and name
    origin = [(c.callback.__module__, c.callback.__qualname__) for c in (quick, full)]  # type: ignore[attr-defined]
    assert origin[0] == origin[1]
    assert origin[0][0] == QUICK[name]
    assert [p.name for p in quick.params] == [p.name for p in full.params]  # type: ignore[attr-defined]
    assert quick.help == full.help  # type: ignore[attr-defined]


@pytest.mark.unit
def test_every_other_command_goes_to_the_full_app() -> None:
    from opsconductor.cli.commands import app as everything

    assert app_for("assets") is everything
    assert app_for(None) is everything
    assert app_for("--help") is everything
