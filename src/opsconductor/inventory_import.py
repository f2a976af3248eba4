"""Inventory files -> assets. Pure: text in, ``Asset`` list out, errors name the line or key.

Three formats, picked by content:

* ours (YAML): ``assets: [{id, hostname, address, port, connection, username,
  credential_ref, environment, os, tags}]``;
* Ansible INI: ``[group]`` sections of ``host key=value ...`` lines, ``[group:vars]`` and
  ``[group:children]``;
* Ansible YAML: ``all: {hosts, vars, children}``, nested.

Ansible inventories are read by inventory_ansible.py; every group a host belongs to
(directly or through ``children``) becomes a tag ``<group>: "true"``, so ``targets: {tags:
{web: "true"}}`` selects the group. ``diff`` says what an import would change in an
existing asset: an import never overwrites one without being told to (``--update``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from opsconductor import inventory_ansible as ansible
from opsconductor import safe_parse
from opsconductor.errors import BadInput
from opsconductor.inventory import Asset
from opsconductor.inventory_ansible import Parsed

_OURS_KEYS = {
    "id",
    "hostname",
    "address",
    "port",
    "connection",
    "username",
    "credential_ref",
    "environment",
    "os",
    "tags",
    "vars",
}
#: Fields an import compares (and ``--update`` replaces), in the order a diff shows them.
FIELDS = (
    "hostname",
    "address",
    "environment",
    "connection_type",
    "port",
    "os",
    "credential_ref",
    "username",
    "tags",
    "vars",
)


@dataclass(frozen=True)
class Change:
    field: str
    old: Any
    new: Any

    def __str__(self) -> str:
        return f"{self.field}: {self.old!r} -> {self.new!r}"


def diff(old: Asset, new: Asset) -> list[Change]:
    """What replacing ``old`` by ``new`` changes, field by field (tags, vars: by key)."""
    changes = []
    for name in FIELDS:
        before, after = getattr(old, name), getattr(new, name)
        if name in ("tags", "vars"):
            for key in sorted(set(before) | set(after)):
                if before.get(key) != after.get(key):
                    changes.append(Change(f"{name}.{key}", before.get(key), after.get(key)))
        elif before != after:
            changes.append(Change(name, before, after))
    return changes


def read_inventory(text: str, source: str, environment: str = "dev") -> Parsed:
    """Assets described by ``text``, the key files they name and what was not applied;
    ``environment`` applies where the file gives none."""
    stripped = text.lstrip()
    if stripped.startswith("[") or (stripped and not _looks_like_yaml(text)):
        return ansible.from_groups(ansible.parse_ini(text, source), environment, source)
    data = safe_parse.load_yaml(text, source)  # bounded: aliases, depth, size
    if isinstance(data, dict) and "assets" in data:
        return Parsed(_ours(data, source, environment), {}, [])
    if isinstance(data, dict):
        groups = ansible.parse_yaml(data, source)
        return ansible.from_groups(groups, environment, source)
    raise BadInput(f"{source}: expected 'assets:' or an Ansible inventory")


def parse_inventory(text: str, source: str, environment: str = "dev") -> list[Asset]:
    """The assets of ``read_inventory``."""
    return read_inventory(text, source, environment).assets


def _looks_like_yaml(text: str) -> bool:
    first = next((line for line in text.splitlines() if line.strip() and line[0] != "#"), "")
    return first.rstrip().endswith(":") or first.startswith(("---", "assets:", "all:"))


# -- ours ------------------------------------------------------------------------------


def _ours(data: dict[str, Any], source: str, environment: str) -> list[Asset]:
    items = data["assets"]
    if not isinstance(items, list):
        raise BadInput(f"{source}: assets: must be a list")
    found = []
    for index, item in enumerate(items):
        where = f"{source}: assets[{index}]"
        if not isinstance(item, dict):
            raise BadInput(f"{where}: must be a mapping")
        unknown = sorted(set(item) - _OURS_KEYS)
        if unknown:
            raise BadInput(f"{where}.{unknown[0]}: unknown field")
        if not item.get("id"):
            raise BadInput(f"{where}.id: field required")
        tags = item.get("tags") or {}
        if not isinstance(tags, dict):
            raise BadInput(f"{where}.tags: must be a mapping")
        variables = item.get("vars") or {}
        if not isinstance(variables, dict):
            raise BadInput(f"{where}.vars: must be a mapping")
        hostname = str(item.get("hostname") or item["id"])
        found.append(
            Asset(
                asset_id=str(item["id"]),
                hostname=hostname,
                address=str(item.get("address") or hostname),
                environment=str(item.get("environment") or environment),
                connection_type=str(item.get("connection") or "ssh"),
                port=ansible.port(item.get("port"), f"{where}.port"),
                os=item.get("os"),
                credential_ref=item.get("credential_ref"),
                username=item.get("username"),
                tags={str(k): str(v) for k, v in tags.items()},
                vars={str(k): v for k, v in variables.items()},
            )
        )
    return found


# -- what an import would do ------------------------------------------------------------


@dataclass(frozen=True)
class ImportPlan:
    """New assets, changed ones (with their diffs), unchanged ids, and warnings."""

    new: list[Asset]
    changed: dict[str, tuple[Asset, list[Change]]]
    unchanged: list[str]
    warnings: list[str]


def plan_import(existing: dict[str, Asset], found: list[Asset]) -> ImportPlan:
    """Compare an inventory file's assets with the stored ones (by asset id); ``os`` and
    ``credential_ref`` the file leaves unset keep their stored values. A built-in
    asset (the tenant's ``localhost``) is never replaced: an inventory's ``localhost
    ansible_connection=local`` means the machine Ansible runs on, which is that asset."""
    new: list[Asset] = []
    changed: dict[str, tuple[Asset, list[Change]]] = {}
    unchanged: list[str] = []
    warnings: list[str] = []
    for asset in found:
        old = existing.get(asset.asset_id)
        if old is None:
            new.append(asset)
        elif old.tags.get("builtin") == "true":
            warnings.append(
                f"{asset.asset_id}: not imported: the built-in asset {old.asset_id!r} "
                f"({old.connection_type}, {old.environment}) is kept; plans target it as is"
            )
        else:
            # What the file cannot say (Ansible has no os; a credential set by hand where
            # the file names no key file) is kept, not cleared by a re-import.
            asset = dataclasses.replace(
                asset,
                os=asset.os if asset.os is not None else old.os,
                credential_ref=(
                    asset.credential_ref if asset.credential_ref is not None else old.credential_ref
                ),
            )
            changes = diff(old, asset)
            if changes:
                changed[asset.asset_id] = (asset, changes)
            else:
                unchanged.append(asset.asset_id)
    return ImportPlan(new, changed, unchanged, warnings)
