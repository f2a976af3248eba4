"""``/api/v1/roles``, ``/api/v1/actors/{actor}/roles``, ``/api/v1/tokens``: who may do what.

All of it needs ``access:manage`` (built-in: ``admin``), within the caller's tenant only.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Response
from pydantic import BaseModel, Field

from opsconductor import rbac
from opsconductor.api.auth import Db, Who
from opsconductor.api.inputs import CleanInput
from opsconductor.services import access

router = APIRouter(tags=["access"])

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
    #: roles to grant the actor along with the token
    roles: list[str] = Field(default_factory=list, max_length=20)


class TokenOut(BaseModel):
    token_id: uuid.UUID
    actor_id: str
    #: shown once; only its SHA-256 is stored
    token: str


@router.get("/roles", response_model=list[RoleOut], summary="Built-in and custom roles")
async def list_roles(db: Db, who: Who) -> list[RoleOut]:
    return [RoleOut.from_role(r) for r in (await access.roles(db, who)).roles]


@router.get("/role-bindings", response_model=list[ActorRoles], summary="Who holds which roles")
async def list_bindings(db: Db, who: Who) -> list[ActorRoles]:
    held: dict[str, list[str]] = {}
    for row in (await access.roles(db, who)).bindings:
        held.setdefault(str(row["actor_id"]), []).append(str(row["role_name"]))
    return [ActorRoles(actor_id=a, roles=sorted(r)) for a, r in sorted(held.items())]


@router.post("/roles", status_code=201, response_model=RoleOut, summary="Define a custom role")
async def create_role(body: RoleCreate, db: Db, who: Who) -> RoleOut:
    role = await access.define_role(db, who, body.name, body.permissions, body.description)
    return RoleOut.from_role(role)


@router.delete("/roles/{role}", status_code=204, summary="Delete a custom role")
async def delete_role(role: RoleName, db: Db, who: Who) -> Response:
    await access.delete_role(db, who, role)
    return Response(status_code=204)


async def _actor_roles(db: Db, who: Who, actor_id: str) -> ActorRoles:
    roles = await access.roles_of(db, who, actor_id)
    return ActorRoles(actor_id=actor_id, roles=[r.name for r in roles])


@router.get("/actors/{actor_id}/roles", response_model=ActorRoles, summary="An actor's roles")
async def get_actor_roles(actor_id: ActorId, db: Db, who: Who) -> ActorRoles:
    return await _actor_roles(db, who, actor_id)


@router.put("/actors/{actor_id}/roles/{role}", response_model=ActorRoles, summary="Grant a role")
async def grant_role(actor_id: ActorId, role: RoleName, db: Db, who: Who) -> ActorRoles:
    await access.grant(db, who, actor_id, role)
    return await _actor_roles(db, who, actor_id)


@router.delete(
    "/actors/{actor_id}/roles/{role}",
    response_model=ActorRoles,
    summary="Revoke a role; applies to steps not yet started",
)
async def revoke_role(actor_id: ActorId, role: RoleName, db: Db, who: Who) -> ActorRoles:
    await access.revoke(db, who, actor_id, role)
    return await _actor_roles(db, who, actor_id)


class TokenInfo(BaseModel):
    token_id: uuid.UUID
    actor_id: str
    name: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


@router.get("/tokens", response_model=list[TokenInfo], summary="Tokens (never their values)")
async def list_tokens(db: Db, who: Who) -> list[TokenInfo]:
    rows = await access.list_tokens(db, who)
    return [TokenInfo.model_validate({k: r.get(k) for k in TokenInfo.model_fields}) for r in rows]


@router.post("/tokens", status_code=201, response_model=TokenOut, summary="Create a token")
async def create_token(body: TokenCreate, db: Db, who: Who) -> TokenOut:
    made = await access.create_token(
        db, who, body.actor_id, name=body.name, expires_at=body.expires_at, roles=body.roles
    )
    return TokenOut(token_id=made.token_id, actor_id=made.actor_id, token=made.token)


@router.delete("/tokens/{token_id}", status_code=204, summary="Revoke a token")
async def revoke_token(token_id: uuid.UUID, db: Db, who: Who) -> Response:
    await access.revoke_token(db, who, str(token_id))
    return Response(status_code=204)
