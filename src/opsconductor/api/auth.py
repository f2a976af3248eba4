"""Authentication (bearer API tokens) and the API's RBAC check, as FastAPI dependencies."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from opsconductor import metrics, rbac
from opsconductor.db import auth
from opsconductor.db.connection import Database
from opsconductor.errors import PermissionDenied, Unauthenticated

log = structlog.get_logger("opsconductor.api")

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="token",
    description="An API token from `opsc tokens create`, sent as `Authorization: Bearer <token>`",
)


@dataclass(frozen=True)
class Caller:
    """An authenticated request: its tenant, its actor and their roles as of this request."""

    principal: auth.Principal
    roles: list[rbac.Role]

    @property
    def tenant_id(self) -> str:
        return self.principal.tenant_id

    @property
    def actor_id(self) -> str:
        return self.principal.actor_id

    def require(self, resource: str, action: str, environment: str | None = None) -> None:
        decision = rbac.decide(self.roles, resource, action, environment)
        if not decision.allowed:
            log.warning(
                "rbac_violation",
                tenant_id=self.tenant_id,
                actor_id=self.actor_id,
                resource=resource,
                action=action,
                environment=environment,
            )
            metrics.API_RBAC_DENIALS.labels(resource, action).inc()
            raise PermissionDenied(f"actor {self.actor_id!r}: {decision.reason}")


def database(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


async def authenticate(db: Database, token: str) -> Caller:
    """The caller a token stands for, with their roles as of now."""
    if not token:
        raise Unauthenticated("missing credentials: send 'Authorization: Bearer <token>'")
    async with db.connection() as conn:
        principal = await auth.authenticate(conn, token)
        if principal is None:
            raise Unauthenticated("the bearer token is not valid (unknown, revoked or expired)")
        roles = await auth.roles_of(conn, principal.tenant_id, principal.actor_id)
    return Caller(principal, roles)


async def caller(
    db: Database = Depends(database),
    credentials: HTTPAuthorizationCredentials | None = Depends(bearer),
) -> Caller:
    return await authenticate(db, credentials.credentials if credentials else "")


def require(resource: str, action: str) -> Callable[..., Awaitable[Caller]]:
    """Dependency: an authenticated caller whose roles grant (resource, action)."""

    async def allowed(who: Caller = Depends(caller)) -> Caller:
        who.require(resource, action)
        return who

    return allowed
