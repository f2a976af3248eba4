"""Secrets: write-only storage and just-in-time resolution from three backends.

A reference's path picks its backend:

* ``env:NAME`` — the worker's environment variable ``NAME``, only if its name starts with the
  operator's prefix (``OPSC_SECRET_ENV_PREFIX``, default ``OPSC_SECRET_ENV_``) and it is
  none of the installation's own credentials (``NEVER_READABLE``);
* ``vault:MOUNT/PATH#FIELD`` — HashiCorp Vault KV v2 (``VAULT_ADDR``, ``VAULT_TOKEN``;
  ``#FIELD`` defaults to ``value``), read through ``hvac``;
* anything else — the built-in store: AES-256-GCM ciphertext in PostgreSQL.

Resolved values are returned to the engine and live only in its memory for the step; they
are never logged, stored or put in an event (the engine records the path only).
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

from opsconductor import keyring, masking
from opsconductor.config import load_settings
from opsconductor.db import secrets as store
from opsconductor.db.connection import Database
from opsconductor.errors import BadInput, SecretError

ENV_PREFIX = "env:"
VAULT_PREFIX = "vault:"


class Backend(Protocol):
    name: str

    async def fetch(self, tenant_id: str, path: str) -> str | None:
        """The value at ``path`` (without the backend prefix), or None if there is none."""
        ...


#: Never readable through ``env:``, whatever the prefix: the store's master key and the
#: credentials of the database and of Vault. A plan naming one would hand it to its commands.
NEVER_READABLE = frozenset({"OPSC_SECRET_KEY", "DATABASE_URL", "TEST_DATABASE_URL", "PGPASSWORD"})
NEVER_READABLE_PREFIXES = ("VAULT_",)


def env_refusal(name: str, prefix: str) -> str | None:
    """Why ``env:NAME`` may not be read (None: it may). The worker's environment holds the
    installation's own credentials next to the ones meant for plans, so plans see only the
    names the operator set aside for them."""
    if name in NEVER_READABLE or name.startswith(NEVER_READABLE_PREFIXES):
        return (
            f"{name} is never readable as a secret (the installation's master key and its "
            "database and Vault credentials are not plan secrets)"
        )
    if not prefix or not name.startswith(prefix):
        return (
            f"env: secrets read only variables whose names start with {prefix!r} "
            f"(the operator sets the prefix with OPSC_SECRET_ENV_PREFIX); {name!r} does not"
        )
    return None


class EnvBackend:
    name = "env"

    def __init__(self, prefix: str | None = None) -> None:
        self.prefix = load_settings().secret_env_prefix if prefix is None else prefix

    async def fetch(self, tenant_id: str, path: str) -> str | None:
        refusal = env_refusal(path, self.prefix)
        if refusal is not None:
            raise SecretError(f"secret {ENV_PREFIX + path!r}: {refusal}")
        return os.environ.get(path)


class StoreBackend:
    """The built-in store; opens ciphertext with the keyring (loaded on first use)."""

    name = "store"

    def __init__(self, db: Database, home: Path) -> None:
        self.db = db
        self.home = home

    @cached_property
    def keys(self) -> keyring.Keyring:
        return keyring.load(self.home)

    async def fetch(self, tenant_id: str, path: str) -> str | None:
        async with self.db.connection() as conn:
            row = await store.get(conn, tenant_id, path)
        if row is None:
            return None
        sealed = store.Sealed(row["key_id"], bytes(row["nonce"]), bytes(row["ciphertext"]))
        return self.open(tenant_id, path, sealed)

    def open(self, tenant_id: str, path: str, sealed: store.Sealed) -> str:
        """The value of a row read elsewhere (a hook's, with the hook): it opens only as
        the secret of this tenant and path (the associated data)."""
        key = self.keys.get(sealed.key_id)
        return key.open(sealed.nonce, sealed.ciphertext, keyring.associated_data(tenant_id, path))


@dataclass(frozen=True)
class VaultConfig:
    url: str
    token: str
    namespace: str | None = None

    @classmethod
    def from_env(cls) -> VaultConfig | None:
        settings = load_settings()
        if not settings.vault_addr or not settings.vault_token:
            return None
        return cls(settings.vault_addr, settings.vault_token, settings.vault_namespace)


class VaultBackend:
    """HashiCorp Vault KV version 2. ``hvac`` is synchronous: calls run in a thread."""

    name = "vault"

    def __init__(self, config: VaultConfig | None) -> None:
        self.config = config

    async def fetch(self, tenant_id: str, path: str) -> str | None:
        if self.config is None:
            raise SecretError(
                f"secret {VAULT_PREFIX}{path}: Vault is not configured (set VAULT_ADDR and "
                "VAULT_TOKEN)"
            )
        return await asyncio.to_thread(self._read, self.config, path)

    @staticmethod
    def _read(config: VaultConfig, path: str) -> str | None:
        location, _, wanted = path.partition("#")
        mount, _, secret_path = location.partition("/")
        if not mount or not secret_path:
            raise SecretError(f"secret {VAULT_PREFIX}{path}: use vault:MOUNT/PATH[#FIELD]")
        # Imported on the first Vault read: hvac and requests cost ~0.1 s to load, and
        # only the engine resolving a vault: reference needs them.
        import hvac
        import hvac.exceptions
        import requests

        client = hvac.Client(url=config.url, token=config.token, namespace=config.namespace)
        try:
            response: dict[str, Any] = client.secrets.kv.v2.read_secret_version(
                path=secret_path, mount_point=mount, raise_on_deleted_version=True
            )
        except hvac.exceptions.InvalidPath:
            return None
        except hvac.exceptions.Forbidden:
            raise SecretError(f"secret {VAULT_PREFIX}{location}: Vault refused access") from None
        except (hvac.exceptions.VaultError, requests.RequestException) as exc:
            raise SecretError(
                f"secret {VAULT_PREFIX}{location}: Vault error: {type(exc).__name__}"
            ) from None
        data = response.get("data", {}).get("data", {}) or {}
        value = data.get(wanted or "value")
        return None if value is None else str(value)


@dataclass(frozen=True)
class Resolved:
    path: str
    backend: str
    value: str


class SecretResolver:
    """Routes a reference to its backend; raises ``SecretError`` naming the path."""

    def __init__(
        self,
        db: Database,
        home: Path,
        vault: VaultConfig | None = None,
        *,
        env_prefix: str | None = None,
    ) -> None:
        self.store = StoreBackend(db, home)
        self.env = EnvBackend(env_prefix)
        self.vault = VaultBackend(vault if vault is not None else VaultConfig.from_env())

    def route(self, path: str) -> tuple[Backend, str]:
        if path.startswith(ENV_PREFIX):
            return self.env, path.removeprefix(ENV_PREFIX)
        if path.startswith(VAULT_PREFIX):
            return self.vault, path.removeprefix(VAULT_PREFIX)
        return self.store, path

    async def resolve(self, tenant_id: str, path: str) -> Resolved:
        backend, inner = self.route(path)
        value = await backend.fetch(tenant_id, inner)
        if value is None:
            raise SecretError(f"secret {path!r} not found ({backend.name} backend)")
        return Resolved(path, backend.name, value)


def _store_path(path: str) -> str:
    if path.startswith((ENV_PREFIX, VAULT_PREFIX)):
        raise BadInput(
            f"secret path {path!r}: env: and vault: secrets live outside opsc; "
            "only built-in store paths can be set or deleted here"
        )
    return path


async def put(
    db: Database, home: Path, tenant_id: str, path: str, value: str, actor_id: str
) -> bool:
    """Seal and store ``value`` at ``path``; True if the path is new."""
    if value == "":
        raise BadInput(f"secret {path!r}: the value is empty")
    key = keyring.load(home).current
    nonce, ciphertext = key.seal(value, keyring.associated_data(tenant_id, _store_path(path)))
    async with db.connection() as conn:
        return await store.put(
            conn,
            tenant_id,
            path,
            key_id=key.key_id,
            nonce=nonce,
            ciphertext=ciphertext,
            actor_id=actor_id,
        )


async def delete(db: Database, tenant_id: str, path: str) -> bool:
    async with db.connection() as conn:
        return await store.delete(conn, tenant_id, _store_path(path))


async def rotate_key(db: Database, home: Path) -> int:
    """Re-seal every stored secret (all tenants) under a new key; return how many.

    Crash-safe: the new key is on disk before any row uses it, the rows change in one
    transaction, and the new key replaces the old file only after the commit.
    """
    keys = keyring.load(home)
    new = keyring.begin_rotation(keys)
    everyone = keyring.Keyring(keys.current, (*keys.others, new), keys.path)
    async with db.transaction() as conn:
        rows = await store.lock_all(conn)
        for row in rows:
            aad = keyring.associated_data(row["tenant_id"], row["path"])
            value = everyone.get(row["key_id"]).open(
                bytes(row["nonce"]), bytes(row["ciphertext"]), aad
            )
            nonce, ciphertext = new.seal(value, aad)
            await store.reseal(
                conn,
                row["tenant_id"],
                row["path"],
                key_id=new.key_id,
                nonce=nonce,
                ciphertext=ciphertext,
            )
    keyring.finish_rotation(keys)
    return len(rows)


async def tenant_masker(db: Database, tenant_id: str) -> masking.Masker:
    """Built-in patterns plus the tenant's own: for sinks outside an execution (CLI display,
    API responses, stream messages), where no resolved secret values are at hand."""
    async with db.connection() as conn:
        rows = await store.patterns(conn, tenant_id)
    return masking.DEFAULT.with_patterns({r["name"]: r["pattern"] for r in rows})
