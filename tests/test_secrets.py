"""Secrets: sealed at rest, resolved just in time from store, environment and Vault, audited
without their values; a missing one stops its step before anything runs."""

from __future__ import annotations

import os
import stat
import uuid
from pathlib import Path
from typing import Any

import hvac
import psycopg
import pytest

from opsconductor import keyring, secret_store
from opsconductor.db import executions, steps
from opsconductor.db.connection import Database
from opsconductor.engine import Engine
from opsconductor.errors import BadInput, SecretError
from opsconductor.inventory import Asset
from opsconductor.plan import Plan
from opsconductor.plan_hash import plan_hash
from opsconductor.secret_store import SecretResolver, VaultConfig
from opsconductor.status_machine import Status
from opsconductor.submission import Request, submit
from tests.fake_vault import fake_vault
from tests.helpers import admin
from tests.plans import command_step, plan_of

VALUE = "Zq9-vault-of-HOLDING-7731"


@pytest.fixture(autouse=True)
def _no_env_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(keyring.KEY_ENV, raising=False)


async def _run(db: Database, plan: Plan, resolver: SecretResolver) -> tuple[Status, Any]:
    submitted = await submit(
        db, Request(plan, "default", await admin(db, "alice"), uuid.uuid4().hex)
    )
    execution_id = submitted.execution.id
    final = await Engine(db, actor_id="worker-actor", secrets=resolver).run("default", execution_id)
    async with db.connection() as conn:
        row = await executions.get(conn, "default", str(execution_id))
        step_rows = await steps.list_for(conn, execution_id)
        events = await executions.events(conn, execution_id)
    return final, (row, step_rows, events)


def test_key_file_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    first = keyring.load(tmp_path)
    mode = stat.S_IMODE((tmp_path / keyring.KEY_FILE).stat().st_mode)
    assert mode == 0o600
    assert keyring.load(tmp_path).current.key_id == first.current.key_id
    os.chmod(tmp_path / keyring.KEY_FILE, 0o644)
    with pytest.raises(BadInput, match="chmod 600"):
        keyring.load(tmp_path)


def test_key_from_environment_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = keyring.SecretKey.generate()
    monkeypatch.setenv(keyring.KEY_ENV, key.to_text())
    assert keyring.load(tmp_path).current.key_id == key.key_id
    assert not (tmp_path / keyring.KEY_FILE).exists()
    monkeypatch.setenv(keyring.KEY_ENV, "c2hvcnQ=")
    with pytest.raises(BadInput, match="32 bytes"):
        keyring.load(tmp_path)


async def test_store_keeps_ciphertext_only_and_resolves(
    db: Database, database_url: str, tmp_path: Path
) -> None:
    assert await secret_store.put(db, tmp_path, "default", "kv/web/token", VALUE, "alice")
    assert not await secret_store.put(db, tmp_path, "default", "kv/web/token", VALUE, "alice")
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT s::text FROM execution.secrets s").fetchone()
    assert row is not None and VALUE not in row[0] and VALUE.encode().hex() not in row[0]
    resolved = await SecretResolver(db, tmp_path).resolve("default", "kv/web/token")
    assert (resolved.value, resolved.backend) == (VALUE, "store")


async def test_a_row_copied_to_another_path_or_tenant_does_not_open(
    db: Database, database_url: str, tmp_path: Path
) -> None:
    await secret_store.put(db, tmp_path, "default", "kv/a", VALUE, "alice")
    await secret_store.put(db, tmp_path, "default", "kv/b", "other-value", "alice")
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "UPDATE execution.secrets SET nonce = a.nonce, ciphertext = a.ciphertext "
            "FROM execution.secrets a WHERE a.path = 'kv/a' AND secrets.path = 'kv/b'"
        )
    with pytest.raises(SecretError, match="does not authenticate"):
        await SecretResolver(db, tmp_path).resolve("default", "kv/b")


async def test_rotate_key_reseals_every_secret(db: Database, tmp_path: Path) -> None:
    await secret_store.put(db, tmp_path, "default", "kv/one", VALUE, "alice")
    await secret_store.put(db, tmp_path, "default", "kv/two", "second-value", "alice")
    old = keyring.load(tmp_path).current.key_id
    assert await secret_store.rotate_key(db, tmp_path) == 2
    new = keyring.load(tmp_path).current.key_id
    assert new != old and not (tmp_path / keyring.NEXT_KEY_FILE).exists()
    async with db.connection() as conn:
        cur = await conn.execute("SELECT DISTINCT key_id FROM execution.secrets")
        assert [r["key_id"] for r in await cur.fetchall()] == [new]
    resolver = SecretResolver(db, tmp_path)
    assert (await resolver.resolve("default", "kv/one")).value == VALUE
    assert (await resolver.resolve("default", "kv/two")).value == "second-value"


async def test_rotation_interrupted_after_commit_still_opens_everything(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await secret_store.put(db, tmp_path, "default", "kv/one", VALUE, "alice")

    def crash(_keys: Any) -> None:
        raise RuntimeError("power cut before the key file was replaced")

    monkeypatch.setattr(keyring, "finish_rotation", crash)
    with pytest.raises(RuntimeError):
        await secret_store.rotate_key(db, tmp_path)
    monkeypatch.undo()
    monkeypatch.delenv(keyring.KEY_ENV, raising=False)
    # Rows are sealed with the next key, the key file still holds the old one: both load.
    assert (await SecretResolver(db, tmp_path).resolve("default", "kv/one")).value == VALUE
    assert await secret_store.rotate_key(db, tmp_path) == 1  # finishing is possible
    assert (await SecretResolver(db, tmp_path).resolve("default", "kv/one")).value == VALUE


async def test_env_backend(db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPSC_SECRET_ENV_TOKEN", VALUE)
    resolver = SecretResolver(db, tmp_path)
    assert (await resolver.resolve("default", "env:OPSC_SECRET_ENV_TOKEN")).value == VALUE
    with pytest.raises(SecretError, match="'env:OPSC_SECRET_ENV_MISSING' not found"):
        await resolver.resolve("default", "env:OPSC_SECRET_ENV_MISSING")


async def test_vault_kv2_backend_over_http(db: Database, tmp_path: Path) -> None:
    with fake_vault() as vault:
        client = hvac.Client(url=vault.url, token=vault.token)
        client.secrets.kv.v2.create_or_update_secret(
            path="web/deploy", secret={"value": VALUE, "user": "deployer"}, mount_point="kv"
        )
        client.secrets.kv.v2.create_or_update_secret(
            path="web/deploy", secret={"value": "v2-" + VALUE}, mount_point="kv"
        )
        resolver = SecretResolver(db, tmp_path, VaultConfig(vault.url, vault.token))
        latest = await resolver.resolve("default", "vault:kv/web/deploy")
        assert (latest.value, latest.backend) == ("v2-" + VALUE, "vault")
        with pytest.raises(SecretError, match="not found"):
            await resolver.resolve("default", "vault:kv/web/deploy#user")  # not in v2
        with pytest.raises(SecretError, match="not found"):
            await resolver.resolve("default", "vault:kv/web/nothing")
        denied = SecretResolver(db, tmp_path, VaultConfig(vault.url, "wrong-token"))
        with pytest.raises(SecretError, match="refused"):
            await denied.resolve("default", "vault:kv/web/deploy")
        assert ("GET", "/v1/kv/data/web/deploy") in vault.kv.requests


def test_vault_unconfigured_names_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VAULT_ADDR", raising=False)
    assert VaultConfig.from_env() is None


async def test_engine_resolves_per_step_audits_and_masks(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await secret_store.put(db, tmp_path, "default", "kv/web/token", VALUE, "alice")
    monkeypatch.setenv("OPSC_SECRET_ENV_SECOND", "second-" + VALUE)
    plan = plan_of(
        command_step(
            "use",
            'echo "token=$TOKEN"; echo "$TOKEN" >&2',
            env={"TOKEN": {"secret": "kv/web/token"}},
        ),
        command_step(
            "second", 'echo "got $B"', env={"B": {"secret": "env:OPSC_SECRET_ENV_SECOND"}}
        ),
    )
    final, (row, step_rows, events) = await _run(db, plan, SecretResolver(db, tmp_path))
    assert final is Status.COMPLETED, row.status_reason
    assert [r.output for r in step_rows] == ["token=****\n", "got ****\n"]
    assert step_rows[0].stderr == "****\n"
    resolved = [e for e in events if e.event_type == "secret_resolved"]
    assert [(e.actor_id, e.payload["path"], e.payload["step"]) for e in resolved] == [
        ("worker-actor", "kv/web/token", "use"),
        ("worker-actor", "env:OPSC_SECRET_ENV_SECOND", "second"),
    ]
    assert all(e.payload["on_behalf_of"] == "alice" for e in resolved)
    assert VALUE not in str(events) and VALUE not in str(step_rows)


async def test_missing_secret_fails_the_step_before_it_runs(
    db: Database, tmp_path: Path, work_dir: Path
) -> None:
    marker = work_dir / "ran"  # where the sandboxed step could write, had it run
    plan = plan_of(
        command_step("needs", f"touch {marker}", env={"T": {"secret": "kv/does/not-exist"}}),
        command_step("after", f"touch {marker}"),
    )
    final, (row, step_rows, events) = await _run(db, plan, SecretResolver(db, tmp_path))
    assert final is Status.FAILED
    assert not marker.exists()
    assert "kv/does/not-exist" in row.status_reason
    assert [(r.step_name, r.status) for r in step_rows] == [
        ("needs", "failed"),
        ("after", "skipped"),
    ]
    assert "'kv/does/not-exist' not found" in step_rows[0].error
    assert [e.payload["path"] for e in events if e.event_type == "secret_unresolved"] == [
        "kv/does/not-exist"
    ]


def test_plan_hash_covers_the_reference_not_the_value() -> None:
    targets = [[Asset("localhost", "localhost", "127.0.0.1", "local")]]
    a = plan_of(command_step("s", "true", env={"T": {"secret": "kv/a"}}))
    b = plan_of(command_step("s", "true", env={"T": {"secret": "kv/b"}}))
    assert plan_hash(a, targets) != plan_hash(b, targets)
    assert plan_hash(a, targets) == plan_hash(
        plan_of(command_step("s", "true", env={"T": {"secret": "kv/a"}})), targets
    )
