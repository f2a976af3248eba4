"""Inbound webhook use cases: create (the secret is shown once), list, remove, read the
deliveries; and ``deliver``, the unauthenticated entry point a signature authenticates.

Every delivery to a known hook is recorded, accepted or refused, with the reason: never
the body (its SHA-256 only) nor the secret. An accepted delivery's row and its execution
are stored in one transaction, and the row's unique indexes (signature, delivery id) make
a replay, however concurrent, a 409 that starts nothing.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import string
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opsconductor import hooks, jobs
from opsconductor.db import executions
from opsconductor.db import hooks as rows
from opsconductor.db.connection import Database
from opsconductor.db.secrets import Sealed
from opsconductor.errors import (
    BadInput,
    Conflict,
    DatabaseError,
    NotFound,
    OpsError,
    PermissionDenied,
    PlanError,
    TargetResolutionError,
    Unauthenticated,
)
from opsconductor.hooks import Delivery, Hook
from opsconductor.records import Execution
from opsconductor.services import jobs as job_service
from opsconductor.services.caller import Caller, delegated

#: Where a hook's signing secret is sealed in the tenant's secret store.
SECRET_PREFIX = "hooks/"


@dataclass(frozen=True)
class Created:
    hook: Hook
    #: the signing secret: shown this once, then only sealed in the secret store
    secret: str


async def create(
    db: Database,
    who: Caller,
    home: Path,
    job_name: str,
    *,
    mapping: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
    version: int | None = None,
    follow_latest: bool = False,
) -> Created:
    """A hook that runs ``job_name`` as the caller (roles read at each delivery): one
    version, ``version`` or the job's latest now; ``follow_latest``: the job's latest at
    each delivery instead (whatever a later saver wrote, as the caller)."""
    from opsconductor import secret_store
    from opsconductor.plan import parse_plan

    who.require("jobs", "save")
    who.require("jobs", "run")
    if follow_latest and version is not None:
        raise BadInput("version: a hook runs one version or follows the latest, not both")
    checked = hooks.check_mapping(mapping or {})
    fixed = dict(params or {})
    _, chosen = await job_service.show(db, who, job_name, version)
    declared = parse_plan(chosen.plan).params
    for name in [*checked, *fixed]:
        if name not in declared:
            raise BadInput(f"mapping.{name}: job {job_name!r} declares no such parameter")
    hook_id = new_hook_id()
    secret = secrets.token_urlsafe(32)
    path = SECRET_PREFIX + hook_id
    await secret_store.put(db, home, who.tenant_id, path, secret, who.actor_id)
    async with db.transaction() as conn:
        hook = await rows.insert(
            conn,
            hook_id,
            who.tenant_id,
            job_name,
            None if follow_latest else chosen.version,
            path,
            checked,
            fixed,
            who.actor_id,
        )
    return Created(hook, secret)


# Letters and digits only: a token_urlsafe id could begin with "-", which a shell command
# line (`opsc hooks deliveries JOB ID`) reads as an option. 24 of 62 symbols: 142 bits.
_ID_ALPHABET = string.ascii_letters + string.digits


def new_hook_id() -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(24))


async def list_hooks(db: Database, who: Caller, job_name: str | None = None) -> list[Hook]:
    who.require("jobs", "view")
    if job_name is not None:
        jobs.check_name(job_name)
    async with db.connection() as conn:
        return await rows.list_all(conn, who.tenant_id, job_name)


async def remove(db: Database, who: Caller, hook_id: str) -> None:
    from opsconductor import secret_store

    who.require("jobs", "save")
    async with db.transaction() as conn:
        path = await rows.delete(conn, who.tenant_id, hook_id)
    if path is None:
        raise NotFound(f"webhook {hook_id!r} not found")
    await secret_store.delete(db, who.tenant_id, path)


async def deliveries(db: Database, who: Caller, hook_id: str, limit: int = 50) -> list[Delivery]:
    who.require("jobs", "view")
    async with db.connection() as conn:
        return await rows.deliveries(conn, who.tenant_id, hook_id, min(max(limit, 1), 500))


# --- delivery ---------------------------------------------------------------------------


def status_of(exc: OpsError) -> int:
    """The HTTP status a refusal is answered (and recorded) with."""
    for kind, status in (
        (Unauthenticated, 401),
        (PermissionDenied, 403),
        (NotFound, 404),
        (Conflict, 409),
        (PlanError, 422),
        (TargetResolutionError, 422),
        (BadInput, 400),
    ):
        if isinstance(exc, kind):
            return status
    return 500


def _reason(exc: OpsError) -> str:
    # A parameter's refusal may quote the value it got from the body: not recorded.
    return re.sub(r"\(got .*\)", "(value not recorded)", str(exc))[:500]


@dataclass(frozen=True)
class Request:
    hook_id: str
    body: bytes
    timestamp: str | None
    signature: str | None
    delivery_id: str | None


#: Refused deliveries recorded per hook and minute; more are refused all the same, unrecorded
#: (a hook's URL is not a secret: a flood of bad requests must not grow the table).
REFUSALS_RECORDED_PER_MINUTE = 30


async def deliver(db: Database, home: Path, request: Request, *, window_s: float) -> Execution:
    """Check and run one delivery; raises (after recording it, within the hook's refusal
    budget) when it is refused.

    What needs no secret is checked first, before the hook is read (``hooks.precheck``).
    Past that, every request to a known hook costs one read (the hook with its sealed
    secret) and a decryption: there is no per-hook bound on that, as refusing unchecked
    once a hook saw N bad requests would let anyone who knows its URL (not a secret) lock
    its genuine sender out."""
    body_sha = hashlib.sha256(request.body).hexdigest()
    try:
        digest = hooks.precheck(
            request.timestamp,
            request.signature,
            len(request.body),
            request.delivery_id,
            now=time.time(),
            window_s=window_s,
        )
    except OpsError as exc:  # recorded by one statement, for a known hook only
        # the digest as given, if well-formed (precheck may have refused it for its form)
        given = hooks.signature_digest(request.signature)
        await _record_refusal(db, request, exc, given, body_sha)
        raise
    async with db.connection() as conn:
        found = await rows.get(conn, request.hook_id)  # with its sealed secret
    if found is None:
        # No tenant to record it for: whoever guesses ids must not fill a table.
        raise NotFound(f"webhook {request.hook_id!r} not found")
    hook, sealed = found
    try:
        return await _deliver(db, home, hook, sealed, request, digest, body_sha)
    except DatabaseError:
        raise
    except OpsError as exc:
        await _record_refusal(db, request, exc, digest, body_sha)
        raise


async def _record_refusal(
    db: Database, request: Request, exc: OpsError, digest: str | None, body_sha: str
) -> None:
    refused = rows.Refusal(
        request.hook_id,
        status_of(exc),
        _reason(exc),
        digest,
        (request.delivery_id or "")[:200] or None,
        body_sha,
    )
    async with db.connection() as conn:
        await rows.record_refusal(conn, refused, REFUSALS_RECORDED_PER_MINUTE)


async def _deliver(
    db: Database,
    home: Path,
    hook: Hook,
    sealed: Sealed | None,
    request: Request,
    digest: str,
    body_sha: str,
) -> Execution:
    from opsconductor import safe_parse
    from opsconductor.secret_store import StoreBackend

    if sealed is None:
        raise Unauthenticated("this webhook's signing secret is gone; create the hook again")
    secret = StoreBackend(db, home).open(hook.tenant_id, hook.secret_path, sealed)
    assert request.timestamp is not None  # precheck's
    if not hooks.signed_by(secret, request.timestamp, digest, request.body):
        raise Unauthenticated("bad signature")
    delivery_id = request.delivery_id  # its form: precheck's
    async with db.connection() as conn:
        if await rows.seen(conn, hook.id, digest, delivery_id):
            raise Conflict("replay: this signature or delivery id was accepted before")
    try:
        text = request.body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadInput("body: not valid UTF-8") from None
    body = safe_parse.load_json(text, "body") if text.strip() else {}
    params = {**hook.params, **hooks.extract(body, hook.mapping)}
    who = await delegated(db, hook.tenant_id, hook.created_by)
    new = await job_service.prepare_run(
        db,
        who,
        hook.job_name,
        params,
        version=hook.job_version,
        idempotency_key=f"hook:{hook.id}:{digest}",
    )
    async with db.transaction() as conn:
        accepted = await rows.record(
            conn,
            rows.NewDelivery(
                hook.id,
                hook.tenant_id,
                accepted=True,
                status_code=202,
                signature=digest,
                delivery_id=delivery_id,
                body_sha256=body_sha,
            ),
        )
        if accepted is None:  # a concurrent twin was accepted first
            raise Conflict("replay: this signature or delivery id was accepted before")
        done = await executions.submit_in(conn, new)
        await rows.set_execution(conn, accepted, done.execution.id)
    return done.execution
