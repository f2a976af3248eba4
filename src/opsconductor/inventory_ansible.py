"""Ansible inventories (INI and YAML) -> assets, as Ansible itself reads them. Pure.

Groups: every group is a child of ``all``; hosts in no group are in ``ungrouped``. A
host's variables are merged as Ansible does: ``all``, then its groups from the farthest
ancestor to the nearest (by depth, then name), then the host's own. Host patterns expand
(``web-[1:3]``, ``db-[a:c]``, ``node[01:10]``, ``[0:10:5]``), ``host:2222`` sets the port.

Variables that map to asset fields: ``ansible_host``/``ansible_ssh_host``, ``ansible_port``/
``ansible_ssh_port``, ``ansible_user``/``ansible_ssh_user``, ``ansible_connection``
(``local``, ``ssh``), ``opsc_environment``. Key files (``ansible_ssh_private_key_file``,
``ansible_private_key_file``) are returned apart: whether one becomes a ``file:``
credential depends on the tenant's files root (services/inventory.py). Every other variable
is kept in ``Asset.vars``; the ``ansible_*`` ones our connectors do not apply (become, SSH
arguments, ...) are also named in a warning, and passwords are never stored (warned).
"""

from __future__ import annotations

import ast
import itertools
import math
import re
import shlex
import string
from dataclasses import dataclass, field
from typing import Any

from opsconductor.errors import BadInput
from opsconductor.inventory import Asset

_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_.:-]")
_RANGE = re.compile(r"\[([^\]:]*):([^\]:]*)(?::([^\]]*))?\]")

ADDRESS = ("ansible_host", "ansible_ssh_host")
PORT = ("ansible_port", "ansible_ssh_port")
USER = ("ansible_user", "ansible_ssh_user")
KEY_FILE = ("ansible_private_key_file", "ansible_ssh_private_key_file")
#: Mapped to fields (or, key files, to a credential reference): not kept as vars.
MAPPED = frozenset({*ADDRESS, *PORT, *USER, *KEY_FILE, "ansible_connection", "opsc_environment"})
#: Secrets: asset vars are plain data shown to anyone who may view the inventory.
PASSWORDS = frozenset(
    {
        "ansible_password",
        "ansible_ssh_pass",
        "ansible_ssh_password",
        "ansible_become_pass",
        "ansible_become_password",
        "ansible_sudo_pass",
    }
)
_BECOME = re.compile(r"^ansible_(become|sudo|su)(_|$)")
#: One host pattern expands to at most this many hosts (a typo must not exhaust memory).
MAX_HOSTS = 10_000
_CONNECTIONS = {"local": "local", "ssh": "ssh", "smart": "ssh", "paramiko": "ssh"}


@dataclass
class Group:
    hosts: dict[str, dict[str, Any]] = field(default_factory=dict)
    vars: dict[str, Any] = field(default_factory=dict)
    children: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Parsed:
    """Assets, each key file named by an asset (asset id -> path as written), warnings."""

    assets: list[Asset]
    key_files: dict[str, str]
    warnings: list[str]


# -- host patterns ---------------------------------------------------------------------


def expand_hosts(pattern: str, where: str) -> list[str]:
    """``web-[1:3].example.com`` -> web-1, web-2, web-3 (several ranges: every combination)."""
    parts: list[list[str]] = []
    last = 0
    for match in _RANGE.finditer(pattern):
        parts.append([pattern[last : match.start()]])
        parts.append(_range(match, f"{where}: {pattern}"))
        last = match.end()
    if not parts:
        return [pattern]
    parts.append([pattern[last:]])
    if math.prod(len(p) for p in parts) > MAX_HOSTS:
        raise BadInput(f"{where}: {pattern} names more than {MAX_HOSTS} hosts")
    return ["".join(p) for p in itertools.product(*parts)]


def _range(match: re.Match[str], where: str) -> list[str]:
    start, end, step_text = match[1], match[2], match[3]
    try:
        step = int(step_text) if step_text else 1
    except ValueError:
        raise BadInput(f"{where}: range step {step_text!r} is not a number") from None
    if step < 1:
        raise BadInput(f"{where}: range step must be at least 1")
    if start.isdigit() and end.isdigit():
        width = len(start) if start.startswith("0") and len(start) > 1 else 0
        numbers = range(int(start), int(end) + 1, step)
        found = [str(n).zfill(width) for n in numbers]
    elif len(start) == 1 and len(end) == 1 and start in string.ascii_letters:
        found = [chr(c) for c in range(ord(start), ord(end) + 1, step)]
    else:
        raise BadInput(f"{where}: range [{start}:{end}] must be numbers or single letters")
    if not found:
        raise BadInput(f"{where}: range [{start}:{end}] is empty")
    return found


def _host_port(name: str) -> tuple[str, int | None]:
    """``host:2222`` (one colon: an IPv6 address has several)."""
    host, sep, port = name.rpartition(":")
    if sep and port.isdigit() and ":" not in _RANGE.sub("", host):
        return host, int(port)
    return name, None


def _add_host(group: Group, pattern: str, host_vars: dict[str, Any], where: str) -> None:
    name, port = _host_port(pattern)
    for host in expand_hosts(name, where):
        merged = group.hosts.setdefault(host, {})
        if port is not None:
            merged["ansible_port"] = port
        merged.update(host_vars)


# -- INI -------------------------------------------------------------------------------


def _literal(value: str) -> Any:
    """Host-line values are Python literals to Ansible (``2222``, ``True``), else strings."""
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return value


def parse_ini(text: str, source: str) -> dict[str, Group]:
    groups: dict[str, Group] = {"all": Group(), "ungrouped": Group()}
    name, kind = "ungrouped", "hosts"
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        where = f"{source}:{number}"
        if not line or line.startswith(("#", ";")):
            continue
        header = re.fullmatch(r"\[([^\]:]+)(?::(vars|children))?\]", line)
        if header:
            name, kind = header[1], header[2] or "hosts"
            groups.setdefault(name, Group())
            continue
        if line.startswith("["):
            raise BadInput(
                f"{where}: section header {line!r}: use [group], [group:vars] or [group:children]"
            )
        group = groups[name]
        if kind == "vars":
            key, sep, value = line.partition("=")
            if not sep or not key.strip():
                raise BadInput(f"{where}: expected key=value")
            value = value.strip()
            if len(value) > 1 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            group.vars[key.strip()] = value  # :vars values are strings to Ansible
            continue
        try:
            words = shlex.split(line, comments=True)
        except ValueError as exc:
            raise BadInput(f"{where}: {exc}") from None
        if kind == "children":
            groups.setdefault(words[0], Group())
            group.children.append(words[0])
            continue
        host_vars: dict[str, Any] = {}
        for word in words[1:]:
            key, sep, value = word.partition("=")
            if not sep or not key:
                raise BadInput(f"{where}: expected key=value, got {word!r}")
            host_vars[key] = _literal(value)
        _add_host(group, words[0], host_vars, where)
    return groups


# -- YAML ------------------------------------------------------------------------------


def parse_yaml(data: dict[str, Any], source: str) -> dict[str, Group]:
    groups: dict[str, Group] = {"all": Group(), "ungrouped": Group()}

    def walk(name: str, body: Any, where: str) -> None:
        if body is None:
            body = {}
        if not isinstance(body, dict):
            raise BadInput(f"{where}: must be a mapping")
        unknown = sorted(set(body) - {"hosts", "vars", "children"})
        if unknown:
            raise BadInput(f"{where}.{unknown[0]}: expected hosts, vars or children")
        group = groups.setdefault(name, Group())
        hosts = body.get("hosts") or {}
        variables = body.get("vars") or {}
        children = body.get("children") or {}
        for what, value in (("hosts", hosts), ("vars", variables), ("children", children)):
            if not isinstance(value, dict):
                raise BadInput(f"{where}.{what}: must be a mapping")
        for host, host_vars in hosts.items():
            if host_vars is not None and not isinstance(host_vars, dict):
                raise BadInput(f"{where}.hosts.{host}: must be a mapping of variables")
            _add_host(group, str(host), dict(host_vars or {}), f"{where}.hosts")
        group.vars.update({str(k): v for k, v in variables.items()})
        for child, child_body in children.items():
            if str(child) not in group.children:
                group.children.append(str(child))
            walk(str(child), child_body, f"{where}.children.{child}")

    for name, body in data.items():
        walk(str(name), body, f"{source}: {name}")
    return groups


# -- groups -> assets ------------------------------------------------------------------


def _depths(groups: dict[str, Group]) -> dict[str, int]:
    """Ansible's group depth: ``all`` 0, a group one more than its deepest parent."""
    parents: dict[str, set[str]] = {name: set() for name in groups}
    for name, group in groups.items():
        for child in group.children:
            parents.setdefault(child, set()).add(name)
    depth: dict[str, int] = {}

    def of(name: str, seen: frozenset[str]) -> int:
        if name == "all":
            return 0
        if name in depth:
            return depth[name]
        if name in seen:
            return 1  # a cycle: Ansible refuses it; counting it once is enough here
        above = [of(p, seen | {name}) for p in parents.get(name, ()) if p != "all"]
        depth[name] = 1 + max(above, default=0)
        return depth[name]

    for name in groups:
        of(name, frozenset())
    depth["all"] = 0
    return depth


def _ancestors(name: str, parents: dict[str, set[str]]) -> set[str]:
    found, todo = set(), [name]
    while todo:
        current = todo.pop()
        if current in found:
            continue
        found.add(current)
        todo += parents.get(current, ())
    return found


def from_groups(groups: dict[str, Group], environment: str, source: str) -> Parsed:
    parents: dict[str, set[str]] = {}
    for name, group in groups.items():
        for child in group.children:
            parents.setdefault(child, set()).add(name)
    depth = _depths(groups)
    members: dict[str, tuple[set[str], dict[str, Any]]] = {}
    for name, group in groups.items():
        for host, host_vars in group.hosts.items():
            names, merged = members.setdefault(host, (set(), {}))
            names |= _ancestors(name, parents) | {"all"}
            merged.update(host_vars)
    assets: list[Asset] = []
    key_files: dict[str, str] = {}
    notes = _Notes()
    for host in sorted(members):
        names, host_vars = members[host]
        settings: dict[str, Any] = {}
        for member_of in sorted(names, key=lambda g: (depth.get(g, 1), g)):
            settings.update(groups[member_of].vars)
        settings.update(host_vars)
        asset = _asset(host, names, settings, environment, source, notes)
        if asset is None:
            continue
        key = _first(settings, KEY_FILE)
        if key is not None:
            key_files[asset.asset_id] = str(key)
        assets.append(asset)
    return Parsed(assets, key_files, notes.warnings())


class _Notes:
    """Warnings, one per variable (with the hosts it concerns), not one per host."""

    def __init__(self) -> None:
        self.by_var: dict[str, list[str]] = {}
        self.other: list[str] = []

    def var(self, key: str, host: str) -> None:
        self.by_var.setdefault(key, []).append(host)

    def warnings(self) -> list[str]:
        found = list(self.other)
        for key in sorted(self.by_var):
            hosts = self.by_var[key]
            shown = ", ".join(hosts[:5]) + (f" and {len(hosts) - 5} more" if len(hosts) > 5 else "")
            if key in PASSWORDS:
                what = (
                    "not stored (asset variables are not secret): store it as a secret "
                    "and set the asset's credential_ref"
                )
            elif key in ("env", "environment"):
                what = (
                    f"kept as asset.vars.{key}; the asset's environment comes from "
                    "opsc_environment or --environment"
                )
            elif _BECOME.match(key):
                what = (
                    "kept as asset.vars." + key + ", not applied: steps use sudo only "
                    "where the plan step says 'become: true'"
                )
            else:
                what = f"kept as asset.vars.{key}, not applied by OpsConductor's connectors"
            found.append(f"{key} ({shown}): {what}")
        return found


def _first(settings: dict[str, Any], keys: tuple[str, ...]) -> Any:
    """As Ansible's ssh plugin reads its options: of the names it accepts for one (current
    form first, then the old ``ansible_ssh_*``), the last one set wins, wherever it was set."""
    return next((settings[k] for k in reversed(keys) if settings.get(k) not in (None, "")), None)


def _asset(
    host: str,
    groups: set[str],
    settings: dict[str, Any],
    environment: str,
    source: str,
    notes: _Notes,
) -> Asset | None:
    connection = str(settings.get("ansible_connection") or "ssh")
    if connection not in _CONNECTIONS:
        notes.other.append(
            f"{host}: not imported: ansible_connection={connection} is not supported (local, ssh)"
        )
        return None
    asset_id = _ID_UNSAFE.sub("_", host)[:128]
    if asset_id != host:
        notes.other.append(f"{host}: imported with asset id {asset_id!r}")
    kept: dict[str, Any] = {}
    for key, value in settings.items():
        if key in MAPPED:
            continue
        if key.startswith(("ansible_", "opsc_")) or (
            key in ("env", "environment") and "opsc_environment" not in settings
        ):
            notes.var(key, host)
        if key not in PASSWORDS:
            kept[key] = value
    local = _CONNECTIONS[connection] == "local"  # no login: port and user do not apply
    port_value = None if local else _first(settings, PORT)
    user = None if local else _first(settings, USER)
    return Asset(
        asset_id=asset_id,
        hostname=host,
        address=str(_first(settings, ADDRESS) or host),
        environment=str(settings.get("opsc_environment") or environment),
        connection_type=_CONNECTIONS[connection],
        port=port(port_value, f"{source}: {host}: ansible_port"),
        username=None if user is None else str(user),
        tags={g: "true" for g in sorted(groups - {"all", "ungrouped"})},
        vars=kept,
    )


def port(value: Any, where: str) -> int | None:
    if value is None:
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise BadInput(f"{where}: must be a port number (got {value!r})") from None
    if not 1 <= number <= 65535:
        raise BadInput(f"{where}: must be between 1 and 65535")
    return number
