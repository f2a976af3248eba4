"""The SSH connector against a real SSH server on loopback (tests/sshlab.py)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from opsconductor.cancellation import request_cancel
from opsconductor.config import load_settings
from opsconductor.connectors import ssh, ssh_run
from opsconductor.connectors.access import TenantAccess
from opsconductor.connectors.credentials import resolve_credential
from opsconductor.connectors.session import Connectors
from opsconductor.db import connectors, executions
from opsconductor.db.connection import Database
from opsconductor.engine import Engine
from opsconductor.host_keys import HostKey
from opsconductor.inventory import Asset
from opsconductor.plan import parse_plan
from opsconductor.status_machine import Status
from opsconductor.submission import Request, submit
from tests.helpers import add_ssh_assets, admin, run_plan

# Ports 0-3 of the lab are for these tests; the fan-out tests use the others.
PORT = 0


def step(**fields: Any) -> Any:
    document = {"name": "p", "steps": [{"name": "s", "targets": {"assets": ["x"]}, **fields}]}
    return parse_plan(document).steps[0]


def session(db: Database, policy: str = "strict") -> Connectors:
    tenant = connectors.TenantSettings(record_only=False, host_key_policy=policy)
    return Connectors(
        connectors.KnownHosts(db, "default", policy, "tester"),
        access=TenantAccess.of(load_settings(), "default", tenant),
    )


async def one_asset(db: Database, lab: Any, port_index: int = PORT, **kw: Any) -> Asset:
    return (await add_ssh_assets(db, lab, [lab.ports[port_index]], **kw))[0]


def processes_matching(pattern: str) -> list[str]:
    found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True)
    return found.stdout.split()


async def test_command_exit_code_stdout_and_stderr_with_key_auth(
    db: Database, ssh_lab: Any
) -> None:
    asset = await one_asset(db, ssh_lab)
    conns = session(db)
    try:
        outcome = await conns.execute(
            step(
                type="command",
                command="echo out-$GREETING; echo err >&2; exit 3",
                env={"GREETING": "hi there"},
            ),
            asset,
            where="steps[0]",
            timeout_s=10,
        )
    finally:
        await conns.aclose()
    assert (outcome.status, outcome.exit_code) == ("failed", 3)
    assert outcome.output == "out-hi there\n"
    assert outcome.stderr == "err\n"  # the pid line the connector reads is not in it


async def test_password_auth_and_a_wrong_password(
    db: Database, password_lab: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPSC_SECRET_ENV_SSH_PW", "s3cret-pw")
    monkeypatch.setenv("OPSC_SECRET_ENV_SSH_BAD_PW", "wrong")
    good = await one_asset(db, password_lab, credential_ref="env:OPSC_SECRET_ENV_SSH_PW")
    conns = session(db)
    try:
        ok = await conns.execute(
            step(type="command", command="id -un"), good, where="steps[0]", timeout_s=10
        )
    finally:
        await conns.aclose()
    assert ok.status == "completed", ok
    assert ok.output.strip() == password_lab.username

    async with db.connection() as conn:
        await conn.execute(
            "UPDATE execution.assets SET credential_ref = 'env:OPSC_SECRET_ENV_SSH_BAD_PW'"
            " WHERE asset_id = %s",
            (good.asset_id,),
        )
    bad = Asset(**{**good.__dict__, "credential_ref": "env:OPSC_SECRET_ENV_SSH_BAD_PW"})
    conns = session(db)
    try:
        refused = await conns.execute(
            step(type="command", command="id -un"), bad, where="steps[0]", timeout_s=10
        )
    finally:
        await conns.aclose()
    assert refused.status == "failed"
    assert "authentication failed" in (refused.error or "")


async def test_unknown_host_key_is_refused_and_nothing_runs(
    db: Database, ssh_lab: Any, tmp_path: Path
) -> None:
    asset = await one_asset(db, ssh_lab, trust=False)
    marker = tmp_path / "ran"
    conns = session(db)
    try:
        outcome = await conns.execute(
            step(type="command", command=f"touch {marker}"),
            asset,
            where="steps[0]",
            timeout_s=10,
        )
    finally:
        await conns.aclose()
    assert outcome.status == "failed"
    assert "not in this tenant's known_hosts" in (outcome.error or "")
    assert not marker.exists()


async def test_a_changed_host_key_is_refused_even_under_accept_new(
    db: Database, ssh_lab: Any
) -> None:
    asset = await one_asset(db, ssh_lab, trust=False)
    other = ssh.asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
    async with db.connection() as conn:
        await connectors.add_known_host(
            conn, "default", "127.0.0.1", asset.port or 22, " ".join(other.split()[:2]), "t"
        )
    conns = session(db, policy="accept-new")
    try:
        outcome = await conns.execute(
            step(type="command", command="true"), asset, where="steps[0]", timeout_s=10
        )
    finally:
        await conns.aclose()
    assert outcome.status == "failed"
    error = outcome.error or ""
    assert "HOST KEY CHANGED" in error and "not in this tenant's known_hosts" not in error
    stored, presented = HostKey.parse(other), HostKey.parse(ssh_lab.keys.host_public)
    assert f"stored {stored.describe()}" in error
    assert f"presented {presented.describe()}" in error
    async with db.connection() as conn:  # accept-new learned nothing beside the old key
        keys = await connectors.known_host_keys(conn, "default", "127.0.0.1", asset.port or 22)
    assert keys == [stored.text]


async def test_accept_new_is_opt_in_and_records_the_first_key(db: Database, ssh_lab: Any) -> None:
    asset = await one_asset(db, ssh_lab, port_index=1, trust=False)
    conns = session(db, policy="accept-new")
    try:
        outcome = await conns.execute(
            step(type="command", command="true"), asset, where="steps[0]", timeout_s=10
        )
    finally:
        await conns.aclose()
    assert outcome.status == "completed", outcome
    async with db.connection() as conn:
        keys = await connectors.known_host_keys(conn, "default", "127.0.0.1", asset.port or 22)
        policy = (await connectors.tenant_settings(conn, "default")).host_key_policy
    assert keys == [ssh_lab.keys.host_public]
    assert policy == "strict"  # the default a tenant starts with


async def test_script_is_uploaded_run_and_removed(db: Database, ssh_lab: Any) -> None:
    asset = await one_asset(db, ssh_lab)
    script = 'echo "path=$0"\necho "args=$1,$2 env=$MODE"\nexit 4\n'
    conns = session(db)
    try:
        outcome = await conns.execute(
            step(type="script", script=script, args=["a b", "c"], env={"MODE": "blue"}),
            asset,
            where="steps[0]",
            timeout_s=10,
        )
    finally:
        await conns.aclose()
    assert (outcome.status, outcome.exit_code) == ("failed", 4)
    lines = outcome.output.splitlines()
    assert lines[1] == "args=a b,c env=blue"
    uploaded = Path(lines[0].removeprefix("path="))
    assert uploaded.name.startswith("opsc-script-")
    assert not uploaded.exists()  # noqa: ASYNC240 - the loopback target shares our disk


async def test_sftp_copy_with_checksum_and_mode(
    db: Database, ssh_lab: Any, tmp_path: Path, files_dir: Path
) -> None:
    asset = await one_asset(db, ssh_lab)
    src = files_dir / "payload.bin"
    data = os.urandom(300_000)
    src.write_bytes(data)
    dest = tmp_path / "copied" / "payload.bin"
    dest.parent.mkdir()
    dest.write_bytes(b"old contents")
    conns = session(db)
    try:
        outcome = await conns.execute(
            step(type="file", src=str(src), dest=str(dest), mode="0640"),
            asset,
            where="steps[0]",
            timeout_s=10,
        )
        missing = await conns.execute(
            step(type="file", src="nope", dest=str(dest)),
            asset,
            where="steps[0]",
            timeout_s=10,
        )
    finally:
        await conns.aclose()
    digest = hashlib.sha256(data).hexdigest()
    assert outcome.status == "completed", outcome
    assert f"sha256 {digest} verified" in outcome.output
    assert dest.read_bytes() == data
    assert dest.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in dest.parent.iterdir()) == ["payload.bin"]  # no temp left
    assert missing.status == "failed"
    assert (missing.error or "").startswith("steps[0].src: cannot read")


async def _pool(db: Database, lab: Any) -> tuple[ssh.SshPool, ssh.SshTarget]:
    asset = await one_asset(db, lab)
    pool = ssh.SshPool(
        connectors.KnownHosts(db, "default", "strict", "tester"),
        lambda ref: resolve_credential(ref, load_settings().files_root / "default"),
    )
    target = ssh.SshTarget("127.0.0.1", asset.port or 22, lab.username, asset.credential_ref)
    return pool, target


async def test_cancel_kills_a_remote_sleep(db: Database, ssh_lab: Any) -> None:
    pool, target = await _pool(db, ssh_lab)
    marker = f"{uuid.uuid4().int % 100_000}.25"  # a sleep nobody else runs
    cancel = asyncio.Event()
    try:
        conn = await pool.connection(target)
        running = asyncio.create_task(
            ssh_run.run_command(conn, f"sleep {marker}; echo survived", timeout_s=60, cancel=cancel)
        )
        while not processes_matching(f"sleep {marker}"):  # noqa: ASYNC110 - no event to await
            await asyncio.sleep(0.02)
        cancel.set()
        result = await running
    finally:
        await pool.close()
    assert result.cancelled and not result.timed_out
    assert "survived" not in result.stdout
    assert processes_matching(f"sleep {marker}") == []


async def test_timeout_kills_the_remote_process_group(db: Database, ssh_lab: Any) -> None:
    pool, target = await _pool(db, ssh_lab)
    marker = f"{uuid.uuid4().int % 100_000}.75"
    try:
        conn = await pool.connection(target)
        # The sleep is a grandchild in the background: only a group kill reaches it.
        result = await ssh_run.run_command(conn, f"(sleep {marker}) & wait", timeout_s=0.5)
        again = await ssh_run.run_command(conn, "echo still usable", timeout_s=10)
    finally:
        await pool.close()
    assert result.timed_out
    assert processes_matching(f"sleep {marker}") == []
    assert again.stdout == "still usable\n"


async def test_steps_on_one_target_share_one_connection(db: Database, ssh_lab: Any) -> None:
    await add_ssh_assets(db, ssh_lab, [ssh_lab.ports[2]], prefix="reuse")
    plan = {
        "name": "reuse",
        "steps": [
            {
                "name": f"s{i}",
                "type": "command",
                "targets": {"tags": {"role": "reuse"}},
                "command": "echo $SSH_CONNECTION",
            }
            for i in range(3)
        ],
    }
    status, rows, _ = await run_plan(db, plan)
    assert status == "completed"
    # SSH_CONNECTION names the client's source port: one connection, one port, 3 steps.
    client_ports = {row.output.split()[1] for row in rows}
    assert len(rows) == 3 and len(client_ports) == 1


async def test_cancelling_a_running_execution_kills_the_remote_sleep(
    db: Database, ssh_lab: Any
) -> None:
    await add_ssh_assets(db, ssh_lab, [ssh_lab.ports[2]], prefix="cancel")
    marker = f"{uuid.uuid4().int % 100_000}.125"
    plan = {
        "name": "long sleep",
        "steps": [
            {
                "name": "sleep",
                "type": "command",
                "targets": {"tags": {"role": "cancel"}},
                "command": f"sleep {marker}",
                "timeout_s": 300,
            },
        ],
    }
    submitted = await submit(db, Request(parse_plan(plan), "default", await admin(db, "tester")))
    execution_id = submitted.execution.id
    running = asyncio.create_task(Engine(db, actor_id="tester").run("default", execution_id))
    while not processes_matching(f"sleep {marker}"):  # noqa: ASYNC110 - no event to await
        await asyncio.sleep(0.02)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert processes_matching(f"sleep {marker}") == []
    async with db.connection() as conn:
        execution = await executions.get(conn, "default", str(execution_id))
    assert execution.status == "cancelled"


async def test_fetch_from_a_target_with_checksum(
    db: Database, ssh_lab: Any, tmp_path: Path, files_dir: Path
) -> None:
    asset = await one_asset(db, ssh_lab)
    remote = tmp_path / "remote" / "app.log"
    remote.parent.mkdir()
    data = os.urandom(200_000)
    remote.write_bytes(data)
    conns = session(db)
    try:
        outcome = await conns.execute(
            step(
                type="file",
                direction="fetch",
                src=str(remote),
                dest="fetched/{{ asset.id }}.log",
                mode="0600",
            ),
            asset,
            where="steps[0]",
            timeout_s=10,
        )
        missing = await conns.execute(
            step(
                type="file",
                direction="fetch",
                src=str(tmp_path / "nope"),
                dest=str(files_dir / "fetched" / "{{ asset.id }}.nope"),
            ),
            asset,
            where="steps[0]",
            timeout_s=10,
        )
    finally:
        await conns.aclose()
    fetched = files_dir / "fetched" / f"{asset.asset_id}.log"
    assert outcome.status == "completed", outcome
    assert f"sha256 {hashlib.sha256(data).hexdigest()} verified" in outcome.output
    assert fetched.read_bytes() == data
    assert fetched.stat().st_mode & 0o777 == 0o600
    assert missing.status == "failed"
    assert sorted(p.name for p in fetched.parent.iterdir()) == [fetched.name]  # no temp left


async def test_engine_resolves_ssh_credentials_as_audited_secrets(
    db: Database, password_lab: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPSC_SECRET_ENV_SSH_PW2", "s3cret-pw")
    await add_ssh_assets(
        db,
        password_lab,
        password_lab.ports,
        prefix="pw",
        credential_ref="env:OPSC_SECRET_ENV_SSH_PW2",
    )
    plan = {
        "name": "password login",
        "steps": [
            {
                "name": "who",
                "type": "command",
                "targets": {"tags": {"role": "pw"}},
                "command": "id -un",
            }
        ],
    }
    status, rows, execution_id = await run_plan(db, plan)
    assert status == "completed", rows
    assert rows[0].output.strip() == password_lab.username
    async with db.connection() as conn:
        events = await executions.events(conn, execution_id)
    resolved = [e.payload for e in events if e.event_type == "secret_resolved"]
    assert [(p["path"], p["backend"]) for p in resolved] == [("env:OPSC_SECRET_ENV_SSH_PW2", "env")]
    assert "s3cret-pw" not in str([e.payload for e in events])


async def test_a_cancel_request_stops_the_remote_sleep_and_records_who(
    db: Database, ssh_lab: Any
) -> None:
    await add_ssh_assets(db, ssh_lab, [ssh_lab.ports[2]], prefix="asked")
    marker = f"{uuid.uuid4().int % 100_000}.375"
    plan = {
        "name": "sleep to be cancelled",
        "steps": [
            {
                "name": "sleep",
                "type": "command",
                "targets": {"tags": {"role": "asked"}},
                "command": f"sleep {marker}",
                "timeout_s": 300,
            },
        ],
    }
    submitted = await submit(db, Request(parse_plan(plan), "default", await admin(db, "tester")))
    execution_id = submitted.execution.id
    running = asyncio.create_task(Engine(db, actor_id="tester").run("default", execution_id))
    while not processes_matching(f"sleep {marker}"):  # noqa: ASYNC110 - no event to await
        await asyncio.sleep(0.02)
    outcome = await request_cancel(db, "default", str(execution_id), "oncall")
    assert outcome.result == "requested"
    assert await running == Status.CANCELLED
    assert processes_matching(f"sleep {marker}") == []
    async with db.connection() as conn:
        execution = await executions.get(conn, "default", str(execution_id))
    assert execution.cancelled_by == "oncall"
