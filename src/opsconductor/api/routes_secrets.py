"""``/api/v1/secrets``: the built-in secret store, write-only (SPEC 6.4, section 10).

Values go in and never come out: no endpoint returns one, and responses name the path only.
Reading a secret is the engine's job, just in time, for a step that references it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Response
from pydantic import BaseModel, Field

from opsconductor import secret_store
from opsconductor.api.auth import Caller, database, require
from opsconductor.api.inputs import CleanInput
from opsconductor.config import load_settings
from opsconductor.db import secrets as secret_rows
from opsconductor.db.connection import Database
from opsconductor.errors import NotFound

router = APIRouter(prefix="/secrets", tags=["secrets"])

Db = Annotated[Database, Depends(database)]
Manager = Annotated[Caller, Depends(require("secrets", "manage"))]
SecretPath = Annotated[str, Path(min_length=1, max_length=255)]


class SecretValue(CleanInput):
    value: str = Field(min_length=1, max_length=64 * 1024)


class SecretWritten(BaseModel):
    path: str
    created: bool


class SecretInfo(BaseModel):
    path: str
    key_id: str
    updated_at: datetime
    updated_by: str


@router.put(
    "/{path:path}",
    response_model=SecretWritten,
    responses={201: {"model": SecretWritten, "description": "Stored under a new path"}},
    summary="Store a secret",
)
async def put_secret(
    path: SecretPath, body: SecretValue, response: Response, db: Db, who: Manager
) -> SecretWritten:
    """Seal the value (AES-256-GCM) under ``path``; ``201`` if new, ``200`` if replaced."""
    created = await secret_store.put(
        db, load_settings().home, who.tenant_id, path, body.value, who.actor_id
    )
    response.status_code = 201 if created else 200
    return SecretWritten(path=path, created=created)


@router.get("", response_model=list[SecretInfo], summary="Secret paths (never values)")
async def list_secrets(db: Db, who: Manager) -> list[SecretInfo]:
    async with db.connection() as conn:
        rows = await secret_rows.list_all(conn, who.tenant_id)
    return [SecretInfo.model_validate({k: r[k] for k in SecretInfo.model_fields}) for r in rows]


@router.delete("/{path:path}", status_code=204, summary="Delete a secret")
async def delete_secret(path: SecretPath, db: Db, who: Manager) -> Response:
    if not await secret_store.delete(db, who.tenant_id, path):
        raise NotFound(f"secret {path!r} not found")
    return Response(status_code=204)
