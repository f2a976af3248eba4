"""``/api/v1/known-hosts``, ``/api/v1/tenant``, ``/api/v1/workers``: the tenant's trusted SSH
host keys, its settings, and the workers that run its executions."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, Field

from opsconductor.api.auth import Db, Who
from opsconductor.api.inputs import CleanInput
from opsconductor.services import inventory

router = APIRouter(tags=["tenant"])

Host = Annotated[str, Path(min_length=1, max_length=255)]
Port = Annotated[int, Query(ge=1, le=65535)]


class KnownHost(BaseModel):
    host: str
    port: int
    public_key: str
    added_by: str


class KnownHostIn(CleanInput):
    host: str = Field(min_length=1, max_length=255)
    port: int = Field(default=22, ge=1, le=65535)
    #: ``ssh-ed25519 AAAA…``, checked out of band by the person adding it
    public_key: str = Field(min_length=1, max_length=16_384)


class TenantOut(BaseModel):
    tenant_id: str
    record_only: bool
    host_key_policy: str
    #: read-only here: only the installation's administrator grants it (opsc tenant local-exec)
    local_execution: bool
    local_network: bool


class TenantPatch(CleanInput):
    record_only: bool | None = None
    host_key_policy: Literal["strict", "accept-new"] | None = None


class WorkerOut(BaseModel):
    worker_id: str
    host: str
    pid: int
    state: str
    in_flight: int
    concurrency: int
    started_at: datetime
    heartbeat_age_s: float


@router.get("/known-hosts", response_model=list[KnownHost], summary="Trusted SSH host keys")
async def list_known_hosts(db: Db, who: Who) -> list[KnownHost]:
    rows = await inventory.known_hosts(db, who)
    return [KnownHost.model_validate({k: r[k] for k in KnownHost.model_fields}) for r in rows]


@router.post(
    "/known-hosts",
    status_code=201,
    response_model=KnownHost,
    summary="Trust a first key (409 HOST KEY CHANGED if the host has another; 200 if known)",
)
async def add_known_host(body: KnownHostIn, db: Db, who: Who, response: Response) -> KnownHost:
    trusted = await inventory.trust_host_key(db, who, body.host, body.port, body.public_key)
    if not trusted.added:
        response.status_code = 200
    return KnownHost(
        host=body.host, port=body.port, public_key=trusted.key.text, added_by=who.actor_id
    )


class KnownHostReplace(CleanInput):
    port: int = Field(default=22, ge=1, le=65535)
    public_key: str = Field(min_length=1, max_length=16_384)
    #: ``SHA256:…`` as verified on the host itself; must be ``public_key``'s
    fingerprint: str = Field(min_length=1, max_length=128)
    #: replace only the stored key of the new key's type
    keep_other_types: bool = False


class KnownHostReplaced(BaseModel):
    host: str
    port: int
    old_fingerprints: list[str]
    new_fingerprint: str
    kept_fingerprints: list[str]
    #: the ``host_key_replaced`` audit event (None: the key was already exactly so)
    audit_event_id: int | None


@router.put(
    "/known-hosts/{host}",
    response_model=KnownHostReplaced,
    summary="Replace a host's keys after a rotation (audited)",
)
async def replace_known_host(
    host: Host, body: KnownHostReplace, db: Db, who: Who
) -> KnownHostReplaced:
    done = await inventory.replace_host_key(
        db,
        who,
        host,
        body.port,
        body.public_key,
        body.fingerprint,
        keep_other_types=body.keep_other_types,
    )
    return KnownHostReplaced(
        host=host,
        port=body.port,
        old_fingerprints=[k.fingerprint for k in done.old],
        new_fingerprint=done.new.fingerprint,
        kept_fingerprints=[k.fingerprint for k in done.kept],
        audit_event_id=done.event_id,
    )


@router.delete("/known-hosts/{host}", status_code=204, summary="Forget a host's keys")
async def delete_known_host(host: Host, db: Db, who: Who, port: Port = 22) -> Response:
    await inventory.forget_host(db, who, host, port)
    return Response(status_code=204)


async def _tenant(db: Db, who: Who) -> TenantOut:
    found = await inventory.tenant_settings(db, who)
    return TenantOut(
        tenant_id=who.tenant_id,
        record_only=found.record_only,
        host_key_policy=found.host_key_policy,
        local_execution=found.local_execution,
        local_network=found.local_network,
    )


@router.get("/tenant", response_model=TenantOut, summary="The caller's tenant settings")
async def get_tenant(db: Db, who: Who) -> TenantOut:
    return await _tenant(db, who)


@router.patch("/tenant", response_model=TenantOut, summary="Change tenant settings")
async def patch_tenant(body: TenantPatch, db: Db, who: Who) -> TenantOut:
    if body.record_only is not None:
        await inventory.set_record_only(db, who, body.record_only)
    if body.host_key_policy is not None:
        await inventory.set_host_key_policy(db, who, body.host_key_policy)
    return await _tenant(db, who)


@router.get("/workers", response_model=list[WorkerOut], summary="Workers and their heartbeats")
async def list_workers(db: Db, who: Who) -> list[WorkerOut]:
    rows = await inventory.workers(db, who)
    return [WorkerOut.model_validate({k: r[k] for k in WorkerOut.model_fields}) for r in rows]
