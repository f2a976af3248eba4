"""The ``ansible`` step: real ansible-core, sandboxed, against two real sshd hosts
(tests/sshlab.py), through the real engine and database."""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from opsconductor import secret_store
from opsconductor.cancellation import request_cancel
from opsconductor.db import assets, executions, steps
from opsconductor.db.connection import Database
from opsconductor.engine import Engine
from opsconductor.plan import parse_plan
from opsconductor.records import StepAttempt
from opsconductor.secret_store import SecretResolver
from opsconductor.status_machine import Status
from opsconductor.submission import Request, submit
from tests.helpers import add_ssh_assets, admin
from tests.security.local_support import needs_sandbox

#: The controller runs sandboxed (root and bubblewrap) and needs the ``ansible`` extra.
needs_ansible = pytest.mark.skipif(
    importlib.util.find_spec("ansible") is None,
    reason="ansible-core is not installed (pip install -e '.[ansible]')",
)
pytestmark = [needs_sandbox, needs_ansible]

#: Ports of the shared lab these tests use (others use the first few).
PORTS = (20, 21)


async def two_hosts(db: Database, lab: Any) -> list[str]:
    added = await add_ssh_assets(db, lab, [lab.ports[p] for p in PORTS], prefix="ans")
    return [a.asset_id for a in added]


def playbook(files_dir: Path, text: str, name: str = "site/deploy.yml") -> str:
    path = files_dir / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return name


def ansible_plan(book: str, **step: Any) -> dict[str, Any]:
    declared = step.pop("params", {})
    # Not the policy's 8 s for a 'modify' step: ansible-playbook alone takes seconds of CPU
    # to start, and the suite runs on several processes (a loaded machine); tests of the
    # timeout say theirs.
    step.setdefault("timeout_s", 60)
    return {
        "name": "ansible",
        "params": declared,
        "steps": [
            {
                "name": "configure",
                "type": "ansible",
                "targets": {"tags": {"role": "ans"}},
                "playbook": book,
                **step,
            }
        ],
    }


async def submit_plan(
    db: Database, plan: dict[str, Any], values: dict[str, Any] | None = None
) -> uuid.UUID:
    actor = await admin(db, "tester")
    request = Request(parse_plan(plan), "default", actor, uuid.uuid4().hex, params=values)
    submitted = await submit(db, request)
    return uuid.UUID(str(submitted.execution.id))


async def rows_of(db: Database, execution_id: uuid.UUID) -> dict[str, StepAttempt]:
    async with db.connection() as conn:
        return {r.target_asset_id: r for r in await steps.list_for(conn, execution_id)}


DEPLOY = """
- hosts: all
  gather_facts: false
  tasks:
    - name: write the config
      copy:
        dest: "{{ out }}/{{ inventory_hostname }}.conf"
        content: "greeting={{ greeting }} release={{ release }}\\n"
      notify: reload
  handlers:
    - name: reload
      copy:
        dest: "{{ out }}/{{ inventory_hostname }}.reloaded"
        content: "reloaded\\n"
"""


async def test_a_playbook_writes_a_file_and_runs_its_handler_on_two_hosts(
    db: Database, ssh_lab: Any, files_dir: Path, tmp_path: Path
) -> None:
    hosts = await two_hosts(db, ssh_lab)
    out = tmp_path / "out"
    out.mkdir()
    book = playbook(files_dir, DEPLOY)
    plan = ansible_plan(
        book,
        params={"release": {"type": "string"}, "word": {"type": "string"}},
        extra_vars={"out": str(out), "greeting": "hello {{ params.word }}"},
    )
    execution_id = await submit_plan(db, plan, {"release": "v42", "word": "world"})
    status = await Engine(db, actor_id="tester").run("default", execution_id)
    rows = await rows_of(db, execution_id)
    assert status is Status.COMPLETED, {h: (r.status, r.error) for h, r in rows.items()}
    for host in hosts:
        # the plan's params arrive as extra-vars (release), the step's own templated (greeting)
        assert (out / f"{host}.conf").read_text() == "greeting=hello world release=v42\n"
        assert (out / f"{host}.reloaded").read_text() == "reloaded\n"
        row = rows[host]
        assert (row.status, row.attempt) == ("completed", 1)
        assert f"changed: [{host}] write the config" in row.output
        assert "RUNNING HANDLER [reload]" in row.output
        assert f"changed: [{host}] reload" in row.output
        other = next(h for h in hosts if h != host)
        assert f"[{other}]" not in row.output  # each target shows its own host's results
    async with db.connection() as conn:
        events = await executions.events(conn, execution_id)
    live = [e for e in events if e.event_type == "step_output"]
    assert {e.payload["target"] for e in live} == set(hosts)
    assert any(f"changed: [{hosts[0]}] write the config" in e.payload["lines"] for e in live), (
        "the hosts' lines stream as step_output events while the playbook runs"
    )


FAIL_ON_ONE = """
- hosts: all
  gather_facts: false
  tasks:
    - name: check the disk
      command: "true"
    - name: print a lot
      command: seq 1 5000
    - name: break on one host
      fail:
        msg: "disk full on {{ inventory_hostname }}"
      when: inventory_hostname == victim
"""


async def test_a_failing_task_fails_its_target_with_the_task_and_its_message(
    db: Database, ssh_lab: Any, files_dir: Path
) -> None:
    hosts = await two_hosts(db, ssh_lab)
    book = playbook(files_dir, FAIL_ON_ONE)
    execution_id = await submit_plan(db, ansible_plan(book, extra_vars={"victim": hosts[1]}))
    status = await Engine(db, actor_id="tester").run("default", execution_id)
    assert status is Status.PARTIAL  # one target failed, the other completed
    rows = await rows_of(db, execution_id)
    assert rows[hosts[0]].status == "completed"
    assert rows[hosts[0]].error is None
    assert rows[hosts[1]].status == "failed"
    assert rows[hosts[1]].error == f"task 'break on one host' failed: disk full on {hosts[1]}"
    assert "recap: ok=2 changed=2 failures=1" in rows[hosts[1]].output
    # a result longer than a line the worker reads is shortened, not lost: its end shows
    assert f"changed: [{hosts[0]}] print a lot\n" in rows[hosts[0]].output
    assert "\n5000\n" in rows[hosts[0]].output


SLOW = """
- hosts: all
  gather_facts: false
  tasks:
    - name: started
      copy:
        dest: "{{ out }}/{{ inventory_hostname }}.started"
        content: "yes\\n"
    - name: take long ({{ marker }})
      command: sleep 120
"""


def controller_processes(marker: str) -> list[str]:
    found = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True)
    return found.stdout.split()


async def test_cancel_mid_playbook_stops_the_controller(
    db: Database, ssh_lab: Any, files_dir: Path, tmp_path: Path
) -> None:
    hosts = await two_hosts(db, ssh_lab)
    out = tmp_path / "out"
    out.mkdir()
    marker = f"slow-{uuid.uuid4().hex[:10]}"
    book = playbook(files_dir, SLOW, f"{marker}/slow.yml")
    plan = ansible_plan(book, extra_vars={"out": str(out), "marker": marker})
    execution_id = await submit_plan(db, plan)
    running = asyncio.create_task(Engine(db, actor_id="tester").run("default", execution_id))
    for _ in range(600):  # both hosts are past their first task: the playbook is mid-way
        if all((out / f"{h}.started").exists() for h in hosts):
            break
        await asyncio.sleep(0.1)
    else:
        running.cancel()
        raise AssertionError("the playbook never started")
    assert controller_processes(marker), "ansible-playbook should be running"
    await request_cancel(db, "default", str(execution_id), "bob")
    final = await asyncio.wait_for(running, 60)  # generous; no timing asserted
    assert final is Status.CANCELLED
    rows = await rows_of(db, execution_id)
    assert {h: r.status for h, r in rows.items()} == dict.fromkeys(hosts, "cancelled")
    assert all(r.error == "cancelled by bob" for r in rows.values())
    assert controller_processes(marker) == []


async def test_a_playbook_changed_after_submission_is_refused_before_it_runs(
    db: Database, ssh_lab: Any, files_dir: Path, tmp_path: Path
) -> None:
    await two_hosts(db, ssh_lab)
    out = tmp_path / "out"
    out.mkdir()
    book = playbook(files_dir, DEPLOY)
    plan = ansible_plan(book, extra_vars={"out": str(out), "greeting": "hi", "release": "r1"})
    execution_id = await submit_plan(db, plan)
    async with db.connection() as conn:
        snapshot = (await executions.get(conn, "default", str(execution_id))).plan_snapshot
    assert set(snapshot["files"]["0"]) == {book}  # the playbook's digest is in the hash
    (files_dir / book).write_text(DEPLOY.replace("reloaded", "tampered"))
    status = await Engine(db, actor_id="tester").run("default", execution_id)
    assert status is Status.FAILED
    rows = await rows_of(db, execution_id)
    assert all(f"{book} changed after approval" in (r.error or "") for r in rows.values())
    assert list(out.iterdir()) == []  # nothing ran


async def test_a_file_added_beside_the_playbook_after_submission_is_refused(
    db: Database, ssh_lab: Any, files_dir: Path
) -> None:
    await two_hosts(db, ssh_lab)
    book = playbook(files_dir, FAIL_ON_ONE)
    playbook(files_dir, "- debug: msg=hi\n", "site/tasks/extra.yml")
    execution_id = await submit_plan(db, ansible_plan(book, extra_vars={"victim": "none"}))
    async with db.connection() as conn:
        snapshot = (await executions.get(conn, "default", str(execution_id))).plan_snapshot
    assert set(snapshot["files"]["0"]) == {book, "site/tasks/extra.yml"}
    playbook(files_dir, "- debug: msg=sneaked\n", "site/tasks/more.yml")
    status = await Engine(db, actor_id="tester").run("default", execution_id)
    assert status is Status.FAILED
    rows = await rows_of(db, execution_id)
    assert all(
        "site/tasks/more.yml was not part of the approved plan" in (r.error or "")
        for r in rows.values()
    )


async def test_the_step_timeout_stops_the_playbook(
    db: Database, ssh_lab: Any, files_dir: Path, tmp_path: Path
) -> None:
    hosts = await two_hosts(db, ssh_lab)
    out = tmp_path / "out"
    out.mkdir()
    marker = f"slow-{uuid.uuid4().hex[:10]}"
    book = playbook(files_dir, SLOW, f"{marker}/slow.yml")
    # long enough for ansible to reach the sleep on a loaded machine; far short of it
    plan = ansible_plan(book, extra_vars={"out": str(out), "marker": marker}, timeout_s=20)
    execution_id = await submit_plan(db, plan)
    status = await Engine(db, actor_id="tester").run("default", execution_id)
    assert status is not Status.COMPLETED
    rows = await rows_of(db, execution_id)
    assert {h: r.status for h, r in rows.items()} == dict.fromkeys(hosts, "timeout")
    assert all("timed out" in (r.error or "") for r in rows.values())
    assert f"TASK [take long ({marker})]" in rows[hosts[0]].output  # it was mid-playbook
    assert controller_processes(marker) == []


async def test_record_only_prepares_everything_and_runs_nothing(
    db: Database, ssh_lab: Any, files_dir: Path, tmp_path: Path
) -> None:
    hosts = await two_hosts(db, ssh_lab)
    out = tmp_path / "out"
    out.mkdir()
    book = playbook(files_dir, DEPLOY)
    plan = parse_plan(
        ansible_plan(book, extra_vars={"out": str(out), "greeting": "g", "release": "r"})
    )
    actor = await admin(db, "tester")
    request = Request(plan, "default", actor, uuid.uuid4().hex, record_only=True)
    execution_id = (await submit(db, request)).execution.id
    assert await Engine(db, actor_id="tester").run("default", execution_id) is Status.COMPLETED
    rows = await rows_of(db, uuid.UUID(str(execution_id)))
    for host in hosts:
        assert rows[host].status == "skipped"
        assert rows[host].output.startswith("skipped: record-only: would run playbook")
    assert list(out.iterdir()) == []


async def test_a_retry_runs_the_playbook_again_on_the_failed_target_only(
    db: Database, ssh_lab: Any, files_dir: Path
) -> None:
    hosts = await two_hosts(db, ssh_lab)
    book = playbook(files_dir, FAIL_ON_ONE)
    plan = ansible_plan(book, extra_vars={"victim": hosts[1]}, retries=1)
    execution_id = await submit_plan(db, plan)
    assert await Engine(db, actor_id="tester").run("default", execution_id) is Status.PARTIAL
    async with db.connection() as conn:
        attempts = [
            (r.target_asset_id, r.attempt, r.status)
            for r in await steps.list_for(conn, execution_id)
        ]
    assert sorted(attempts) == [
        (hosts[0], 1, "completed"),
        (hosts[1], 1, "failed"),
        (hosts[1], 2, "failed"),
    ]


BECOME = """
- hosts: all
  gather_facts: false
  tasks:
    - name: who
      command: id -un
      register: who
    - name: say
      debug:
        msg: "ran as {{ who.stdout }}"
"""


async def test_become_with_a_sudo_password_from_the_secret_store(
    db: Database, sudo_lab: Any, files_dir: Path, tmp_path: Path
) -> None:
    await secret_store.put(db, tmp_path, "default", "kv/sudo/ok", sudo_lab.password, "tester")
    (added,) = await add_ssh_assets(db, sudo_lab, sudo_lab.ports[:1], prefix="ans")
    # The lab's user has no home: temp files in /tmp, in a folder named after that user (a
    # suite running beside this one, in another worktree, has a user and folder of its own).
    remote_tmp = f"/tmp/.ansible-{sudo_lab.username}"
    async with db.connection() as conn:
        await assets.update(
            conn, "default", dataclasses.replace(added, vars={"ansible_remote_tmp": remote_tmp})
        )
    book = playbook(files_dir, BECOME, "become/site.yml")
    plan = ansible_plan(book, become=True, become_password={"secret": "kv/sudo/ok"})
    execution_id = await submit_plan(db, plan)
    engine = Engine(db, actor_id="tester", secrets=SecretResolver(db, tmp_path))
    try:
        status = await engine.run("default", execution_id)
    finally:
        shutil.rmtree(remote_tmp, ignore_errors=True)
    row = (await rows_of(db, execution_id))["ans-00"]
    assert status is Status.COMPLETED, (row.error, row.output)
    assert "say: ran as root" in row.output
    async with db.connection() as conn:
        events = await executions.events(conn, execution_id)
    assert sudo_lab.password not in row.output + str([e.payload for e in events])


PASSWORD_LOGIN = """
- hosts: all
  gather_facts: false
  tasks:
    - name: write a file
      copy:
        dest: "{{ out }}/{{ inventory_hostname }}.txt"
        content: "logged in\\n"
    - name: a playbook that prints the login password
      debug:
        msg: "password=[{{ ansible_password }}]"
"""


async def test_a_password_login_from_the_secret_store_masked_in_the_output(
    db: Database, password_lab: Any, files_dir: Path, tmp_path: Path
) -> None:
    assert password_lab.password is not None
    await secret_store.put(db, tmp_path, "default", "kv/ssh/pw", password_lab.password, "tester")
    (added,) = await add_ssh_assets(
        db, password_lab, password_lab.ports, prefix="anspw", credential_ref="kv/ssh/pw"
    )
    async with db.connection() as conn:  # the lab's shell has the worker's PATH (pyenv)
        python = {"ansible_python_interpreter": "/usr/bin/python3"}
        await assets.update(conn, "default", dataclasses.replace(added, vars=python))
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o777)
    book = playbook(files_dir, PASSWORD_LOGIN, "pw/site.yml")
    plan = ansible_plan(book, targets={"tags": {"role": "anspw"}}, extra_vars={"out": str(out)})
    execution_id = await submit_plan(db, plan)
    status = await Engine(db, actor_id="tester", secrets=SecretResolver(db, tmp_path)).run(
        "default", execution_id
    )
    row = (await rows_of(db, execution_id))["anspw-00"]
    assert status is Status.COMPLETED, (row.error, row.output)
    assert (out / "anspw-00.txt").read_text() == "logged in\n"
    assert "ok: [anspw-00] a playbook that prints the login password: ****" in row.output
    async with db.connection() as conn:
        events = await executions.events(conn, execution_id)
    assert password_lab.password not in row.output + str([e.payload for e in events])
