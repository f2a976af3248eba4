"""Inventory files -> assets. Pure: text in, ``Asset`` list out, errors name the line or key.

Three formats, picked by content:

* ours (YAML): ``assets: [{id, hostname, address, port, connection, username,
  credential_ref, environment, os, tags}]``;
* Ansible INI: ``[group]`` sections of ``host key=value ...`` lines, ``[group:vars]`` and
  ``[group:children]``;
* Ansible YAML: ``all: {hosts, vars, children}``, nested.

From Ansible, ``ansible_host``, ``ansible_port``, ``ansible_user`` and ``ansible_connection``
are used; every group a host belongs to (directly or through ``children``) becomes a tag
``<group>: "true"``, so ``targets: {tags: {web: "true"}}`` selects the group.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from typing import Any

from opsconductor import safe_parse
from opsconductor.errors import BadInput
from opsconductor.inventory import Asset

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
}
_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_.:-]")


def parse_inventory(text: str, source: str, environment: str = "dev") -> list[Asset]:
    """Assets described by ``text``; ``environment`` applies where the file gives none."""
    stripped = text.lstrip()
    if stripped.startswith("[") or (stripped and not _looks_like_yaml(text)):
        return _from_groups(_parse_ini(text, source), environment, source)
    data = safe_parse.load_yaml(text, source)  # bounded: aliases, depth, size
    if isinstance(data, dict) and "assets" in data:
        return _ours(data, source, environment)
    if isinstance(data, dict):
        return _from_groups(_parse_ansible_yaml(data, source), environment, source)
    raise BadInput(f"{source}: expected 'assets:' or an Ansible inventory")


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
        hostname = str(item.get("hostname") or item["id"])
        found.append(
            Asset(
                asset_id=str(item["id"]),
                hostname=hostname,
                address=str(item.get("address") or hostname),
                environment=str(item.get("environment") or environment),
                connection_type=str(item.get("connection") or "ssh"),
                port=_port(item.get("port"), f"{where}.port"),
                os=item.get("os"),
                credential_ref=item.get("credential_ref"),
                username=item.get("username"),
                tags={str(k): str(v) for k, v in tags.items()},
            )
        )
    return found


def _port(value: Any, where: str) -> int | None:
    if value is None:
        return None
    try:
        port = int(value)
    except (TypeError, ValueError):
        raise BadInput(f"{where}: must be a port number (got {value!r})") from None
    if not 1 <= port <= 65535:
        raise BadInput(f"{where}: must be between 1 and 65535")
    return port


# -- Ansible ---------------------------------------------------------------------------


@dataclass
class _Group:
    hosts: dict[str, dict[str, Any]] = field(default_factory=dict)
    vars: dict[str, Any] = field(default_factory=dict)
    children: list[str] = field(default_factory=list)


def _parse_ini(text: str, source: str) -> dict[str, _Group]:
    groups: dict[str, _Group] = {"ungrouped": _Group()}
    name, kind = "ungrouped", "hosts"
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        header = re.fullmatch(r"\[([^\]:]+)(?::(vars|children))?\]", line)
        if header:
            name, kind = header[1], header[2] or "hosts"
            groups.setdefault(name, _Group())
            continue
        try:
            words = shlex.split(line, comments=True)
        except ValueError as exc:
            raise BadInput(f"{source}:{number}: {exc}") from None
        group = groups[name]
        if kind == "children":
            group.children.append(words[0])
        elif kind == "vars":
            key, sep, value = line.partition("=")
            if not sep:
                raise BadInput(f"{source}:{number}: expected key=value")
            group.vars[key.strip()] = value.strip()
        else:
            host_vars = {}
            for word in words[1:]:
                key, sep, value = word.partition("=")
                if not sep:
                    raise BadInput(f"{source}:{number}: expected key=value, got {word!r}")
                host_vars[key] = value
            group.hosts[words[0]] = host_vars
    return groups


def _parse_ansible_yaml(data: dict[str, Any], source: str) -> dict[str, _Group]:
    groups: dict[str, _Group] = {}

    def walk(name: str, body: Any, where: str) -> None:
        if body is None:
            body = {}
        if not isinstance(body, dict):
            raise BadInput(f"{where}: must be a mapping")
        group = groups.setdefault(name, _Group())
        for host, host_vars in (body.get("hosts") or {}).items():
            group.hosts[str(host)] = dict(host_vars or {})
        group.vars.update(body.get("vars") or {})
        for child, child_body in (body.get("children") or {}).items():
            group.children.append(str(child))
            walk(str(child), child_body, f"{where}.children.{child}")

    for name, body in data.items():
        walk(str(name), body, f"{source}: {name}")
    return groups


def _from_groups(groups: dict[str, _Group], environment: str, source: str) -> list[Asset]:
    """Flatten groups: a host collects its groups (and their ancestors) and their vars;
    host vars win over group vars, as in Ansible."""
    parents: dict[str, set[str]] = {}
    for name, group in groups.items():
        for child in group.children:
            parents.setdefault(child, set()).add(name)

    def ancestry(name: str, seen: frozenset[str] = frozenset()) -> list[str]:
        if name in seen:
            return []
        found = [name]
        for parent in sorted(parents.get(name, ())):
            found += ancestry(parent, seen | {name})
        return found

    members: dict[str, tuple[list[str], dict[str, Any]]] = {}
    for name, group in groups.items():
        for host, host_vars in group.hosts.items():
            names, merged = members.setdefault(host, ([], {}))
            for member_of in ancestry(name):
                if member_of not in names:
                    names.append(member_of)
            merged.update(host_vars)
    assets = []
    for host in sorted(members):
        names, host_vars = members[host]
        settings: dict[str, Any] = {}
        for member_of in reversed(names):  # the farthest ancestor first, host last
            settings.update(groups[member_of].vars)
        settings.update(host_vars)
        assets.append(_ansible_asset(host, names, settings, environment, source))
    return assets


def _ansible_asset(
    host: str, groups: list[str], settings: dict[str, Any], environment: str, source: str
) -> Asset:
    skip = {"all", "ungrouped"}
    connection = "local" if settings.get("ansible_connection") == "local" else "ssh"
    return Asset(
        asset_id=_ID_UNSAFE.sub("_", host)[:128],
        hostname=host,
        address=str(settings.get("ansible_host") or host),
        environment=str(settings.get("environment") or settings.get("env") or environment),
        connection_type=connection,
        port=_port(settings.get("ansible_port"), f"{source}: {host}: ansible_port"),
        username=settings.get("ansible_user"),
        tags={g: "true" for g in sorted(set(groups) - skip)},
    )
