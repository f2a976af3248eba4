"""Authentication for the API: a bearer token becomes a :class:`Caller`.

Permissions are not checked here: every use case in ``opsconductor.services`` checks its
caller once, whichever adapter (API, CLI, console) called it.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from opsconductor.db.connection import Database
from opsconductor.services.caller import Caller, from_token

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="token",
    description="An API token from `opsc tokens create`, sent as `Authorization: Bearer <token>`",
)


def database(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


async def authenticate(db: Database, token: str) -> Caller:
    """The caller a token stands for, with their roles as of now."""
    return await from_token(db, token)


async def caller(
    db: Database = Depends(database),
    credentials: HTTPAuthorizationCredentials | None = Depends(bearer),
) -> Caller:
    return await authenticate(db, credentials.credentials if credentials else "")


Db = Annotated[Database, Depends(database)]
Who = Annotated[Caller, Depends(caller)]
