"""``env:`` secrets read only the variables the operator set aside for plans. Attack:
``env: {K: {secret: "env:OPSC_SECRET_KEY"}}`` then ``printf %s "$K" | rev`` printed the
master key reversed (masking knows the value, not its reverse); ``DATABASE_URL`` and
``VAULT_TOKEN`` the same way."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from opsconductor.connectors.credentials import resolve_credential
from opsconductor.db.connection import Database
from opsconductor.errors import SecretError
from opsconductor.secret_store import SecretResolver
from opsconductor.status_machine import Status
from tests.security.local_support import command, run

KEY = base64.b64encode(os.urandom(32)).decode()
INSTALLATION = {
    "OPSC_SECRET_KEY": KEY,
    "DATABASE_URL": "postgresql://app:db-password-31337@db.internal/app",
    "VAULT_TOKEN": "hvs.vault-token-31337",
}


@pytest.fixture
def worker_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker's environment holds the installation's credentials, as in production."""
    for name, value in INSTALLATION.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("OPSC_SECRET_ENV_DEPLOY_TOKEN", "deploy-token-for-plans")


def _steal(name: str) -> dict[str, object]:
    return command('printf %s "$K" | rev', env={"K": {"secret": f"env:{name}"}})


@pytest.mark.parametrize("name", [*INSTALLATION, "HOME", "PATH"])
async def test_installation_variables_are_refused(
    db: Database, worker_env: None, name: str
) -> None:
    ran = await run(db, "default", _steal(name))
    assert ran.status is Status.FAILED
    error = ran.rows[0].error or ""
    assert error.startswith(f"secret 'env:{name}': "), error
    value = os.environ[name]
    assert value[::-1] not in ran.text and value not in ran.text
    assert ran.rows[0].output == ""  # the command never ran
    unresolved = [e for e in ran.events if e.event_type == "secret_unresolved"]
    assert [e.payload["path"] for e in unresolved] == [f"env:{name}"]


@pytest.mark.parametrize("prefix", ["", "OPSC_", "DATABASE_", "VAULT_", "OPSC_SECRET_"])
@pytest.mark.parametrize("name", list(INSTALLATION))
async def test_never_readable_whatever_the_prefix(
    db: Database,
    worker_env: None,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    prefix: str,
    name: str,
) -> None:
    monkeypatch.setenv("OPSC_SECRET_ENV_PREFIX", prefix)
    resolver = SecretResolver(db, tmp_path)  # the prefix as the worker reads it at start
    with pytest.raises(SecretError, match="never readable as a secret") as caught:
        await resolver.resolve("default", f"env:{name}")
    assert INSTALLATION[name] not in str(caught.value)


async def test_the_refusal_names_the_prefix_rule(db: Database, worker_env: None) -> None:
    ran = await run(db, "default", _steal("HOME"))
    error = ran.rows[0].error or ""
    assert "env: secrets read only variables whose names start with 'OPSC_SECRET_ENV_'" in error
    assert "OPSC_SECRET_ENV_PREFIX" in error


async def test_a_variable_under_the_prefix_works(db: Database, worker_env: None) -> None:
    ran = await run(db, "default", _steal("OPSC_SECRET_ENV_DEPLOY_TOKEN"))
    assert ran.status is Status.COMPLETED, ran.text
    assert ran.rows[0].output == "deploy-token-for-plans"[::-1]
    resolved = [e for e in ran.events if e.event_type == "secret_resolved"]
    assert [e.payload["path"] for e in resolved] == ["env:OPSC_SECRET_ENV_DEPLOY_TOKEN"]


def test_ssh_credential_references_follow_the_same_rule(worker_env: None) -> None:
    for name in INSTALLATION:
        with pytest.raises(LookupError, match="never readable"):
            resolve_credential(f"env:{name}")
    with pytest.raises(LookupError, match="start with 'OPSC_SECRET_ENV_'"):
        resolve_credential("env:HOME")
    assert resolve_credential("env:OPSC_SECRET_ENV_DEPLOY_TOKEN") == "deploy-token-for-plans"
