"""A changed SSH host key, tried as an attacker (or a re-installed host) would present it:
a real sshd whose host key file is regenerated between two connections, on the same port.

Refused as HOST KEY CHANGED with both fingerprints, never learned (not even under
accept-new), never added beside the old key by `known-hosts add` / `--scan`; only the
audited `known-hosts replace`, given the fingerprint verified out of band, changes it.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from opsconductor.db import assets, audit, connectors
from opsconductor.db.connection import Database
from opsconductor.errors import BadInput, DatabaseError, NotFound
from opsconductor.host_keys import (
    FingerprintMismatch,
    HostKey,
    HostKeyChanged,
    Verdict,
    check_stated,
    verdict,
)
from tests.helpers import add_ssh_assets, lab_key, run_plan
from tests.served import logged_in, opsc, serving
from tests.sshlab import free_ports, start_lab

HOST = "127.0.0.1"


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Any]:
    """An SSH server of this test's own (its key gets regenerated): OpenSSH's sshd when
    installed, as in CI."""
    server = start_lab(tmp_path / "sshd", free_ports(1))
    yield server
    server.stop()


def host_key(lab: Any) -> HostKey:
    return HostKey.parse(lab.keys.host_public)


def openssh_fingerprint(lab: Any, tmp_path: Path) -> str:
    """The fingerprint as `ssh-keygen -lf` prints it on the host (the out-of-band check)."""
    if shutil.which("ssh-keygen") is None:
        return host_key(lab).fingerprint
    pub = tmp_path / "host.pub"
    pub.write_text(lab.keys.host_public + "\n")
    listed = subprocess.run(["ssh-keygen", "-lf", str(pub)], capture_output=True, text=True)
    return listed.stdout.split()[1]


def touch_plan(tmp_path: Path, marker: Path) -> Path:
    plan = tmp_path / f"{marker.name}.yaml"
    plan.write_text(
        f"name: touch {marker.name}\nsteps:\n"
        "  - {name: touch, type: command, action_class: modify, targets: {tags: {role: box}},\n"
        f"     command: 'touch {marker}'}}\n"
    )
    return plan


def test_a_regenerated_host_key_is_refused_until_an_audited_replace(
    cli_env: dict[str, str], lab: Any, tmp_path: Path, database_url: str
) -> None:
    port = str(lab.ports[0])
    added = opsc(
        cli_env, "assets", "add", "box", "--connection", "ssh", "--address", HOST,
        "--port", port, "--username", lab.username,
        "--credential-ref", f"file:{lab_key(lab)}", "--tag", "role=box",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr

    # Connect and trust the first key.
    old = openssh_fingerprint(lab, tmp_path)
    trusted = opsc(cli_env, "known-hosts", "add", HOST, "--port", port, "--scan")
    assert trusted.returncode == 0, trusted.stderr
    assert f"trusted {HOST}:{port} {old}" in trusted.stdout
    first = tmp_path / "first"
    ran = opsc(cli_env, "run", str(touch_plan(tmp_path, first)))
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert first.exists()

    # Stop sshd, regenerate its host key file, start it again on the same port.
    lab.restart_with_new_host_key()
    new = openssh_fingerprint(lab, tmp_path)
    assert new != old

    second = tmp_path / "second"
    plan = touch_plan(tmp_path, second)
    refused = opsc(cli_env, "run", str(plan))
    assert refused.returncode == 1
    said = " ".join(refused.stdout.split())  # rich wraps long lines
    assert f"HOST KEY CHANGED for {HOST}:{port}" in said
    assert f"stored ssh-ed25519 {old}" in said and f"presented ssh-ed25519 {new}" in said
    assert "known-hosts add" not in said  # not the unknown-host advice
    assert not second.exists()  # nothing ran on the host

    # `add --scan` (and `add --key`) refuse to put the new key beside the old one.
    for how in (["--scan"], ["--key", lab.keys.host_public]):
        again = opsc(cli_env, "known-hosts", "add", HOST, "--port", port, *how)
        assert again.returncode == 1, again.stdout
        told = " ".join(again.stderr.split())
        assert "HOST KEY CHANGED" in told and old in told and new in told
        assert "opsc known-hosts replace" in told
    listed = opsc(cli_env, "known-hosts", "list")
    assert old in listed.stdout and new not in listed.stdout

    # Replacing needs the fingerprint the operator verified; the wrong one changes nothing.
    wrong = opsc(
        cli_env, "known-hosts", "replace", HOST, "--port", port, "--scan", "--fingerprint", old
    )
    assert wrong.returncode == 2 and "nothing was changed" in " ".join(wrong.stderr.split())
    no_flag = opsc(cli_env, "known-hosts", "replace", HOST, "--port", port, "--scan")
    assert no_flag.returncode == 2  # --fingerprint is required
    replaced = opsc(
        cli_env, "known-hosts", "replace", HOST, "--port", port, "--scan", "--fingerprint", new
    )
    assert replaced.returncode == 0, replaced.stderr
    assert f"replaced {HOST}:{port} {old} -> {new} (ssh-ed25519)" in replaced.stdout
    listed = opsc(cli_env, "known-hosts", "list")
    assert new in listed.stdout and old not in listed.stdout

    async def events() -> list[dict[str, Any]]:
        async with Database(database_url, max_size=1) as db, db.connection() as conn:
            return await audit.list_events(conn, "default")

    recorded = asyncio.run(events())
    assert [e["event_type"] for e in recorded] == ["host_key_replaced", "host_key_trusted"]
    event = recorded[0]
    assert event["actor_id"] == f"local-admin:{pwd.getpwuid(os.geteuid()).pw_name}"
    assert event["payload"]["host"] == HOST and event["payload"]["port"] == int(port)
    assert event["payload"]["old_fingerprints"] == [old]
    assert event["payload"]["new_fingerprint"] == new

    # After the replace, the connection works again.
    ran = opsc(cli_env, "run", str(plan), "-k", "after-replace")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert second.exists()


async def test_accept_new_never_learns_a_changed_key(
    db: Database, lab: Any, tmp_path: Path
) -> None:
    await add_ssh_assets(db, lab, lab.ports, trust=False, prefix="box")
    async with db.connection() as conn:
        await connectors.set_host_key_policy(conn, "default", "accept-new")
    marker = tmp_path / "ran"

    def plan(name: str) -> dict[str, Any]:
        return {
            "name": name,
            "steps": [
                {"name": "s", "type": "command", "action_class": "modify",
                 "targets": {"tags": {"role": "box"}}, "command": f"touch {marker}"}
            ],
        }  # fmt: skip

    status, _, _ = await run_plan(db, plan("first"))  # learned: trust on first use
    assert status == "completed" and marker.exists()
    learned = host_key(lab)
    marker.unlink()

    lab.restart_with_new_host_key()
    status, rows, _ = await run_plan(db, plan("second"))
    assert status == "failed" and not marker.exists()
    error = rows[0].error
    assert "HOST KEY CHANGED" in error
    assert learned.fingerprint in error and host_key(lab).fingerprint in error
    async with db.connection() as conn:
        stored = await connectors.known_host_keys(conn, "default", HOST, lab.ports[0])
    assert stored == [learned.text]


async def test_a_host_offering_only_another_key_type_is_a_change(
    db: Database, lab: Any, tmp_path: Path
) -> None:
    """An impersonator without the stored type's private key offers some other type."""
    (asset,) = await add_ssh_assets(db, lab, lab.ports, prefix="box")
    old = host_key(lab)
    lab.restart_with_new_host_key("ecdsa-sha2-nistp256")
    marker = tmp_path / "ran"
    plan = {
        "name": "p",
        "steps": [
            {"name": "s", "type": "command", "action_class": "modify",
             "targets": {"assets": [asset.asset_id]}, "command": f"touch {marker}"}
        ],
    }  # fmt: skip
    status, rows, _ = await run_plan(db, plan)
    assert status == "failed" and not marker.exists()
    error = rows[0].error
    assert "HOST KEY CHANGED" in error and "no key of a stored type" in error
    assert f"stored {old.describe()}" in error
    assert f"presented {host_key(lab).describe()}" in error


async def test_two_first_keys_learned_at_once_store_only_one(db: Database) -> None:
    """Two runs under accept-new racing on an unknown host (one of them talking to an
    impostor): the per-host lock lets exactly one key in; the other is a change."""
    keys = [HostKey.parse(k) for k in (_new_key(), _new_key())]
    async with db.connection() as conn:
        await assets.ensure_tenant(conn, "default")

    async def learn(key: HostKey) -> str:
        async with db.connection() as conn:
            try:
                await connectors.trust_host_key(
                    conn, "default", "w", HOST, 2222, key, via="accept-new"
                )
            except HostKeyChanged:
                return "refused"
            return "learned"

    outcomes = await asyncio.gather(*(learn(k) for k in keys))
    assert sorted(outcomes) == ["learned", "refused"]
    async with db.connection() as conn:
        stored = await connectors.known_host_keys(conn, "default", HOST, 2222)
    assert len(stored) == 1 and stored[0] == keys[outcomes.index("learned")].text


async def test_replace_rules_and_the_audit_trail_is_append_only(db: Database) -> None:
    ed1, ed2, rsa = (HostKey.parse(_new_key(a)) for a in ("ssh-ed25519", "ssh-ed25519", "ssh-rsa"))
    async with db.connection() as conn:
        await assets.ensure_tenant(conn, "default")
        with pytest.raises(NotFound):  # nothing to replace: a first key is `add`
            await connectors.replace_host_key(
                conn, "default", "admin", HOST, 22, ed1, stated_fingerprint=ed1.fingerprint
            )
        await connectors.trust_host_key(conn, "default", "admin", HOST, 22, ed1)
        with pytest.raises(HostKeyChanged):  # a second type is not added silently either
            await connectors.trust_host_key(conn, "default", "admin", HOST, 22, rsa)
        with pytest.raises(FingerprintMismatch):
            await connectors.replace_host_key(
                conn, "default", "admin", HOST, 22, rsa, stated_fingerprint=ed2.fingerprint
            )
        # A second key type, explicitly: keep the ed25519 key, add the rsa one.
        both = await connectors.replace_host_key(
            conn, "default", "admin", HOST, 22, rsa,
            stated_fingerprint=rsa.fingerprint, keep_other_types=True,
        )  # fmt: skip
        assert (both.old, both.kept) == ((), (ed1,))
        # Rotating the ed25519 key keeps the rsa one; a plain replace drops everything.
        rotated = await connectors.replace_host_key(
            conn, "default", "admin", HOST, 22, ed2,
            stated_fingerprint=ed2.fingerprint, keep_other_types=True,
        )  # fmt: skip
        assert (rotated.old, rotated.kept) == ((ed1,), (rsa,))
        stored = set(await connectors.known_host_keys(conn, "default", HOST, 22))
        assert stored == {ed2.text, rsa.text}
        whole = await connectors.replace_host_key(
            conn, "default", "admin", HOST, 22, ed1, stated_fingerprint=ed1.fingerprint
        )
        assert set(whole.old) == {ed2, rsa} and whole.kept == ()
        assert await connectors.known_host_keys(conn, "default", HOST, 22) == [ed1.text]

        events = await audit.list_events(conn, "default")
        assert [e["event_type"] for e in events] == [
            "host_key_replaced", "host_key_replaced", "host_key_replaced", "host_key_trusted",
        ]  # fmt: skip
        assert {e["actor_id"] for e in events} == {"admin"}
        for statement in (
            "UPDATE execution.audit_events SET actor_id = 'someone-else'",
            "DELETE FROM execution.audit_events",
        ):
            with pytest.raises(DatabaseError, match="append-only"):
                async with db.connection() as other:
                    await other.execute(statement)


def _new_key(algorithm: str = "ssh-ed25519") -> str:
    import asyncssh

    return asyncssh.generate_private_key(algorithm).export_public_key().decode()


def test_a_logged_in_shell_goes_through_the_same_rule(
    cli_env: dict[str, str], tmp_path: Path, database_url: str
) -> None:
    """`opsc login` then known-hosts: the API answers; an operator may not replace."""
    old, new = (HostKey.parse(_new_key()) for _ in range(2))
    with serving(cli_env) as (url, _):
        admin = logged_in(cli_env, url, "ada", "admin", config=tmp_path / "ada")
        operator = logged_in(cli_env, url, "olga", "operator", config=tmp_path / "olga")
        assert opsc(admin, "known-hosts", "add", "10.0.0.9", "--key", old.text).returncode == 0
        again = opsc(admin, "known-hosts", "add", "10.0.0.9", "--key", new.text)
        told = " ".join(again.stderr.split())
        assert again.returncode == 1 and "HOST KEY CHANGED" in told
        assert old.fingerprint in told and new.fingerprint in told
        replace = ["known-hosts", "replace", "10.0.0.9", "--key", new.text]
        denied = opsc(operator, *replace, "--fingerprint", new.fingerprint)
        assert denied.returncode == 2 and "may not manage assets" in denied.stderr
        done = opsc(admin, *replace, "--fingerprint", new.fingerprint)
        assert done.returncode == 0, done.stderr
        assert f"{old.fingerprint} -> {new.fingerprint}" in done.stdout

    async def events() -> list[dict[str, Any]]:
        async with Database(database_url, max_size=1) as db, db.connection() as conn:
            return await audit.list_events(conn, "default", "host_key_replaced")

    assert [e["actor_id"] for e in asyncio.run(events())] == ["ada"]


def test_the_rule_a_new_type_is_a_change_too() -> None:
    ed, ed2, ecdsa = (
        HostKey.parse(_new_key(a)) for a in ("ssh-ed25519", "ssh-ed25519", "ecdsa-sha2-nistp256")
    )
    assert verdict([], ed) is Verdict.UNKNOWN
    assert verdict([ed, ecdsa], ecdsa) is Verdict.TRUSTED  # any stored key of the set
    assert verdict([ed], ed2) is Verdict.CHANGED  # same type, other key
    assert verdict([ed], ecdsa) is Verdict.CHANGED  # a type not stored: not "just new"
    changed = str(HostKeyChanged(HOST, 22, [ed], ecdsa))
    assert changed.startswith(f"HOST KEY CHANGED for {HOST}:22: stored {ed.describe()}; ")
    assert f"presented {ecdsa.describe()}" in changed
    assert ecdsa.fingerprint not in changed.split("replace the stored key")[1]  # no copy-paste
    check_stated(f" {ed.fingerprint} ", ed)
    with pytest.raises(FingerprintMismatch):
        check_stated(ed2.fingerprint, ed)
    with pytest.raises(BadInput):
        HostKey.parse("ssh-ed25519 not-base64!")
