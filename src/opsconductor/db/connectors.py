"""Storage of per-tenant connector settings (record-only, host key policy, the local
execution capability) and of the tenant's trusted SSH host keys, with the host key use
cases (trust, replace, remove).

The use cases are plain functions of (conn, tenant_id, actor_id, ...): each runs in one
transaction that holds host:port's lock, applies the rule of ``opsconductor.host_keys``
and appends its audit event (``audit_events``) in that same transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from opsconductor.db import audit, queries
from opsconductor.db.connection import Conn, Database
from opsconductor.errors import NotFound
from opsconductor.host_keys import HostKey, HostKeyChanged, Verdict, check_stated, verdict

Q = queries.load("connectors")

HOST_KEY_POLICIES = ("strict", "accept-new")


@dataclass(frozen=True)
class TenantSettings:
    record_only: bool
    host_key_policy: str
    #: local steps (command, script, file on a ``local`` asset) may run, sandboxed
    local_execution: bool = False
    #: ... and their sandbox keeps the host's network (loopback included)
    local_network: bool = False

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> TenantSettings:
        return cls(
            bool(row["record_only"]),
            str(row["host_key_policy"]),
            bool(row["local_execution"]),
            bool(row["local_network"]),
        )


async def tenant_settings(conn: Conn, tenant_id: str) -> TenantSettings:
    cur = await conn.execute(Q["tenant_settings"], {"tenant_id": tenant_id})
    row = await cur.fetchone()
    if row is None:
        raise NotFound(f"tenant {tenant_id!r} not found")
    return TenantSettings.from_row(row)


async def set_local_execution(
    conn: Conn, tenant_id: str, actor_id: str, *, on: bool, network: bool = False
) -> None:
    """Grant or withdraw the local execution capability (an installation admin's decision:
    callers are the local CLI only). ``network`` keeps the host's network in the sandbox;
    it means nothing without ``on``. Records who decided and when on the tenant row, and a
    ``local_execution_changed`` audit event; run it in a transaction."""
    params = {"tenant_id": tenant_id, "on": on, "network": on and network, "actor_id": actor_id}
    cur = await conn.execute(Q["set_local_execution"], params)
    if await cur.fetchone() is None:
        raise NotFound(f"tenant {tenant_id!r} not found")
    await audit.record(
        conn,
        tenant_id,
        actor_id,
        "local_execution_changed",
        {"local_execution": on, "local_network": on and network},
    )


async def bootstrap_local_execution(conn: Conn, tenant_id: str, actor_id: str) -> bool:
    """Turn local execution on (without network) for a tenant nobody ever decided for;
    True if it did. A tenant switched off explicitly stays off."""
    cur = await conn.execute(
        Q["bootstrap_local_execution"], {"tenant_id": tenant_id, "actor_id": actor_id}
    )
    if await cur.fetchone() is None:
        return False
    payload = {"local_execution": True, "local_network": False, "why": "embedded install"}
    await audit.record(conn, tenant_id, actor_id, "local_execution_changed", payload)
    return True


async def set_record_only(conn: Conn, tenant_id: str, on: bool) -> None:
    await conn.execute(Q["set_record_only"], {"tenant_id": tenant_id, "record_only": on})


async def set_host_key_policy(conn: Conn, tenant_id: str, policy: str) -> None:
    await conn.execute(Q["set_host_key_policy"], {"tenant_id": tenant_id, "policy": policy})


async def known_host_keys(conn: Conn, tenant_id: str, host: str, port: int) -> list[str]:
    cur = await conn.execute(
        Q["known_host_keys"], {"tenant_id": tenant_id, "host": host, "port": port}
    )
    return [row["public_key"] for row in await cur.fetchall()]


async def lock_known_host(conn: Conn, tenant_id: str, host: str, port: int) -> None:
    """Hold host:port's keys against other writers until the transaction ends."""
    await conn.execute(Q["lock_known_host"], {"tenant_id": tenant_id, "host": host, "port": port})


async def add_known_host(
    conn: Conn, tenant_id: str, host: str, port: int, public_key: str, added_by: str
) -> bool:
    """Store ``public_key`` for host:port; False when it was stored already.

    A storage primitive: it does not look at the keys already stored. Trusting a key goes
    through ``opsconductor.host_keys`` (which refuses a second, different key)."""
    cur = await conn.execute(
        Q["add_known_host"],
        {
            "tenant_id": tenant_id,
            "host": host,
            "port": port,
            "public_key": public_key,
            "added_by": added_by,
        },
    )
    return await cur.fetchone() is not None


async def list_known_hosts(conn: Conn, tenant_id: str) -> list[dict[str, object]]:
    cur = await conn.execute(Q["list_known_hosts"], {"tenant_id": tenant_id})
    return list(await cur.fetchall())


async def delete_all_host_keys(conn: Conn, tenant_id: str, host: str, port: int) -> list[str]:
    cur = await conn.execute(
        Q["remove_known_hosts"], {"tenant_id": tenant_id, "host": host, "port": port}
    )
    return [row["public_key"] for row in await cur.fetchall()]


async def delete_known_host_keys(
    conn: Conn, tenant_id: str, host: str, port: int, public_keys: list[str]
) -> list[str]:
    cur = await conn.execute(
        Q["delete_known_host_keys"],
        {"tenant_id": tenant_id, "host": host, "port": port, "public_keys": public_keys},
    )
    return [row["public_key"] for row in await cur.fetchall()]


@dataclass(frozen=True)
class Trusted:
    key: HostKey
    #: False when the key was trusted already (nothing changed, no event)
    added: bool


@dataclass(frozen=True)
class Replaced:
    old: tuple[HostKey, ...]
    new: HostKey
    #: stored keys of other types left in place (``keep_other_types``)
    kept: tuple[HostKey, ...]
    #: id of the ``host_key_replaced`` audit event (None when nothing changed)
    event_id: int | None


async def _stored(conn: Conn, tenant_id: str, host: str, port: int) -> list[HostKey]:
    """host:port's keys, locked against other writers until the transaction ends."""
    await lock_known_host(conn, tenant_id, host, port)
    return [HostKey.parse(k) for k in await known_host_keys(conn, tenant_id, host, port)]


async def trust_host_key(
    conn: Conn,
    tenant_id: str,
    actor_id: str,
    host: str,
    port: int,
    key: HostKey,
    *,
    via: str = "add",
) -> Trusted:
    """Trust ``key`` for a host with no stored key (``via`` 'add', 'scan' or 'accept-new').

    Re-trusting a stored key changes nothing; any other key is refused with
    ``HostKeyChanged``: a second key is never added beside the first (see host_keys)."""
    async with conn.transaction():
        stored = await _stored(conn, tenant_id, host, port)
        found = verdict(stored, key)
        if found is Verdict.TRUSTED:
            return Trusted(key, added=False)
        if found is Verdict.CHANGED:
            raise HostKeyChanged(host, port, stored, key)
        added_by = f"accept-new:{actor_id}" if via == "accept-new" else actor_id
        await add_known_host(conn, tenant_id, host, port, key.text, added_by)
        await audit.record(
            conn,
            tenant_id,
            actor_id,
            "host_key_trusted",
            {
                "host": host,
                "port": port,
                "fingerprint": key.fingerprint,
                "key": key.text,
                "via": via,
            },
        )
    return Trusted(key, added=True)


async def replace_host_key(
    conn: Conn,
    tenant_id: str,
    actor_id: str,
    host: str,
    port: int,
    key: HostKey,
    *,
    stated_fingerprint: str,
    keep_other_types: bool = False,
    via: str = "key",
) -> Replaced:
    """Replace host:port's stored keys by ``key``, an administrator's explicit decision.

    ``stated_fingerprint`` is the fingerprint the operator verified out of band; ``key``
    must have exactly that one (``FingerprintMismatch`` otherwise, nothing changes). By
    default every stored key goes (a rotated or re-installed host has a new identity);
    ``keep_other_types`` removes only the stored key of ``key``'s type, so a host can
    legitimately hold one key per type. Recorded as ``host_key_replaced`` (actor, host,
    port, old and new fingerprints)."""
    check_stated(stated_fingerprint, key)
    async with conn.transaction():
        stored = await _stored(conn, tenant_id, host, port)
        if not stored:
            raise NotFound(
                f"no key is stored for {host}:{port}: nothing to replace "
                f"(trust a first key with `opsc known-hosts add {host} --port {port}`)"
            )
        gone = [
            k
            for k in stored
            if k.text != key.text and (not keep_other_types or k.key_type == key.key_type)
        ]
        kept = [k for k in stored if k not in gone and k.text != key.text]
        if not gone and any(k.text == key.text for k in stored):
            return Replaced((), key, tuple(kept), None)  # already exactly so: no event
        await delete_known_host_keys(conn, tenant_id, host, port, [k.text for k in gone])
        await add_known_host(conn, tenant_id, host, port, key.text, actor_id)
        event = await audit.record(
            conn,
            tenant_id,
            actor_id,
            "host_key_replaced",
            {
                "host": host,
                "port": port,
                "old_fingerprints": [k.fingerprint for k in gone],
                "new_fingerprint": key.fingerprint,
                "kept_fingerprints": [k.fingerprint for k in kept],
                "old_keys": [k.text for k in gone],
                "new_key": key.text,
                "via": via,
            },
        )
    return Replaced(tuple(gone), key, tuple(kept), int(event["id"]))


async def remove_host_keys(
    conn: Conn, tenant_id: str, actor_id: str, host: str, port: int
) -> list[HostKey]:
    """Forget every key of host:port (a decommissioned host); recorded as
    ``host_key_removed``. A rotation is ``replace_host_key``, not remove and add."""
    async with conn.transaction():
        await lock_known_host(conn, tenant_id, host, port)
        gone = [HostKey.parse(k) for k in await delete_all_host_keys(conn, tenant_id, host, port)]
        if gone:
            await audit.record(
                conn,
                tenant_id,
                actor_id,
                "host_key_removed",
                {"host": host, "port": port, "fingerprints": [k.fingerprint for k in gone]},
            )
    return gone


class KnownHosts:
    """The tenant's known_hosts as the SSH connector sees it: look up, and (under the
    ``accept-new`` policy only) remember a first key."""

    def __init__(self, db: Database, tenant_id: str, policy: str, actor_id: str) -> None:
        self.db = db
        self.tenant_id = tenant_id
        self.accept_new = policy == "accept-new"
        self.actor_id = actor_id

    async def keys(self, host: str, port: int) -> list[str]:
        async with self.db.connection() as conn:
            return await known_host_keys(conn, self.tenant_id, host, port)

    async def remember(self, host: str, port: int, public_key: str) -> None:
        """Learn a first key; ``HostKeyChanged`` if another one got stored meanwhile (two
        runs learning at once: the second, different key is refused, never added)."""
        async with self.db.connection() as conn:
            await trust_host_key(
                conn,
                self.tenant_id,
                self.actor_id,
                host,
                port,
                HostKey.parse(public_key),
                via="accept-new",
            )
