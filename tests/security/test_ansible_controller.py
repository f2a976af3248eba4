"""An ``ansible`` step's controller runs on the control plane, and a playbook runs code on
its controller (``delegate_to: localhost``, lookups). These try to reach the control
plane's files, environment and network from a playbook, and to weaken the connection
settings from a plan or an asset."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import pytest

from opsconductor.approvals import Decision, gate
from opsconductor.connectors import ansible_run
from opsconductor.db import auth, executions
from opsconductor.db.connection import Database
from opsconductor.engine import Engine
from opsconductor.errors import PlanError
from opsconductor.plan import parse_plan
from opsconductor.status_machine import Status
from tests.helpers import add_ssh_assets
from tests.security.local_support import needs_sandbox
from tests.test_ansible_step import ansible_plan, needs_ansible, playbook, rows_of, submit_plan

CANARY = f"control-plane-canary-{uuid.uuid4().hex}"

REACH_OUT = """
- hosts: all
  gather_facts: false
  tasks:
    - name: the worker's environment
      debug:
        msg: "env=[{{ lookup('env', 'OPSC_TEST_CANARY') }}]"
    - name: a control-plane file, by lookup
      debug:
        msg: "{{ lookup('file', canary_file) }}"
      ignore_errors: true
    - name: a control-plane file, delegated to localhost
      slurp:
        src: "{{ canary_file }}"
      delegate_to: localhost
      ignore_errors: true
    - name: the database's loopback port, from the controller
      wait_for:
        host: 127.0.0.1
        port: 5432
        timeout: 2
      delegate_to: localhost
      ignore_errors: true
    - name: a secret the plan hands in
      debug:
        msg: "pw={{ pw }}"
"""


@needs_sandbox
@needs_ansible
async def test_a_playbook_cannot_read_the_control_planes_files_env_or_network(
    db: Database,
    ssh_lab: Any,
    files_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    canary_file = tmp_path / "control-plane-secret.txt"
    canary_file.write_text(CANARY)
    canary_file.chmod(0o644)  # readable by anyone on this host: only the sandbox hides it
    monkeypatch.setenv("OPSC_TEST_CANARY", CANARY)
    monkeypatch.setenv("OPSC_SECRET_ENV_ANSIBLE_PW", "hunter2-ansible-secret")
    await add_ssh_assets(db, ssh_lab, [ssh_lab.ports[22]], prefix="ans")
    book = playbook(files_dir, REACH_OUT, "reach/out.yml")
    plan = ansible_plan(
        book,
        extra_vars={
            "canary_file": str(canary_file),
            "pw": {"secret": "env:OPSC_SECRET_ENV_ANSIBLE_PW"},
        },
    )
    execution_id = await submit_plan(db, plan)
    status = await Engine(db, actor_id="tester").run("default", execution_id)
    rows = await rows_of(db, execution_id)
    row = rows["ans-00"]
    assert status is Status.COMPLETED, (row.error, row.output)
    assert "env=[]" in row.output  # the controller has none of the worker's variables
    # not there at all: the controller's /tmp is its own, and only the staged playbook,
    # the Python it runs on, /usr and /etc are shown to it
    # (ansible-core words these failures differently from one release to the next)
    lookup = re.search(
        r"by lookup: .*(lookup had an issue accessing the file|Unable to access)", row.output
    )
    assert lookup, row.output
    assert re.search(
        f"delegated to localhost: file not found: {re.escape(str(canary_file))}", row.output, re.I
    ), row.output
    assert "Timeout when waiting for 127.0.0.1:5432" in row.output
    assert "pw=****" in row.output
    async with db.connection() as conn:
        events = await executions.events(conn, execution_id)
    everything = row.output + row.stderr + str(row.error) + str([e.payload for e in events])
    assert CANARY not in everything
    assert "hunter2-ansible-secret" not in everything


@pytest.mark.unit
def test_a_plan_cannot_set_connection_variables_through_extra_vars() -> None:
    for name in ("ansible_ssh_common_args", "ansible_host", "opsc_anything"):
        with pytest.raises(PlanError, match=r"steps\[0\]\.extra_vars: .*set by OpsConductor"):
            parse_plan(ansible_plan("site/x.yml", extra_vars={name: "-o StrictHostKeyChecking=no"}))


@pytest.mark.unit
def test_an_assets_inventory_variables_cannot_weaken_the_connection() -> None:
    host = ansible_run.Host(
        name="web1",
        address="10.0.0.5",
        port=2222,
        user="deploy",
        private_key="-----BEGIN OPENSSH PRIVATE KEY-----\n...",
        known_keys=("ssh-ed25519 AAAA",),
        variables={
            "ansible_ssh_common_args": "-o StrictHostKeyChecking=no",
            "ansible_ssh_extra_args": "-o UserKnownHostsFile=/dev/null",
            "ansible_host": "evil.example",
            "ansible_python_interpreter": "/usr/bin/python3",
            "app_port": 8080,
        },
    )
    found = ansible_run.host_vars(host, 0)
    assert "ansible_ssh_extra_args" not in found
    assert "ansible_ssh_common_args" not in found
    assert found["ansible_host"] == "10.0.0.5"
    # host key checking travels in the extra-vars, which nothing a playbook sets overrides
    enforced = ansible_run.connection_vars()
    assert "-o StrictHostKeyChecking=yes" in enforced["ansible_ssh_common_args"]
    assert enforced["ansible_ssh_extra_args"] == ""
    assert enforced["ansible_host_key_checking"] is True
    assert found["ansible_python_interpreter"] == "/usr/bin/python3"
    assert found["app_port"] == 8080
    assert ansible_run.known_hosts([host]) == "[10.0.0.5]:2222 ssh-ed25519 AAAA\n"


@pytest.mark.unit
def test_a_password_login_goes_through_askpass_never_sshpass_nor_an_assets_choice() -> None:
    """The password stays in the in-memory inventory and reaches ssh through Ansible's
    askpass (shared memory): never ``sshpass -p`` on a command line, whatever the asset or
    the playbook's variables say."""
    host = ansible_run.Host(
        name="db1",
        address="10.0.0.6",
        port=22,
        user="deploy",
        private_key="",
        known_keys=("ssh-ed25519 AAAA",),
        variables={
            "ansible_ssh_password_mechanism": "sshpass",
            "ansible_password": "not-the-credential",
            "ansible_ssh_private_key_file": "/root/.ssh/id_ed25519",
        },
        password="the-credential",
    )
    found = ansible_run.host_vars(host, 0)
    assert found["ansible_password"] == "the-credential"
    assert "ansible_ssh_password_mechanism" not in found
    assert "ansible_ssh_private_key_file" not in found
    assert ansible_run.connection_vars()["ansible_ssh_password_mechanism"] == "ssh_askpass"


@pytest.mark.unit
def test_two_targets_at_one_address_behind_two_bastions_keep_their_own_socket_and_keys() -> None:
    """Two sites may both use 10.0.0.5: each host must reach its own forwarded socket and be
    checked against its own trusted keys, not the other site's."""

    def at_site(name: str, key: str) -> ansible_run.Host:
        return ansible_run.Host(name, "10.0.0.5", 22, "deploy", "", (key,), {})

    hosts = [at_site("site-a", "ssh-ed25519 AAAA-a"), at_site("site-b", "ssh-ed25519 AAAA-b")]
    inventory = ansible_run.inventory(hosts)["all"]["hosts"]
    names = [inventory["site-a"]["ansible_host"], inventory["site-b"]["ansible_host"]]
    assert names == ["10.0.0.5", "opsc-target-1"]
    assert ansible_run.socket_map(hosts) == {
        "10.0.0.5:22": f"{ansible_run.SOCKETS}/0.sock",
        "opsc-target-1:22": f"{ansible_run.SOCKETS}/1.sock",
    }
    assert ansible_run.known_hosts(hosts) == (
        "10.0.0.5 ssh-ed25519 AAAA-a\nopsc-target-1 ssh-ed25519 AAAA-b\n"
    )


@needs_sandbox
@needs_ansible
async def test_an_untrusted_host_key_fails_that_target_only(
    db: Database, ssh_lab: Any, files_dir: Path, tmp_path: Path
) -> None:
    await add_ssh_assets(db, ssh_lab, [ssh_lab.ports[20]], prefix="ok")
    await add_ssh_assets(db, ssh_lab, [ssh_lab.ports[21]], prefix="unknown", trust=False)
    out = tmp_path / "out"
    out.mkdir()
    book = playbook(
        files_dir,
        "- hosts: all\n  gather_facts: false\n  tasks:\n"
        "    - copy: {dest: '{{ out }}/{{ inventory_hostname }}', content: x}\n",
        "keys/site.yml",
    )
    plan = ansible_plan(book, extra_vars={"out": str(out)})
    plan["steps"][0]["targets"] = {"assets": ["ok-00", "unknown-00"]}
    execution_id = await submit_plan(db, plan)
    await Engine(db, actor_id="tester").run("default", execution_id)
    rows = await rows_of(db, execution_id)
    assert rows["ok-00"].status == "completed"
    assert rows["unknown-00"].status == "failed"
    assert "not in this tenant's known_hosts" in (rows["unknown-00"].error or "")
    assert sorted(p.name for p in out.iterdir()) == ["ok-00"]


@needs_sandbox
@needs_ansible
async def test_a_playbook_changed_after_approval_goes_back_for_approval(
    db: Database, ssh_lab: Any, files_dir: Path, tmp_path: Path
) -> None:
    async with db.transaction() as conn:
        await auth.grant(conn, "default", "bob", "approver", granted_by="test")
    await add_ssh_assets(db, ssh_lab, [ssh_lab.ports[20]], prefix="ans")
    out = tmp_path / "out"
    out.mkdir()
    approved = (
        "- hosts: all\n  gather_facts: false\n  tasks:\n"
        "    - copy: {dest: '{{ out }}/{{ inventory_hostname }}', content: approved}\n"
    )
    book = playbook(files_dir, approved, "reviewed/site.yml")
    plan = ansible_plan(book, extra_vars={"out": str(out)})
    plan["approval_level"] = 2
    execution_id = await submit_plan(db, plan)
    async with db.connection() as conn:
        execution = await executions.get(conn, "default", str(execution_id))
    await gate.decide(
        db,
        tenant_id="default",
        execution_id=str(execution_id),
        actor_id="bob",
        decision=Decision.APPROVE,
        reviewed_hash=execution.plan_hash,
    )
    playbook(files_dir, approved.replace("approved", "edited"), "reviewed/site.yml")
    status = await Engine(db, actor_id="worker").run("default", execution_id)
    assert status is Status.PENDING_APPROVAL
    assert list(out.iterdir()) == []  # nothing ran
    async with db.connection() as conn:
        events = await executions.events(conn, execution_id)
    (invalidated,) = [e for e in events if e.event_type == "approval_invalidated"]
    assert invalidated.payload["why"].startswith(
        f"steps[0].playbook: {book} changed after approval"
    )


OVERRIDE = """
- hosts: all
  gather_facts: false
  vars:
    ansible_ssh_common_args: "-o StrictHostKeyChecking=no -o ProxyCommand=none"
    ansible_ssh_extra_args: "-o UserKnownHostsFile=/dev/null"
    ansible_host_key_checking: false
  tasks:
    - name: reached through our settings only
      command: "true"
"""


@needs_sandbox
@needs_ansible
async def test_a_playbooks_own_vars_cannot_replace_the_connection_settings(
    db: Database, ssh_lab: Any, files_dir: Path
) -> None:
    """Had the play's vars won, ssh would skip host key checking and go straight to the
    port (ProxyCommand=none), which the sandbox's empty network refuses: it runs because
    our settings (extra-vars, the highest precedence) stay in force."""
    await add_ssh_assets(db, ssh_lab, [ssh_lab.ports[21]], prefix="ans")
    book = playbook(files_dir, OVERRIDE, "override/site.yml")
    execution_id = await submit_plan(db, ansible_plan(book))
    status = await Engine(db, actor_id="tester").run("default", execution_id)
    row = (await rows_of(db, execution_id))["ans-00"]
    assert status is Status.COMPLETED, (row.error, row.output)
    assert "changed: [ans-00] reached through our settings only" in row.output
