"""Who is asking: identity from a credential, never from an environment variable."""

from __future__ import annotations

import os
import pwd
import re
from dataclasses import dataclass
from enum import StrEnum

import structlog

from opsconductor import rbac
from opsconductor.db import auth
from opsconductor.db.connection import Database
from opsconductor.errors import BadInput, PermissionDenied, Unauthenticated

log = structlog.get_logger("opsconductor.services")

#: Actor ids of local administrators: ``local-admin:<unix user>``. Reserved: no token or role
#: binding made through the API may name such an actor, so nobody can pose as one.
LOCAL_ADMIN_PREFIX = "local-admin:"
#: Prefixes the product itself writes as actors (workers, sweeps, bootstrap): reserved too.
RESERVED_PREFIXES = (LOCAL_ADMIN_PREFIX, "system:", "worker:", "api:", "bootstrap:")
_ACTOR_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$")


class AuthMethod(StrEnum):
    #: an API bearer token: the token's actor in the token's tenant
    TOKEN = "token"
    #: the shell of the installation, talking to the database directly: whoever can read
    #: the database credentials owns every tenant anyway; named after the OS user
    LOCAL_ADMIN = "local-admin"
    #: a schedule or an inbound webhook acting for the person who created it, with that
    #: person's roles as of the moment it fires (a revoked role stops its runs)
    DELEGATED = "delegated"


@dataclass(frozen=True)
class Caller:
    """An authenticated caller: tenant, actor, roles as of now, and how it was proven."""

    tenant_id: str
    actor_id: str
    roles: tuple[rbac.Role, ...]
    via: AuthMethod

    @property
    def installation_admin(self) -> bool:
        """May change what the installation lets a tenant do (local execution, say): only
        the local administrator, never a tenant's own admin over the API."""
        return self.via is AuthMethod.LOCAL_ADMIN

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
            from opsconductor import metrics  # prometheus_client: a denial's cost, not a start's

            metrics.API_RBAC_DENIALS.labels(resource, action).inc()
            raise PermissionDenied(f"actor {self.actor_id!r}: {decision.reason}")

    def require_installation_admin(self, what: str) -> None:
        if not self.installation_admin:
            raise PermissionDenied(
                f"actor {self.actor_id!r}: {what} is for the installation's administrator "
                "(opsc on the server, without a login), not for a tenant's roles"
            )


def unix_user() -> str:
    """The operating system's name for the effective user (not $USER: that is self-asserted)."""
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid{os.geteuid()}"


def local_admin_actor() -> str:
    return f"{LOCAL_ADMIN_PREFIX}{unix_user()}"


def check_actor_id(actor_id: str, field: str = "actor_id") -> str:
    """An actor id a caller may name (tokens, role bindings): not one of ours."""
    if actor_id.startswith(RESERVED_PREFIXES):
        raise BadInput(
            f"{field}: {actor_id!r}: prefixes {', '.join(RESERVED_PREFIXES)} are reserved"
        )
    if not _ACTOR_ID.match(actor_id):
        raise BadInput(
            f"{field}: {actor_id!r} is not a valid actor id (1-128 of letters, digits, "
            "'.', '_', '@', '+', '-'; starting with a letter or digit)"
        )
    return actor_id


async def local_admin(db: Database, tenant_id: str) -> Caller:
    """The person at the installation's shell, as ``local-admin:<unix user>`` with the admin
    role in the tenant. The binding is recorded (``opsc roles list`` shows it) so that the
    worker's second RBAC check, which reads bindings, sees the same rights."""
    actor = local_admin_actor()
    async with db.transaction() as conn:
        await auth.ensure_local_admin(conn, tenant_id, actor)
    return Caller(tenant_id, actor, (rbac.BUILTIN_ROLES["admin"],), AuthMethod.LOCAL_ADMIN)


async def delegated(db: Database, tenant_id: str, actor_id: str) -> Caller:
    """The creator of a schedule or webhook, with their role bindings as of now."""
    async with db.connection() as conn:
        roles = await auth.roles_of(conn, tenant_id, actor_id)
    return Caller(tenant_id, actor_id, tuple(roles), AuthMethod.DELEGATED)


async def from_token(db: Database, token: str) -> Caller:
    """The caller a bearer token stands for, with their roles as of now."""
    if not token:
        raise Unauthenticated("missing credentials: send 'Authorization: Bearer <token>'")
    async with db.connection() as conn:
        principal = await auth.authenticate(conn, token)
        if principal is None:
            raise Unauthenticated("the bearer token is not valid (unknown, revoked or expired)")
        roles = await auth.roles_of(conn, principal.tenant_id, principal.actor_id)
    return Caller(principal.tenant_id, principal.actor_id, tuple(roles), AuthMethod.TOKEN)
