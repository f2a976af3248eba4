"""Dynamic inventory sources: what a sync of one would change in the inventory. Pure.

A source (``ansible``: an ``ansible-inventory --list`` run; ``netbox``: a NetBox-compatible
REST API) yields assets; a sync compares them with the stored ones. The assets a source
added are *its own* (``assets.inventory_source``, and the tag ``inventory_source: NAME``
plans can select on): a sync adds new ones, changes its own, and removes its own that the
source no longer lists. It never touches an asset it does not own (made by hand, imported
from a file, another source's, the built-in ``localhost``): those are warned about.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from opsconductor.errors import BadInput, SourceError
from opsconductor.inventory import Asset
from opsconductor.records import row_values

if TYPE_CHECKING:  # inventory_import reads YAML: a sync only, not every command's start
    from opsconductor.inventory_import import Change

#: The tag every asset of a source carries: ``targets: {tags: {inventory_source: nb}}``.
TAG = "inventory_source"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_EVERY = re.compile(r"^(\d{1,6})([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MIN_EVERY_S = 60
MAX_EVERY_S = 7 * 86400
#: Fields a source leaves unset (None) keep their stored value on a changed asset: set by
#: hand on a synced asset (a login, a credential), they are not cleared by the next sync.
KEPT_BY_KIND = {
    "ansible": ("os", "credential_ref", "proxy_jump"),
    "netbox": ("os", "credential_ref", "proxy_jump", "username", "port"),
}


class SourceKind(StrEnum):
    ANSIBLE = "ansible"
    NETBOX = "netbox"


class SyncResult(StrEnum):
    OK = "ok"
    FAILED = "failed"


@dataclass(frozen=True)
class InventorySource:
    tenant_id: str
    name: str
    kind: SourceKind
    #: ansible: the inventory (directory or plugin config), relative to the files root
    path: str | None
    #: netbox: the API's base URL, and the secret store path of its token (not the token)
    url: str | None
    token_ref: str | None
    #: the environment of the assets it yields where the source says none
    environment: str
    every_s: int | None
    next_sync_at: datetime | None
    last_sync_at: datetime | None
    last_result: SyncResult | None
    last_error: str | None
    last_counts: Mapping[str, int] | None
    created_by: str

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> InventorySource:
        enums = {"kind": SourceKind, "last_result": SyncResult}
        return cls(**row_values(cls, row, "inventory_sources", enums))


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise BadInput(f"name: {name!r}: use 1-63 lower-case letters, digits, '-' or '_'")
    return name


def parse_every(text: str) -> int:
    """``15m`` -> 900 seconds (units s, m, h, d; at least a minute, at most a week)."""
    match = _EVERY.match(text.strip())
    if not match:
        raise BadInput(f"every: {text!r}: use a number and a unit, e.g. 15m, 1h, 1d")
    seconds = int(match[1]) * _UNIT_S[match[2]]
    if not MIN_EVERY_S <= seconds <= MAX_EVERY_S:
        raise BadInput(f"every: {text!r}: must be between 1m and 7d")
    return seconds


def format_every(seconds: int | None) -> str:
    if seconds is None:
        return ""
    for unit in "dhm":
        if seconds % _UNIT_S[unit] == 0:
            return f"{seconds // _UNIT_S[unit]}{unit}"
    return f"{seconds}s"


def check_url(url: str) -> str:
    """A NetBox base URL: http(s), a host, no credentials, query or fragment; no trailing /."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises on a bad port)
    except ValueError:
        raise BadInput(f"url: {url!r} is not a URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadInput(f"url: {url!r}: use http(s)://host[:port][/path]")
    if parts.username or parts.password:
        raise BadInput("url: must not contain credentials; give the token as --token-ref")
    if parts.query or parts.fragment:
        raise BadInput(f"url: {url!r}: must not have a query or fragment")
    return url.rstrip("/")


def owned(asset: Asset, source: str) -> Asset:
    """``asset`` labelled as ``source``'s."""
    return dataclasses.replace(asset, tags={**asset.tags, TAG: source})


# -- what a sync would do ---------------------------------------------------------------


@dataclass(frozen=True)
class SyncPlan:
    added: list[Asset]
    changed: dict[str, tuple[Asset, list[Change]]]
    removed: list[Asset]
    unchanged: list[str]
    warnings: list[str]

    def counts(self) -> dict[str, int]:
        return {
            "added": len(self.added),
            "changed": len(self.changed),
            "removed": len(self.removed),
            "unchanged": len(self.unchanged),
        }


def plan_sync(
    source: str,
    kind: SourceKind,
    existing: Mapping[str, tuple[Asset, str | None]],
    found: list[Asset],
    warnings: list[str] | None = None,
) -> SyncPlan:
    """Compare what ``source`` lists now (``found``) with the stored assets (asset id ->
    (asset, owning source or None)). A source that lists nothing while it owns assets is
    refused: an emptied API or a wrong filter must not empty the inventory."""
    from opsconductor.inventory_import import diff

    notes = list(warnings or [])
    added: list[Asset] = []
    changed: dict[str, tuple[Asset, list[Change]]] = {}
    unchanged: list[str] = []
    seen: set[str] = set()
    hostnames = {a.hostname: asset_id for asset_id, (a, _) in existing.items()}
    for asset in found:
        if asset.asset_id in seen:
            notes.append(f"{asset.asset_id}: listed twice by the source: the first kept")
            continue
        seen.add(asset.asset_id)
        asset = owned(asset, source)
        holder = hostnames.get(asset.hostname, asset.asset_id)
        if holder != asset.asset_id and existing[holder][1] != source:
            notes.append(f"{asset.asset_id}: not synced: asset {holder!r} has its hostname")
            continue
        stored = existing.get(asset.asset_id)
        if stored is None:
            added.append(asset)
            continue
        old, owner = stored
        if owner != source:
            whose = "made by hand or imported" if owner is None else f"source {owner!r}'s"
            notes.append(f"{asset.asset_id}: not synced: an asset with this id exists ({whose})")
            continue
        keep = {
            name: getattr(old, name)
            for name in KEPT_BY_KIND[kind.value]
            if getattr(asset, name) is None
        }
        asset = dataclasses.replace(asset, **keep)
        changes = diff(old, asset)
        if changes:
            changed[asset.asset_id] = (asset, changes)
        else:
            unchanged.append(asset.asset_id)
    mine = sorted(a for a, (_, owner) in existing.items() if owner == source)
    removed = [existing[a][0] for a in mine if a not in seen]
    if not seen and removed:
        raise SourceError(
            f"source {source!r} listed no assets; refusing to remove its {len(removed)} "
            "assets (remove the source, or its assets, by hand if that is intended)"
        )
    return SyncPlan(added, changed, removed, unchanged, notes)


def fields(asset: Asset) -> dict[str, Any]:
    """An added asset's fields as a diff shows them (tags and vars by key), unset ones left out."""
    shown: dict[str, Any] = {}
    for name in ("hostname", "address", "environment", "connection_type", "port", "os"):
        if getattr(asset, name) is not None:
            shown[name] = getattr(asset, name)
    shown.update({f"tags.{k}": v for k, v in sorted(asset.tags.items())})
    shown.update({f"vars.{k}": v for k, v in sorted(asset.vars.items())})
    return shown


def plan_body(plan: SyncPlan, *, applied: bool) -> dict[str, Any]:
    """A sync's diff as the API answers it and the CLI prints it."""
    return {
        "applied": applied,
        "added": [{"asset_id": a.asset_id, "fields": fields(a)} for a in plan.added],
        "changed": [
            {
                "asset_id": asset_id,
                "changes": [{"field": c.field, "old": c.old, "new": c.new} for c in changes],
            }
            for asset_id, (_, changes) in sorted(plan.changed.items())
        ],
        "removed": [
            {"asset_id": a.asset_id, "hostname": a.hostname, "address": a.address}
            for a in plan.removed
        ],
        "unchanged": len(plan.unchanged),
        "warnings": list(plan.warnings),
    }


def source_body(source: InventorySource) -> dict[str, Any]:
    """A source as the API answers it (the token's reference, never a token)."""
    return {
        "name": source.name,
        "kind": source.kind.value,
        "path": source.path,
        "url": source.url,
        "token_ref": source.token_ref,
        "environment": source.environment,
        "every": format_every(source.every_s) or None,
        "next_sync_at": source.next_sync_at,
        "last_sync_at": source.last_sync_at,
        "last_result": None if source.last_result is None else source.last_result.value,
        "last_error": source.last_error,
        "last_counts": None if source.last_counts is None else dict(source.last_counts),
        "created_by": source.created_by,
    }
