"""``/api/v1/roles``, ``/api/v1/actors/{actor}/roles``, ``/api/v1/tokens``: who may do what.

All of it needs ``access:manage`` (built-in: ``admin``), within the caller's tenant only.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Response
from pydantic import BaseModel, Field

from opsconductor import rbac
from opsconductor.api.auth import Caller, database, require
from opsconductor.api.inputs import CleanInput
from opsconductor.db import auth
from opsconductor.db.connection import Database
from opsconductor.errors import NotFound

router = APIRouter(tags=["access"])

Db = Annotated[Database, Depends(database)]
Admin = Annotated[Caller, Depends(require("access", "manage"))]
ActorId = Annotated[str, Path(min_length=1, max_length=128)]
RoleName = Annotated[str, Path(pattern=r"^[a-z][a-z0-9_-]{0,62}$")]


class RoleOut(BaseModel):
    name: str
    builtin: bool
    description: str
    #: ``resource:action`` or ``resource:action@env,...``
    permissions: list[str]

    @classmethod
    def from_role(cls, role: rbac.Role) -> RoleOut:
        return cls(
            name=role.name,
            builtin=role.builtin,
            description=role.description,
            permissions=[str(p) for p in role.permissions],
        )


class RoleCreate(CleanInput):
    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,62}$")
    description: str = Field(default="", max_length=500)
    permissions: list[str] = Field(min_length=1, max_length=100)


class ActorRoles(BaseModel):
    actor_id: str
    roles: list[str]


class TokenCreate(CleanInput):
    actor_id: str = Field(min_length=1, max_length=128)
    name: str = Field(default="", max_length=200)
    expires_at: datetime | None = None


class TokenOut(BaseModel):
    token_id: uuid.UUID
    actor_id: str
    #: shown once; only its SHA-256 is stored
    token: str


@router.get("/roles", response_model=list[RoleOut], summary="Built-in and custom roles")
async def list_roles(db: Db, who: Admin) -> list[RoleOut]:
    async with db.connection() as conn:
        custom = await auth.custom_roles(conn, who.tenant_id)
    every = [*rbac.BUILTIN_ROLES.values(), *sorted(custom.values(), key=lambda r: r.name)]
    return [RoleOut.from_role(r) for r in every]


@router.post("/roles", status_code=201, response_model=RoleOut, summary="Define a custom role")
async def create_role(body: RoleCreate, db: Db, who: Admin) -> RoleOut:
    permissions = [rbac.parse_permission(p) for p in body.permissions]
    role = await auth.define_role(
        db, who.tenant_id, body.name, permissions, description=body.description
    )
    return RoleOut.from_role(role)


@router.delete("/roles/{role}", status_code=204, summary="Delete a custom role")
async def delete_role(role: RoleName, db: Db, who: Admin) -> Response:
    if not await auth.delete_role(db, who.tenant_id, role):
        raise NotFound(f"custom role {role!r} not found")
    return Response(status_code=204)


async def _actor_roles(db: Database, tenant_id: str, actor_id: str) -> ActorRoles:
    async with db.connection() as conn:
        roles = await auth.roles_of(conn, tenant_id, actor_id)
    return ActorRoles(actor_id=actor_id, roles=[r.name for r in roles])


@router.get("/actors/{actor_id}/roles", response_model=ActorRoles, summary="An actor's roles")
async def get_actor_roles(actor_id: ActorId, db: Db, who: Admin) -> ActorRoles:
    return await _actor_roles(db, who.tenant_id, actor_id)


@router.put("/actors/{actor_id}/roles/{role}", response_model=ActorRoles, summary="Grant a role")
async def grant_role(actor_id: ActorId, role: RoleName, db: Db, who: Admin) -> ActorRoles:
    async with db.transaction() as conn:
        await auth.grant(conn, who.tenant_id, actor_id, role, granted_by=who.actor_id)
    return await _actor_roles(db, who.tenant_id, actor_id)


@router.delete(
    "/actors/{actor_id}/roles/{role}",
    response_model=ActorRoles,
    summary="Revoke a role; applies to steps not yet started",
)
async def revoke_role(actor_id: ActorId, role: RoleName, db: Db, who: Admin) -> ActorRoles:
    async with db.connection() as conn:
        if not await auth.revoke_role(conn, who.tenant_id, actor_id, role):
            raise NotFound(f"actor {actor_id!r} does not hold role {role!r}")
    return await _actor_roles(db, who.tenant_id, actor_id)


@router.post("/tokens", status_code=201, response_model=TokenOut, summary="Create a token")
async def create_token(body: TokenCreate, db: Db, who: Admin) -> TokenOut:
    async with db.transaction() as conn:
        made = await auth.create_token(
            conn, who.tenant_id, body.actor_id, name=body.name, expires_at=body.expires_at
        )
    return TokenOut(token_id=made.token_id, actor_id=made.actor_id, token=made.token)


@router.delete("/tokens/{token_id}", status_code=204, summary="Revoke a token")
async def revoke_token(token_id: uuid.UUID, db: Db, who: Admin) -> Response:
    async with db.connection() as conn:
        if not await auth.revoke_token(conn, who.tenant_id, str(token_id)):
            raise NotFound(f"token {token_id} not found or already revoked")
    return Response(status_code=204)
