"""SSH through a bastion, against real sshd processes.

The target sshd listens on 127.0.0.1 inside a network namespace of its own: nothing outside
that namespace can reach it. The bastion sshd runs in the same namespace and listens on the
namespace's side of a veth pair, the one address this machine (the worker) can reach. So a
step that reaches the target went through the bastion; a direct connection is refused.
"""

from __future__ import annotations

import getpass
import logging
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from opsconductor.config import load_settings
from opsconductor.connectors.access import TenantAccess
from opsconductor.connectors.outcome import Outcome
from opsconductor.connectors.session import Connectors
from opsconductor.db import assets, connectors
from opsconductor.db.connection import Database
from opsconductor.inventory import Asset
from opsconductor.plan import CommandStep, parse_plan
from opsconductor.status_machine import Status
from tests.helpers import run_plan
from tests.security.local_support import needs_sandbox
from tests.sshlab import SSHD, Keys
from tests.test_ansible_step import needs_ansible


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


def _why_not() -> str | None:
    if SSHD is None:
        return "no sshd binary on this machine"
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    name = f"opsc-bprobe-{os.getpid()}"
    try:
        _ip("netns", "add", name)
    except (OSError, subprocess.CalledProcessError) as exc:
        return f"cannot create a network namespace here: {exc}"
    _ip("netns", "del", name)
    return None


@dataclass
class Site:
    netns: str
    #: the bastion's address (the namespace's side of the veth pair) and port
    bastion_address: str
    bastion_port: int
    #: the target listens on 127.0.0.1 inside the namespace only
    target_port: int
    bastion_keys: Keys
    target_keys: Keys


def _start_sshd(netns: str, keys: Keys, address: str, port: int) -> subprocess.Popen[bytes]:
    folder = keys.folder
    config = folder / "sshd_config"
    config.write_text(
        f"ListenAddress {address}:{port}\n"
        f"HostKey {keys.host_key_path}\n"
        f"AuthorizedKeysFile {folder / 'authorized_keys'}\n"
        f"PidFile {folder / 'sshd.pid'}\n"
        "StrictModes no\nPermitRootLogin prohibit-password\nUsePAM no\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "AllowTcpForwarding yes\nLogLevel ERROR\nSetEnv SHLVL=1\n"
    )
    assert SSHD is not None
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    process = subprocess.Popen(
        ["ip", "netns", "exec", netns, SSHD, "-D", "-e", "-f", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=open(folder / "sshd.log", "ab"),  # noqa: SIM115 - lives with sshd
    )
    deadline = time.monotonic() + 15
    while True:  # listening, as seen from inside the namespace
        if process.poll() is not None:
            raise RuntimeError(f"sshd exited with {process.returncode}")
        found = subprocess.run(
            ["ip", "netns", "exec", netns, "ss", "-ltnH", f"sport = :{port}"],
            capture_output=True,
            text=True,
        )
        if found.stdout.strip():
            return process
        if time.monotonic() > deadline:
            raise RuntimeError(f"sshd does not listen on {address}:{port}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    reason = _why_not()
    if reason is not None:
        pytest.skip(f"bastion test needs a network namespace and sshd: {reason}")
    tag = os.getpid() % 10000
    netns, outer, inner = f"opsc-bst-{tag}", f"obst{tag}o", f"obst{tag}i"
    subnet = f"172.29.{tag % 250}"  # apart from test_scale_out's 10.x nets
    _ip("netns", "add", netns)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
        _ip("link", "set", inner, "netns", netns)
        _ip("addr", "add", f"{subnet}.1/24", "dev", outer)
        _ip("link", "set", outer, "up")
        _ip("-n", netns, "addr", "add", f"{subnet}.2/24", "dev", inner)
        _ip("-n", netns, "link", "set", inner, "up")
        _ip("-n", netns, "link", "set", "lo", "up")
        folder = tmp_path_factory.mktemp("bastion")
        found = Site(
            netns, f"{subnet}.2", 2222, 2223, Keys(folder / "bastion"), Keys(folder / "target")
        )
        processes.append(_start_sshd(netns, found.bastion_keys, found.bastion_address, 2222))
        processes.append(_start_sshd(netns, found.target_keys, "127.0.0.1", 2223))
        yield found
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(10)
        subprocess.run(["ip", "link", "del", outer], capture_output=True)
        _ip("netns", "del", netns)


def _key_into_root(keys: Keys, tenant: str, name: str) -> str:
    root = load_settings().files_root / tenant
    root.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(keys.client_key_path, root / name)
    (root / name).chmod(0o600)
    return name


async def _inventory(
    db: Database, site: Site, tenant: str, *, trust_target: bool = True, trust_bastion: bool = True
) -> None:
    """A bastion asset and a target behind it, each with its own key; both host keys
    trusted unless told otherwise."""
    user = getpass.getuser()
    bastion_key = _key_into_root(site.bastion_keys, tenant, "bastion_key")
    target_key = _key_into_root(site.target_keys, tenant, "target_key")
    async with db.connection() as conn:
        await assets.ensure_tenant(conn, tenant)
        for asset in (
            Asset("bastion", "bastion.test", site.bastion_address, "test", "ssh",
                  port=site.bastion_port, username=user, credential_ref=f"file:{bastion_key}"),
            Asset("inner", "inner.test", "127.0.0.1", "test", "ssh", port=site.target_port,
                  username=user, credential_ref=f"file:{target_key}", proxy_jump="bastion"),
        ):  # fmt: skip
            await assets.add(conn, tenant, asset)
        if trust_bastion:
            await connectors.add_known_host(
                conn, tenant, site.bastion_address, site.bastion_port,
                site.bastion_keys.host_public, "test",
            )  # fmt: skip
        if trust_target:
            await connectors.add_known_host(
                conn, tenant, "127.0.0.1", site.target_port, site.target_keys.host_public, "test"
            )


def _session(db: Database, tenant: str, jump_hosts: dict[str, Asset]) -> Connectors:
    settings = connectors.TenantSettings(record_only=False, host_key_policy="strict")
    return Connectors(
        connectors.KnownHosts(db, tenant, "strict", "tester"),
        access=TenantAccess.of(load_settings(), tenant, settings),
        jump_hosts=jump_hosts,
    )


def _command(text: str) -> CommandStep:
    plan = {"name": "p", "steps": [{"name": "s", "targets": {"assets": ["x"]},
                                    "type": "command", "command": text}]}  # fmt: skip
    step = parse_plan(plan).steps[0]
    assert isinstance(step, CommandStep)
    return step


async def _run_on(db: Database, tenant: str, asset: Asset, jump: dict[str, Asset]) -> Outcome:
    session = _session(db, tenant, jump)
    try:
        return await session.execute(
            _command("echo $SSH_CONNECTION"),
            asset,
            where="steps[0]",
            timeout_s=20,
        )
    finally:
        await session.aclose()


async def test_a_plan_step_reaches_a_target_only_the_bastion_can_reach(
    db: Database, site: Site
) -> None:
    tenant = "bastion-run"
    await _inventory(db, site, tenant)
    async with db.connection() as conn:
        inner = await assets.get(conn, tenant, "inner")
    assert inner is not None

    # Directly, the target's port is closed: 127.0.0.1 here is not the namespace's.
    direct = await _run_on(db, tenant, Asset(**{**inner.__dict__, "proxy_jump": None}), {})
    assert direct.status == "failed"
    assert direct.error is not None and "cannot connect" in direct.error

    plan = {
        "name": "through-the-bastion",
        "steps": [{"name": "where", "type": "command", "targets": {"assets": ["inner"]},
                   "command": "echo $SSH_CONNECTION"}],
    }  # fmt: skip
    status, rows, _ = await run_plan(db, plan, tenant=tenant)
    assert status is Status.COMPLETED, [(r.status, r.error) for r in rows]
    # sshd names the connection's two ends: the bastion's own loopback to the target's port.
    client, _, server, port = rows[0].output.split()
    assert (client, server, port) == ("127.0.0.1", "127.0.0.1", str(site.target_port))


async def test_the_targets_host_key_is_checked_through_the_bastion(
    db: Database, site: Site
) -> None:
    tenant = "bastion-keys"
    await _inventory(db, site, tenant, trust_target=False)
    async with db.connection() as conn:
        bastion = await assets.get(conn, tenant, "bastion")
        inner = await assets.get(conn, tenant, "inner")
    assert bastion is not None and inner is not None
    jump = {"bastion": bastion}

    unknown = await _run_on(db, tenant, inner, jump)
    assert unknown.status == "failed"
    assert "127.0.0.1:2223 via" in str(unknown.error)
    assert "not in this tenant's known_hosts" in str(unknown.error)

    impostor = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
    async with db.connection() as conn:
        await connectors.add_known_host(
            conn, tenant, "127.0.0.1", site.target_port, " ".join(impostor.split()[:2]), "test"
        )
    changed = await _run_on(db, tenant, inner, jump)
    assert changed.status == "failed"
    assert "HOST KEY CHANGED" in str(changed.error).upper()


async def test_an_unknown_bastion_key_stops_before_the_target(db: Database, site: Site) -> None:
    tenant = "bastion-untrusted"
    await _inventory(db, site, tenant, trust_bastion=False)
    async with db.connection() as conn:
        bastion = await assets.get(conn, tenant, "bastion")
        inner = await assets.get(conn, tenant, "inner")
    assert bastion is not None and inner is not None
    outcome = await _run_on(db, tenant, inner, {"bastion": bastion})
    assert outcome.status == "failed"
    assert "bastion:" in str(outcome.error)
    assert "not in this tenant's known_hosts" in str(outcome.error)


async def test_the_tenants_ssh_config_names_host_port_user_key_and_proxyjump(
    db: Database, site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    tenant = "bastion-config"
    await _inventory(db, site, tenant)
    root = load_settings().files_root / tenant
    (root / "ssh_config").write_text(
        "Host inner-alias\n"
        "    HostName 127.0.0.1\n"
        f"    Port {site.target_port}\n"
        "    IdentityFile target_key\n"
        "    ProxyJump jump\n"
        "Host jump\n"
        f"    HostName {site.bastion_address}\n"
        f"    Port {site.bastion_port}\n"
        f"    User {getpass.getuser()}\n"
        "    IdentityFile bastion_key\n"
        "    StrictHostKeyChecking no\n"
    )
    # Everything but the name comes from the config: no port, login, key or bastion here.
    alias = Asset("aliased", "aliased.test", "inner-alias", "test", "ssh")
    with caplog.at_level(logging.WARNING):
        outcome = await _run_on(db, tenant, alias, {})
    assert outcome.status == "completed", outcome.error
    assert outcome.output is not None
    assert outcome.output.split()[2:] == ["127.0.0.1", str(site.target_port)]
    assert "StrictHostKeyChecking is not supported; ignored" in caplog.text


BEHIND_THE_BASTION = """
- hosts: all
  gather_facts: false
  tasks:
    - name: write where the connection came from
      shell: echo "$SSH_CONNECTION" > {{ out }}/{{ inventory_hostname }}.txt
"""


def _ansible_plan(book: str, out: Path) -> dict[str, Any]:
    return {
        "name": "ansible-through-the-bastion",
        # timeout: not the policy's 8 s (see tests/test_ansible_step.py: ansible_plan)
        "steps": [{"name": "configure", "type": "ansible", "targets": {"assets": ["inner"]},
                   "playbook": book, "extra_vars": {"out": str(out)}, "timeout_s": 60}],
    }  # fmt: skip


@needs_sandbox
@needs_ansible
async def test_an_ansible_step_reaches_a_target_only_the_bastion_can_reach(
    db: Database, site: Site, tmp_path: Path
) -> None:
    tenant = "bastion-ansible"
    await _inventory(db, site, tenant)
    # From the worker's namespace the target's port is closed: only the bastion reaches it.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", site.target_port), timeout=5).close()
    root = load_settings().files_root / tenant
    (root / "site").mkdir(parents=True, exist_ok=True)
    (root / "site" / "where.yml").write_text(BEHIND_THE_BASTION)
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o777)

    status, rows, _ = await run_plan(db, _ansible_plan("site/where.yml", out), tenant=tenant)
    assert status is Status.COMPLETED, [(r.status, r.error, r.output) for r in rows]
    assert "changed: [inner] write where the connection came from" in rows[0].output
    # Written on the target, by a connection from the bastion's own loopback to its port.
    client, _, server, port = (out / "inner.txt").read_text().split()
    assert (client, server, port) == ("127.0.0.1", "127.0.0.1", str(site.target_port))


@needs_sandbox
@needs_ansible
async def test_an_ansible_target_behind_an_untrusted_bastion_fails_before_any_playbook(
    db: Database, site: Site, tmp_path: Path
) -> None:
    tenant = "bastion-ansible-untrusted"
    await _inventory(db, site, tenant, trust_bastion=False)
    root = load_settings().files_root / tenant
    (root / "site").mkdir(parents=True, exist_ok=True)
    (root / "site" / "where.yml").write_text(BEHIND_THE_BASTION)
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o777)
    status, rows, _ = await run_plan(db, _ansible_plan("site/where.yml", out), tenant=tenant)
    assert status is Status.FAILED
    assert "bastion:" in str(rows[0].error)
    assert "not in this tenant's known_hosts" in str(rows[0].error)
    assert not (out / "inner.txt").exists()
