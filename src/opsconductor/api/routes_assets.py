"""``/api/v1/assets``: the tenant's inventory."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from opsconductor.api import models
from opsconductor.api.auth import Db, Who
from opsconductor.services import inventory

router = APIRouter(prefix="/assets", tags=["assets"])

AssetId = Annotated[str, Path(min_length=1, max_length=128)]


@router.get("", response_model=list[models.AssetOut], summary="The inventory")
async def list_assets(db: Db, who: Who) -> list[models.AssetOut]:
    return [models.AssetOut.from_asset(a) for a in await inventory.list_assets(db, who)]


@router.post("", status_code=201, response_model=models.AssetOut, summary="Add an asset")
async def create_asset(body: models.AssetCreate, db: Db, who: Who) -> models.AssetOut:
    added = await inventory.add_asset(db, who, body.to_asset(body.asset_id))
    return models.AssetOut.from_asset(added)


@router.get("/{asset_id}", response_model=models.AssetOut, summary="One asset")
async def get_asset(asset_id: AssetId, db: Db, who: Who) -> models.AssetOut:
    return models.AssetOut.from_asset(await inventory.get_asset(db, who, asset_id))


@router.put("/{asset_id}", response_model=models.AssetOut, summary="Replace an asset")
async def update_asset(
    asset_id: AssetId, body: models.AssetFields, db: Db, who: Who
) -> models.AssetOut:
    updated = await inventory.update_asset(db, who, body.to_asset(asset_id))
    return models.AssetOut.from_asset(updated)


@router.delete("/{asset_id}", status_code=204, summary="Remove an asset")
async def delete_asset(asset_id: AssetId, db: Db, who: Who) -> Response:
    await inventory.remove_asset(db, who, asset_id)
    return Response(status_code=204)
