"""Storage of actors, API tokens, custom roles and role bindings; the engine's RBAC check.

Tokens are 32 random bytes shown once at creation; only their SHA-256 is stored, so a
database leak yields no usable credential. (A slow hash buys nothing here: the token has
256 bits of entropy, unlike a password.)
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from opsconductor import rbac
from opsconductor.db import assets, batching, queries
from opsconductor.db.batching import Executor
from opsconductor.db.connection import Conn, Database
from opsconductor.errors import BadInput, Conflict

Q = queries.load("auth")
Row = dict[str, Any]

TOKEN_PREFIX = "opsc_"


@dataclass(frozen=True)
class Principal:
    """Who is calling: resolved from a bearer token, scoped to one tenant."""

    tenant_id: str
    actor_id: str
    token_id: uuid.UUID | None = None


@dataclass(frozen=True)
class NewToken:
    token: str
    token_id: uuid.UUID
    tenant_id: str
    actor_id: str


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def ensure_actor(conn: Conn, tenant_id: str, actor_id: str) -> None:
    await assets.ensure_tenant(conn, tenant_id)
    try:
        await conn.execute(Q["ensure_actor"], {"tenant_id": tenant_id, "actor_id": actor_id})
    except psycopg.errors.CheckViolation:
        raise BadInput(f"actor {actor_id!r}: use 1-128 characters") from None


async def create_token(
    conn: Conn,
    tenant_id: str,
    actor_id: str,
    *,
    name: str = "",
    expires_at: datetime | None = None,
) -> NewToken:
    await ensure_actor(conn, tenant_id, actor_id)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token_id = uuid.uuid4()
    await conn.execute(
        Q["insert_token"],
        {
            "token_id": token_id,
            "tenant_id": tenant_id,
            "actor_id": actor_id,
            "token_hash": hash_token(token),
            "name": name,
            "expires_at": expires_at,
        },
    )
    return NewToken(token, token_id, tenant_id, actor_id)


async def authenticate(conn: Conn, token: str) -> Principal | None:
    """The principal behind a live token, or None (unknown, revoked or expired)."""
    cur = await conn.execute(Q["principal_by_token_hash"], {"token_hash": hash_token(token)})
    row = await cur.fetchone()
    if row is None:
        return None
    return Principal(row["tenant_id"], row["actor_id"], row["token_id"])


async def revoke_token(conn: Conn, tenant_id: str, token_id: str) -> bool:
    try:
        parsed = uuid.UUID(token_id)
    except ValueError:
        raise BadInput(f"token id {token_id!r} is not a UUID") from None
    cur = await conn.execute(Q["revoke_token"], {"tenant_id": tenant_id, "token_id": parsed})
    return await cur.fetchone() is not None


async def list_tokens(conn: Conn, tenant_id: str) -> list[Row]:
    cur = await conn.execute(Q["list_tokens"], {"tenant_id": tenant_id})
    return await cur.fetchall()


async def custom_roles(
    conn: Executor, tenant_id: str, names: list[str] | None = None
) -> dict[str, rbac.Role]:
    params = {"tenant_id": tenant_id, "role_names": names}
    grants: dict[str, list[rbac.Permission]] = defaultdict(list)
    descriptions: dict[str, str] = {}
    for row in await batching.fetch(conn, Q["custom_permissions"], params):
        descriptions[row["role_name"]] = row["description"]
        if row["resource"] is not None:
            envs = row["environments"]
            grants[row["role_name"]].append(
                rbac.Permission(row["resource"], row["action"], frozenset(envs) if envs else None)
            )
    return {
        name: rbac.Role(name, tuple(grants[name]), description)
        for name, description in descriptions.items()
    }


async def roles_of(conn: Executor, tenant_id: str, actor_id: str) -> list[rbac.Role]:
    """The actor's roles as they are now: read fresh on every check, so a change of roles
    applies to the very next decision (including steps of executions already running)."""
    item = {"tenant_id": tenant_id, "actor_id": actor_id}
    names = [row["role_name"] for row in await batching.run(conn, Q["roles_of_actor"], [item])]
    custom_names = [n for n in names if n not in rbac.BUILTIN_ROLES]
    custom = await custom_roles(conn, tenant_id, custom_names) if custom_names else {}
    return rbac.resolve_roles(names, custom)


async def grant(
    conn: Conn, tenant_id: str, actor_id: str, role_name: str, *, granted_by: str
) -> bool:
    """Bind a role (built-in or a custom one of this tenant); False if it was already bound."""
    rbac.check_role_name(role_name, custom=False)
    if role_name not in rbac.BUILTIN_ROLES and not await custom_roles(conn, tenant_id, [role_name]):
        known = ", ".join([*rbac.BUILTIN_ROLES, *await custom_roles(conn, tenant_id)])
        raise BadInput(f"role {role_name!r} does not exist in tenant {tenant_id!r} ({known})")
    await ensure_actor(conn, tenant_id, actor_id)
    cur = await conn.execute(
        Q["bind_role"],
        {
            "tenant_id": tenant_id,
            "actor_id": actor_id,
            "role_name": role_name,
            "granted_by": granted_by,
        },
    )
    return await cur.fetchone() is not None


async def revoke_role(conn: Conn, tenant_id: str, actor_id: str, role_name: str) -> bool:
    cur = await conn.execute(
        Q["unbind_role"], {"tenant_id": tenant_id, "actor_id": actor_id, "role_name": role_name}
    )
    return await cur.fetchone() is not None


async def list_bindings(conn: Conn, tenant_id: str) -> list[Row]:
    cur = await conn.execute(Q["list_bindings"], {"tenant_id": tenant_id})
    return await cur.fetchall()


async def define_role(
    db: Database,
    tenant_id: str,
    role_name: str,
    permissions: list[rbac.Permission],
    *,
    description: str = "",
) -> rbac.Role:
    rbac.check_role_name(role_name, custom=True)
    if not permissions:
        raise BadInput(f"role {role_name!r}: give at least one permission")
    async with db.transaction() as conn:
        await assets.ensure_tenant(conn, tenant_id)
        try:
            await conn.execute(
                Q["insert_role"],
                {"tenant_id": tenant_id, "role_name": role_name, "description": description},
            )
        except psycopg.errors.UniqueViolation:
            raise Conflict(f"role {role_name!r} already exists") from None
        for p in permissions:
            await conn.execute(
                Q["insert_role_permission"],
                {
                    "tenant_id": tenant_id,
                    "role_name": role_name,
                    "resource": p.resource,
                    "action": p.action,
                    "environments": sorted(p.environments) if p.environments else None,
                },
            )
    return rbac.Role(role_name, tuple(permissions), description)


async def delete_role(db: Database, tenant_id: str, role_name: str) -> bool:
    """Remove a custom role and every binding to it, at once."""
    async with db.transaction() as conn:
        params = {"tenant_id": tenant_id, "role_name": role_name}
        cur = await conn.execute(Q["delete_role"], params)
        if await cur.fetchone() is None:
            return False
        await conn.execute(Q["delete_role_bindings"], params)
    return True


async def ensure_local_admin(conn: Conn, tenant_id: str, actor_id: str) -> None:
    """Bind ``admin`` to the installation's local administrator (``local-admin:<unix user>``)
    in a tenant. Whoever can open the database owns every tenant anyway; the binding makes
    that visible (``opsc roles list``) and lets the worker's RBAC re-check, which reads
    bindings, agree with the shell."""
    await ensure_actor(conn, tenant_id, actor_id)
    await grant(conn, tenant_id, actor_id, "admin", granted_by="installation")


def step_authorizer(db: Database) -> rbac.StepAuthorizer:
    """The engine's second RBAC check: the execution's actor, their roles as of now, the
    step's action class on the target's environment."""

    async def authorize(check: rbac.StepCheck) -> str | None:
        return step_refusal(await roles_of(db.batch, check.tenant_id, check.actor_id), check)

    return authorize


def step_refusal(roles: list[rbac.Role], check: rbac.StepCheck) -> str | None:
    """Why ``roles`` may not run the step on the target, or None if they may."""
    decision = rbac.decide(roles, "steps", check.action_class, check.environment)
    return None if decision.allowed else f"actor {check.actor_id!r}: {decision.reason}"
