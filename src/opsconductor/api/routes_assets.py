"""``/api/v1/assets``: the tenant's inventory."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Response

from opsconductor.api import models
from opsconductor.api.auth import Caller, database, require
from opsconductor.db import assets
from opsconductor.db.connection import Database
from opsconductor.errors import NotFound

router = APIRouter(prefix="/assets", tags=["assets"])

Db = Annotated[Database, Depends(database)]
Viewer = Annotated[Caller, Depends(require("assets", "view"))]
Manager = Annotated[Caller, Depends(require("assets", "manage"))]
AssetId = Annotated[str, Path(min_length=1, max_length=128)]


@router.get("", response_model=list[models.AssetOut], summary="The inventory")
async def list_assets(db: Db, who: Viewer) -> list[models.AssetOut]:
    async with db.connection() as conn:
        return [models.AssetOut.from_asset(a) for a in await assets.list_all(conn, who.tenant_id)]


@router.post("", status_code=201, response_model=models.AssetOut, summary="Add an asset")
async def create_asset(body: models.AssetCreate, db: Db, who: Manager) -> models.AssetOut:
    async with db.connection() as conn:
        added = await assets.add(conn, who.tenant_id, body.to_asset(body.asset_id))
    return models.AssetOut.from_asset(added)


@router.get("/{asset_id}", response_model=models.AssetOut, summary="One asset")
async def get_asset(asset_id: AssetId, db: Db, who: Viewer) -> models.AssetOut:
    async with db.connection() as conn:
        found = await assets.get(conn, who.tenant_id, asset_id)
    if found is None:
        raise NotFound(f"asset {asset_id!r} not found")
    return models.AssetOut.from_asset(found)


@router.put("/{asset_id}", response_model=models.AssetOut, summary="Replace an asset")
async def update_asset(
    asset_id: AssetId, body: models.AssetFields, db: Db, who: Manager
) -> models.AssetOut:
    async with db.connection() as conn:
        updated = await assets.update(conn, who.tenant_id, body.to_asset(asset_id))
    if updated is None:
        raise NotFound(f"asset {asset_id!r} not found")
    return models.AssetOut.from_asset(updated)


@router.delete("/{asset_id}", status_code=204, summary="Remove an asset")
async def delete_asset(asset_id: AssetId, db: Db, who: Manager) -> Response:
    async with db.connection() as conn:
        if not await assets.delete(conn, who.tenant_id, asset_id):
            raise NotFound(f"asset {asset_id!r} not found")
    return Response(status_code=204)
