"""``become`` (sudo) on a real sshd target whose user needs a password for sudo
(tests/sudolab.py): another user, the step's env and cwd past sudo's env_reset, scripts,
a wrong or missing password failing at once, a cancel reaching the root process, and the
refusal on local targets."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest

from opsconductor import secret_store
from opsconductor.cancellation import request_cancel
from opsconductor.db import steps
from opsconductor.db.connection import Database
from opsconductor.engine import Engine
from opsconductor.errors import TargetResolutionError
from opsconductor.plan import parse_plan
from opsconductor.secret_store import SecretResolver
from opsconductor.status_machine import Status
from opsconductor.submission import Request, submit
from tests.helpers import add_ssh_assets, admin
from tests.test_ssh import processes_matching

TARGETS = {"tags": {"role": "sudo"}}


async def _run(
    db: Database, home: Path, *plan_steps: dict[str, Any]
) -> tuple[Status, list[dict[str, Any]]]:
    request = Request(
        parse_plan({"name": "become", "steps": list(plan_steps)}),
        "default",
        await admin(db, "tester"),
    )
    execution_id = (await submit(db, request)).execution.id
    status = await Engine(db, actor_id="tester", secrets=SecretResolver(db, home)).run(
        "default", execution_id
    )
    async with db.connection() as conn:
        return status, await steps.list_for(conn, execution_id)


@pytest.fixture
async def lab(db: Database, sudo_lab: Any, tmp_path: Path) -> Any:
    await secret_store.put(db, tmp_path, "default", "kv/sudo/ok", sudo_lab.password, "tester")
    await secret_store.put(db, tmp_path, "default", "kv/sudo/bad", "not-the-password", "tester")
    await add_ssh_assets(db, sudo_lab, sudo_lab.ports, prefix="sudo")
    return sudo_lab


def _become(secret: str | None = "kv/sudo/ok", **fields: Any) -> dict[str, Any]:
    extra = {} if secret is None else {"become_password": {"secret": secret}}
    return {"type": "command", "targets": TARGETS, "become": True, **extra, **fields}


async def test_another_user_with_the_steps_env_and_cwd(
    db: Database, lab: Any, tmp_path: Path
) -> None:
    value = 'it\'s "quoted"\nand two lines $HOME `id`'
    status, rows = await _run(
        db,
        tmp_path,
        _become(
            name="as nobody",
            become_user="nobody",
            command='id -un; pwd; printf "%s|" "$GREETING"; echo "$OPSC_STEP_NAME"',
            env={"GREETING": value},
            cwd="/tmp",
        ),
    )
    assert status == Status.COMPLETED, rows
    assert rows[0].output == f"nobody\n/tmp\n{value}|as nobody\n"


async def test_a_script_runs_as_root(db: Database, lab: Any, tmp_path: Path) -> None:
    script = {
        "name": "script",
        "type": "script",
        "targets": TARGETS,
        "script": 'echo "$(id -u) $1"\n',
        "args": ["arg"],
        "become": True,
        "become_password": {"secret": "kv/sudo/ok"},
    }
    status, rows = await _run(db, tmp_path, script)
    assert status == Status.COMPLETED, rows
    assert rows[0].output == "0 arg\n"


async def test_a_wrong_or_missing_password_fails_at_once(
    db: Database, lab: Any, tmp_path: Path
) -> None:
    # Not a timeout: sudo's three tries end on the empty lines sent after the password,
    # and without a password sudo runs with -n (never asks).
    status, rows = await _run(
        db,
        tmp_path,
        _become("kv/sudo/bad", name="wrong", command="id -u", timeout_s=60),
        _become(None, name="missing", command="id -u", timeout_s=60),
    )
    assert status == Status.FAILED
    wrong = rows[0]
    assert (wrong.status, wrong.exit_code) == ("failed", 1), wrong
    assert "incorrect password" in wrong.stderr
    assert wrong.output == ""
    assert "not-the-password" not in str(rows)


async def test_without_password_sudo_must_not_ask(db: Database, lab: Any, tmp_path: Path) -> None:
    status, rows = await _run(db, tmp_path, _become(None, name="n", command="id -u", timeout_s=60))
    assert status == Status.FAILED
    assert rows[0].status == "failed" and "password is required" in rows[0].stderr


async def test_a_cancel_stops_the_root_process(db: Database, lab: Any, tmp_path: Path) -> None:
    marker = f"{uuid.uuid4().int % 100_000}.625"
    plan = parse_plan(
        {"name": "sleep", "steps": [_become(name="s", command=f"sleep {marker}", timeout_s=300)]}
    )
    submitted = await submit(db, Request(plan, "default", await admin(db, "tester")))
    execution_id = submitted.execution.id
    engine = Engine(db, actor_id="tester", secrets=SecretResolver(db, tmp_path))
    running = asyncio.create_task(engine.run("default", execution_id))
    while not processes_matching(f"^sleep {marker}"):
        assert not running.done(), await running
        await asyncio.sleep(0.02)
    outcome = await request_cancel(db, "default", str(execution_id), "oncall")
    assert outcome.result == "requested"
    assert await running == Status.CANCELLED
    for _ in range(100):  # the supervisor's KILL follows the channel's close at once
        if not processes_matching(f"^sleep {marker}"):
            break
        await asyncio.sleep(0.05)
    assert processes_matching(f"^sleep {marker}") == []


async def test_become_is_refused_on_a_local_target_before_anything_is_stored(
    db: Database,
) -> None:
    plan = parse_plan(
        {
            "name": "local root",
            "steps": [
                {
                    "name": "s",
                    "type": "command",
                    "targets": {"hostnames": ["localhost"]},
                    "command": "id -u",
                    "become": True,
                }
            ],
        }
    )
    with pytest.raises(TargetResolutionError, match=r"steps\[0\]\.become: .*local"):
        await submit(db, Request(plan, "default", await admin(db, "tester")))
