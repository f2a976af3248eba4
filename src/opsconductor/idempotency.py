"""Idempotency keys. Pure."""

from __future__ import annotations

import hashlib
from datetime import timedelta

from opsconductor.status_machine import Status

DEDUP_WINDOW = timedelta(hours=24)

#: An earlier execution that ended like this frees its key for a retry.
RETRYABLE = frozenset({Status.FAILED, Status.TIMEOUT})


def derive_key(tenant_id: str, actor_id: str, plan_hash: str) -> str:
    """SHA-256(tenant, actor, plan hash), with separators so no two triples collide."""
    material = "\x1f".join((tenant_id, actor_id, plan_hash)).encode()
    return hashlib.sha256(material).hexdigest()
