"""Inbound webhooks: signatures, replay windows and body-to-params mapping. Pure.

A sender signs ``timestamp + "." + body`` with HMAC-SHA256 under the hook's secret and
sends ``X-Opsc-Timestamp: <unix seconds>`` and ``X-Opsc-Signature: sha256=<hex>``
(optionally ``X-Opsc-Delivery: <id>``). A request is refused (401) without both headers,
with a timestamp more than the window away from now (both checked before the hook is
read), or with a signature that does not match (compared in constant time); an accepted
signature or delivery id seen again is a replay (409, decided in the database).

A hook maps fields of the JSON body to the job's params: ``{"version": "/release/tag"}``
(a JSON pointer, RFC 6901) or ``{"version": "release.tag"}`` (a dotted path; a list item
by its index). A mapped value must be a string, an integer, a boolean or null.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Self

from opsconductor.errors import BadInput, Unauthenticated
from opsconductor.params import NAME
from opsconductor.records import row_values

TIMESTAMP_HEADER = "X-Opsc-Timestamp"
SIGNATURE_HEADER = "X-Opsc-Signature"
DELIVERY_HEADER = "X-Opsc-Delivery"
#: Largest body a hook takes.
MAX_BODY = 64 * 1024
MAX_MAPPINGS = 32
MAX_PATH = 256
MAX_SEGMENTS = 32
_SIGNATURE = re.compile(r"^sha256=([0-9a-fA-F]{64})$")
_TIMESTAMP = re.compile(r"^\d{1,12}$")
_DELIVERY = re.compile(r"^[\x21-\x7e]{1,200}$")


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The hex HMAC-SHA256 of ``timestamp + "." + body`` (what a sender puts after
    ``sha256=``)."""
    message = timestamp.encode("ascii") + b"." + body
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def signature_digest(header: str | None) -> str | None:
    match = _SIGNATURE.match(header or "")
    return match[1].lower() if match else None


def precheck(
    timestamp: str | None,
    signature: str | None,
    body_size: int,
    delivery_id: str | None,
    *,
    now: float,
    window_s: float,
) -> str:
    """The given signature's hex digest, once everything a request can be refused for
    without the hook's secret is checked: the body's size, the headers' presence and form,
    the timestamp's window. Run before the hook is read: the answer is the same whether
    the hook exists or not, and a careless flood costs no read and no decryption."""
    if body_size > MAX_BODY:
        raise BadInput(f"body: {body_size} bytes; a webhook takes {MAX_BODY}")
    if not timestamp or not signature:
        raise Unauthenticated(f"missing {TIMESTAMP_HEADER} or {SIGNATURE_HEADER} header")
    digest = signature_digest(signature)
    if digest is None:
        raise Unauthenticated(f"{SIGNATURE_HEADER}: expected sha256=<64 hex digits>")
    if not _TIMESTAMP.match(timestamp):
        raise Unauthenticated(f"{TIMESTAMP_HEADER}: expected unix seconds")
    if abs(now - int(timestamp)) > window_s:
        raise Unauthenticated(f"stale timestamp: more than {window_s:g} s from now")
    check_delivery_id(delivery_id)
    return digest


def signed_by(secret: str, timestamp: str, digest: str, body: bytes) -> bool:
    """Is ``digest`` (from ``precheck``) the signature of this request under ``secret``?
    Compared in constant time."""
    return hmac.compare_digest(sign(secret, timestamp, body), digest)


def check_delivery_id(value: str | None) -> str | None:
    if value is None:
        return None
    if not _DELIVERY.match(value):
        raise BadInput(f"{DELIVERY_HEADER}: 1-200 printable characters, no spaces")
    return value


def _segments(path: str) -> list[str]:
    if path.startswith("/"):
        # RFC 6901: ~1 is '/', ~0 is '~' (in that order)
        return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]
    return path.split(".")


def check_mapping(mapping: Mapping[str, Any]) -> dict[str, str]:
    """A param -> path mapping, bounded; ``BadInput`` naming the entry at fault."""
    if len(mapping) > MAX_MAPPINGS:
        raise BadInput(f"mapping: {len(mapping)} entries; at most {MAX_MAPPINGS}")
    checked: dict[str, str] = {}
    for name, path in mapping.items():
        if not NAME.match(name):
            raise BadInput(f"mapping.{name}: not a parameter name")
        if not isinstance(path, str) or not path or len(path) > MAX_PATH:
            raise BadInput(f"mapping.{name}: a JSON pointer or dotted path of 1-{MAX_PATH} chars")
        if len(_segments(path)) > MAX_SEGMENTS:
            raise BadInput(f"mapping.{name}: at most {MAX_SEGMENTS} levels deep")
        checked[name] = path
    return checked


_MISSING = object()


def _walk(data: Any, path: str) -> Any:
    here = data
    for segment in _segments(path):
        if isinstance(here, dict):
            here = here.get(segment, _MISSING)
        elif isinstance(here, list) and re.fullmatch(r"0|[1-9]\d{0,5}", segment):
            index = int(segment)
            here = here[index] if index < len(here) else _MISSING
        else:
            return _MISSING
        if here is _MISSING:
            return _MISSING
    return here


def extract(body: Any, mapping: Mapping[str, str]) -> dict[str, Any]:
    """The mapped params found in ``body``; a path that leads nowhere is left out (the
    param's default applies, or a required one is refused when the run is bound)."""
    found: dict[str, Any] = {}
    for name, path in mapping.items():
        value = _walk(body, path)
        if value is _MISSING:
            continue
        if value is not None and not isinstance(value, str | int | bool):
            kind = type(value).__name__.replace("dict", "object").replace("list", "array")
            raise BadInput(f"mapping.{name}: {path} is a {kind}, not a value")
        found[name] = value
    return found


@dataclass(frozen=True)
class Hook:
    """One ``execution.job_hooks`` row (its secret is in the secret store, not here)."""

    id: str
    tenant_id: str
    job_name: str
    secret_path: str
    mapping: dict[str, str]
    params: dict[str, Any]
    created_by: str
    created_at: datetime
    #: the version it runs; None: the job's latest at each delivery
    job_version: int | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Self:
        return cls(**row_values(cls, row, "job_hooks"))


@dataclass(frozen=True)
class Delivery:
    """One ``execution.hook_deliveries`` row: a request to a hook, and what became of it."""

    id: int
    hook_id: str
    accepted: bool
    status_code: int
    reason: str | None
    signature: str | None
    delivery_id: str | None
    body_sha256: str | None
    execution_id: uuid.UUID | None
    received_at: datetime

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Self:
        return cls(**row_values(cls, row, "hook_deliveries"))
