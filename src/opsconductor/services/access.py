"""Who may do what: API tokens, roles and role bindings (``access:manage``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from opsconductor import rbac
from opsconductor.db import auth
from opsconductor.db.connection import Database
from opsconductor.errors import BadInput, NotFound
from opsconductor.services.caller import Caller, check_actor_id

Row = dict[str, Any]


@dataclass(frozen=True)
class RolesView:
    roles: list[rbac.Role]
    bindings: list[Row]


async def create_token(
    db: Database,
    who: Caller,
    actor_id: str,
    *,
    name: str = "",
    expires_at: datetime | None = None,
    roles: list[str] | None = None,
) -> auth.NewToken:
    """A token for ``actor_id`` in the caller's tenant (shown once; stored hashed)."""
    who.require("access", "manage")
    check_actor_id(actor_id)
    if expires_at is not None and expires_at <= datetime.now(UTC):
        raise BadInput(f"expires_at: {expires_at.isoformat()} is not in the future")
    async with db.transaction() as conn:
        made = await auth.create_token(
            conn, who.tenant_id, actor_id, name=name, expires_at=expires_at
        )
        for role in roles or []:
            await auth.grant(conn, who.tenant_id, actor_id, role, granted_by=who.actor_id)
    return made


async def list_tokens(db: Database, who: Caller) -> list[Row]:
    who.require("access", "manage")
    async with db.connection() as conn:
        return await auth.list_tokens(conn, who.tenant_id)


async def revoke_token(db: Database, who: Caller, token_id: str) -> None:
    who.require("access", "manage")
    async with db.connection() as conn:
        if not await auth.revoke_token(conn, who.tenant_id, token_id):
            raise NotFound(f"token {token_id} not found or already revoked")


async def roles(db: Database, who: Caller) -> RolesView:
    who.require("access", "manage")
    async with db.connection() as conn:
        custom = await auth.custom_roles(conn, who.tenant_id)
        bindings = await auth.list_bindings(conn, who.tenant_id)
    every = [*rbac.BUILTIN_ROLES.values(), *sorted(custom.values(), key=lambda r: r.name)]
    return RolesView(every, bindings)


async def roles_of(db: Database, who: Caller, actor_id: str) -> list[rbac.Role]:
    who.require("access", "manage")
    async with db.connection() as conn:
        return await auth.roles_of(conn, who.tenant_id, actor_id)


async def grant(db: Database, who: Caller, actor_id: str, role: str) -> bool:
    """Bind a role; False if it was bound already."""
    who.require("access", "manage")
    check_actor_id(actor_id)
    async with db.transaction() as conn:
        return await auth.grant(conn, who.tenant_id, actor_id, role, granted_by=who.actor_id)


async def revoke(db: Database, who: Caller, actor_id: str, role: str) -> None:
    who.require("access", "manage")
    async with db.connection() as conn:
        if not await auth.revoke_role(conn, who.tenant_id, actor_id, role):
            raise NotFound(f"actor {actor_id!r} does not hold role {role!r}")


async def define_role(
    db: Database, who: Caller, name: str, permissions: list[str], description: str = ""
) -> rbac.Role:
    who.require("access", "manage")
    parsed = [rbac.parse_permission(p) for p in permissions]
    return await auth.define_role(db, who.tenant_id, name, parsed, description=description)


async def delete_role(db: Database, who: Caller, name: str) -> None:
    who.require("access", "manage")
    if not await auth.delete_role(db, who.tenant_id, name):
        raise NotFound(f"custom role {name!r} not found")
