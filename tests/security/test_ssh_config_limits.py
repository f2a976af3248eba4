"""A tenant's ssh_config cannot weaken host key checking, run a command on the worker, or
read a key file outside the tenant's files root (connectors/ssh_config.py honours only
Host, HostName, Port, User, IdentityFile, ProxyJump)."""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Any

from opsconductor.config import load_settings
from opsconductor.connectors.access import TenantAccess
from opsconductor.connectors.outcome import Outcome
from opsconductor.connectors.session import Connectors
from opsconductor.db import assets, connectors
from opsconductor.db.connection import Database
from opsconductor.inventory import Asset
from opsconductor.plan import CommandStep, parse_plan
from tests.helpers import lab_key


def _step() -> CommandStep:
    plan = {"name": "p", "steps": [{"name": "s", "targets": {"assets": ["x"]},
                                    "type": "command", "command": "echo reached"}]}  # fmt: skip
    step = parse_plan(plan).steps[0]
    assert isinstance(step, CommandStep)
    return step


async def _run(db: Database, tenant: str, asset: Asset) -> Outcome:
    settings = connectors.TenantSettings(record_only=False, host_key_policy="strict")
    session = Connectors(
        connectors.KnownHosts(db, tenant, "strict", "tester"),
        access=TenantAccess.of(load_settings(), tenant, settings),
    )
    try:
        return await session.execute(_step(), asset, where="steps[0]", timeout_s=20)
    finally:
        await session.aclose()


async def test_ssh_config_cannot_skip_host_keys_or_run_a_proxy_command(
    db: Database, ssh_lab: Any, tmp_path: Path
) -> None:
    tenant = "sshcfg-hostile"
    async with db.connection() as conn:
        await assets.ensure_tenant(conn, tenant)  # no host key trusted for the lab
    key = lab_key(ssh_lab, tenant)
    marker = tmp_path / "proxy-command-ran"
    root = load_settings().files_root / tenant
    (root / "ssh_config").write_text(
        "Host lab\n"
        "    HostName 127.0.0.1\n"
        f"    Port {ssh_lab.ports[0]}\n"
        f"    User {getpass.getuser()}\n"
        f"    IdentityFile {key}\n"
        "    StrictHostKeyChecking no\n"
        "    UserKnownHostsFile /dev/null\n"
        f"    ProxyCommand touch {marker}\n"
        "Include /etc/ssh/ssh_config\n"
    )
    outcome = await _run(db, tenant, Asset("lab", "lab.test", "lab", "test", "ssh"))
    assert outcome.status == "failed"
    assert "not in this tenant's known_hosts" in str(outcome.error)
    assert not marker.exists()

    # Trusted, the same file connects: the refusal above was the host key, nothing else.
    async with db.connection() as conn:
        await connectors.add_known_host(
            conn, tenant, "127.0.0.1", ssh_lab.ports[0], ssh_lab.keys.host_public, "test"
        )
    reached = await _run(db, tenant, Asset("lab", "lab.test", "lab", "test", "ssh"))
    assert (reached.status, reached.output) == ("completed", "reached\n"), reached.error
    assert not marker.exists()


async def test_identity_file_is_confined_to_the_files_root(db: Database, ssh_lab: Any) -> None:
    tenant = "sshcfg-escape"
    async with db.connection() as conn:
        await assets.ensure_tenant(conn, tenant)
        await connectors.add_known_host(
            conn, tenant, "127.0.0.1", ssh_lab.ports[0], ssh_lab.keys.host_public, "test"
        )
    root = load_settings().files_root / tenant
    root.mkdir(parents=True, exist_ok=True)
    (root / "ssh_config").write_text(
        f"Host lab\n  HostName 127.0.0.1\n  Port {ssh_lab.ports[0]}\n"
        f"  IdentityFile {ssh_lab.keys.client_key_path}\n"
    )
    outcome = await _run(db, tenant, Asset("lab", "lab.test", "lab", "test", "ssh"))
    assert outcome.status == "failed"
    assert "outside this tenant's files root" in str(outcome.error)
