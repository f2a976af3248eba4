"""Inbound webhooks: ``POST /api/v1/hooks/{id}`` (no token: an HMAC signature proves the
sender) and their management under ``/api/v1/jobs/{name}/hooks`` (services/hooks.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Request, Response

from opsconductor.api.auth import Db, Who, database
from opsconductor.api.job_models import DeliveryOut, HookAccepted, HookCreated, HookIn, HookOut
from opsconductor.config import load_settings
from opsconductor.errors import NotFound
from opsconductor.hooks import DELIVERY_HEADER, MAX_BODY, SIGNATURE_HEADER, TIMESTAMP_HEADER
from opsconductor.services import hooks

router = APIRouter(prefix="/hooks", tags=["webhooks"])
manage = APIRouter(prefix="/jobs", tags=["webhooks"])

HookId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{16,64}$")]
JobName = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$")]


@router.post(
    "/{hook_id}",
    status_code=202,
    response_model=HookAccepted,
    summary="Start the hook's job (signed request)",
    responses={
        401: {"description": "Missing or bad signature, or a stale timestamp"},
        409: {"description": "A replay: this signature or delivery id was accepted before"},
    },
)
async def deliver(
    hook_id: HookId,
    request: Request,
    timestamp: Annotated[str | None, Header(alias=TIMESTAMP_HEADER, max_length=20)] = None,
    signature: Annotated[str | None, Header(alias=SIGNATURE_HEADER, max_length=100)] = None,
    delivery: Annotated[str | None, Header(alias=DELIVERY_HEADER, max_length=200)] = None,
) -> HookAccepted:
    """The body (JSON, at most 64 KiB) is signed as ``timestamp + "." + body`` with
    HMAC-SHA256 under the hook's secret: ``X-Opsc-Signature: sha256=<hex>``."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            break  # recorded and refused by the service, without reading the rest
    settings = load_settings()
    execution = await hooks.deliver(
        database(request),
        settings.home,
        hooks.Request(hook_id, bytes(body), timestamp, signature, delivery),
        window_s=settings.hook_window_s,
    )
    return HookAccepted(
        execution_id=execution.id,
        status=execution.status.value,
        job=execution.job_name or "",
        job_version=execution.job_version,
    )


@manage.post("/{name}/hooks", status_code=201, response_model=HookCreated, summary="Add a hook")
async def add_hook(name: JobName, body: HookIn, db: Db, who: Who) -> HookCreated:
    """The answer holds the signing secret, this once."""
    made = await hooks.create(
        db,
        who,
        load_settings().home,
        name,
        mapping=body.mapping,
        params=body.params,
        version=body.version,
        follow_latest=body.follow_latest,
    )
    return HookCreated(**HookOut.of(made.hook).model_dump(), secret=made.secret)


@manage.get("/{name}/hooks", response_model=list[HookOut], summary="The job's hooks")
async def list_hooks(name: JobName, db: Db, who: Who) -> list[HookOut]:
    return [HookOut.of(h) for h in await hooks.list_hooks(db, who, name)]


async def _of_job(db: Db, who: Who, name: str, hook_id: str) -> None:
    if not any(h.id == hook_id for h in await hooks.list_hooks(db, who, name)):
        raise NotFound(f"job {name!r} has no webhook {hook_id!r}")


@manage.delete("/{name}/hooks/{hook_id}", status_code=204, summary="Remove a hook")
async def remove_hook(name: JobName, hook_id: HookId, db: Db, who: Who) -> Response:
    await _of_job(db, who, name, hook_id)
    await hooks.remove(db, who, hook_id)
    return Response(status_code=204)


@manage.get(
    "/{name}/hooks/{hook_id}/deliveries",
    response_model=list[DeliveryOut],
    summary="Deliveries, accepted and refused, newest first",
)
async def hook_deliveries(
    name: JobName,
    hook_id: HookId,
    db: Db,
    who: Who,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[DeliveryOut]:
    await _of_job(db, who, name, hook_id)
    found = await hooks.deliveries(db, who, hook_id, limit)
    return [DeliveryOut.model_validate(d, from_attributes=True) for d in found]
