"""``/api/v1/inventory/sources``: the tenant's dynamic inventory sources (tenant admins),
and their sync (``POST .../sync?dry_run=true`` shows the diff without applying it)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, Field

from opsconductor.api.auth import Db, Who
from opsconductor.api.inputs import CleanInput
from opsconductor.inventory_sources import plan_body, source_body
from opsconductor.services import inventory_sources as service

router = APIRouter(tags=["inventory"])

Name = Annotated[str, Path(min_length=1, max_length=63)]


class SourceIn(CleanInput):
    name: str = Field(min_length=1, max_length=63)
    kind: Literal["ansible", "netbox"]
    #: ansible: an inventory directory or plugin config, relative to the files root
    path: str | None = Field(default=None, min_length=1, max_length=1024)
    #: netbox: the API's base URL
    url: str | None = Field(default=None, min_length=1, max_length=2048)
    #: netbox: the secret store path of the API token (``opsc secrets set``), not a token
    token_ref: str | None = Field(default=None, min_length=1, max_length=255)
    environment: str = Field(default="dev", min_length=1, max_length=63)
    #: sync on a schedule: 15m, 1h, 1d (none: on demand only)
    every: str | None = Field(default=None, min_length=2, max_length=10)


class SourceOut(BaseModel):
    name: str
    kind: str
    path: str | None
    url: str | None
    token_ref: str | None
    environment: str
    every: str | None
    next_sync_at: datetime | None
    last_sync_at: datetime | None
    last_result: str | None
    last_error: str | None
    last_counts: dict[str, int] | None
    created_by: str


class Added(BaseModel):
    asset_id: str
    #: hostname, address, ..., ``tags.KEY``, ``vars.KEY``
    fields: dict[str, Any]


class FieldChange(BaseModel):
    field: str
    old: Any
    new: Any


class Changed(BaseModel):
    asset_id: str
    changes: list[FieldChange]


class Removed(BaseModel):
    asset_id: str
    hostname: str
    address: str


class SyncOut(BaseModel):
    #: false: a dry run, nothing changed
    applied: bool
    added: list[Added]
    changed: list[Changed]
    removed: list[Removed]
    unchanged: int
    warnings: list[str]


@router.get("/inventory/sources", response_model=list[SourceOut], summary="Inventory sources")
async def list_sources(db: Db, who: Who) -> list[dict[str, Any]]:
    return [source_body(x) for x in await service.list_sources(db, who)]


@router.post(
    "/inventory/sources",
    response_model=SourceOut,
    status_code=201,
    summary="Add an inventory source (tenant admins; audited as inventory_source_added)",
)
async def add_source(body: SourceIn, db: Db, who: Who) -> dict[str, Any]:
    return source_body(await service.add_source(db, who, **body.model_dump()))


@router.delete(
    "/inventory/sources/{name}",
    status_code=204,
    summary="Remove an inventory source (its assets stay; audited)",
)
async def remove_source(name: Name, db: Db, who: Who) -> Response:
    await service.remove_source(db, who, name)
    return Response(status_code=204)


@router.post(
    "/inventory/sources/{name}/sync",
    response_model=SyncOut,
    summary="Sync the inventory with a source (dry_run: the diff only)",
    responses={502: {"description": "The source could not be read: the detail says why"}},
)
async def sync_source(
    name: Name, db: Db, who: Who, dry_run: Annotated[bool, Query()] = False
) -> dict[str, Any]:
    plan = await service.sync(db, who, name, dry_run=dry_run)
    return plan_body(plan, applied=not dry_run)
