"""``/api/v1/me``: who the bearer token speaks for and what it may do (the console asks)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from opsconductor import rbac
from opsconductor.api.auth import Who

router = APIRouter(tags=["access"])


class Me(BaseModel):
    tenant_id: str
    actor_id: str
    #: role names bound to the actor in the tenant
    roles: list[str]
    #: ``resource:action`` granted everywhere, ``resource:action@env,...`` only there
    permissions: list[str]


@router.get("/me", response_model=Me, summary="The caller: tenant, actor, roles, permissions")
async def me(who: Who) -> Me:
    """Any valid token may ask; a token without roles gets empty lists."""
    return Me(
        tenant_id=who.tenant_id,
        actor_id=who.actor_id,
        roles=[r.name for r in who.roles],
        permissions=rbac.held_permissions(who.roles),
    )
