"""``/api/v1/secrets``: the built-in secret store, write-only.

Values go in and never come out: no endpoint returns one, and responses name the path only.
Reading a secret is the engine's job, just in time, for a step that references it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Response
from pydantic import BaseModel, Field

from opsconductor.api.auth import Db, Who
from opsconductor.api.inputs import CleanInput
from opsconductor.config import load_settings
from opsconductor.services import secrets

router = APIRouter(prefix="/secrets", tags=["secrets"])

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
    path: SecretPath, body: SecretValue, response: Response, db: Db, who: Who
) -> SecretWritten:
    """Seal the value (AES-256-GCM) under ``path``; ``201`` if new, ``200`` if replaced."""
    created = await secrets.put(db, who, load_settings().home, path, body.value)
    response.status_code = 201 if created else 200
    return SecretWritten(path=path, created=created)


@router.get("", response_model=list[SecretInfo], summary="Secret paths (never values)")
async def list_secrets(db: Db, who: Who) -> list[SecretInfo]:
    rows = await secrets.list_paths(db, who)
    return [SecretInfo.model_validate({k: r[k] for k in SecretInfo.model_fields}) for r in rows]


@router.delete("/{path:path}", status_code=204, summary="Delete a secret")
async def delete_secret(path: SecretPath, db: Db, who: Who) -> Response:
    await secrets.delete(db, who, path)
    return Response(status_code=204)


class PatternIn(CleanInput):
    pattern: str = Field(min_length=1, max_length=1000)


class PatternOut(BaseModel):
    name: str
    pattern: str
    created_by: str


PatternName = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")]
patterns = APIRouter(prefix="/masking-patterns", tags=["secrets"])


@patterns.get("", response_model=list[PatternOut], summary="The tenant's masking patterns")
async def list_patterns(db: Db, who: Who) -> list[PatternOut]:
    rows = await secrets.patterns(db, who)
    return [PatternOut.model_validate({k: r[k] for k in PatternOut.model_fields}) for r in rows]


@patterns.put("/{name}", response_model=PatternOut, summary="Add or replace a masking pattern")
async def put_pattern(name: PatternName, body: PatternIn, db: Db, who: Who) -> PatternOut:
    await secrets.add_pattern(db, who, name, body.pattern)
    return PatternOut(name=name, pattern=body.pattern, created_by=who.actor_id)


@patterns.delete("/{name}", status_code=204, summary="Remove a masking pattern")
async def delete_pattern(name: PatternName, db: Db, who: Who) -> Response:
    await secrets.remove_pattern(db, who, name)
    return Response(status_code=204)
