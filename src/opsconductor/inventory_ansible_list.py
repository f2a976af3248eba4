"""``ansible-inventory --list`` output -> assets, with the rules of inventory_ansible.py. Pure.

The JSON is ``{"_meta": {"hostvars": {HOST: {VAR: VALUE}}}, GROUP: {"hosts": [HOST],
"children": [GROUP], "vars": {VAR: VALUE}}}``; Ansible has already merged each host's
variables (group vars included) into its hostvars, so the groups serve as tags here.
"""

from __future__ import annotations

from typing import Any

from opsconductor import inventory_ansible as ansible
from opsconductor import safe_parse
from opsconductor.errors import BadInput, SourceError
from opsconductor.inventory_ansible import Group, Parsed

#: Hosts one inventory may list (a sync of more is refused, not truncated).
MAX_HOSTS = 100_000


def read_list(text: str, environment: str, source: str) -> Parsed:
    """The assets of ``ansible-inventory --list``'s output ``text``."""
    try:
        data = safe_parse.load_json(text, source)
        safe_parse.check_control_chars(data)
    except BadInput as exc:  # the inventory's fault, not the caller's request
        raise SourceError(f"{source}: {exc}") from None
    if not isinstance(data, dict):
        raise SourceError(f"{source}: expected a JSON object of groups")
    meta = data.get("_meta")
    hostvars = meta.get("hostvars") if isinstance(meta, dict) else None
    hostvars = {} if hostvars is None else hostvars
    if not isinstance(hostvars, dict):
        raise SourceError(f"{source}: _meta.hostvars: must be an object")
    groups: dict[str, Group] = {"all": Group(), "ungrouped": Group()}
    vaulted: list[str] = []
    hosts_seen: set[str] = set()
    for name, body in data.items():
        if name == "_meta":
            continue
        if not isinstance(body, dict):
            raise SourceError(f"{source}: {name}: must be an object")
        group = groups.setdefault(str(name), Group())
        group.vars.update(_mapping(body.get("vars"), f"{name}.vars", vaulted))
        for child in _names(body.get("children"), f"{source}: {name}.children"):
            groups.setdefault(child, Group())
            group.children.append(child)
        for host in _names(body.get("hosts"), f"{source}: {name}.hosts"):
            hosts_seen.add(host)
            group.hosts[host] = _mapping(hostvars.get(host), host, vaulted)
    for host, variables in hostvars.items():
        if host not in hosts_seen:  # listed only in hostvars: Ansible's "ungrouped"
            hosts_seen.add(host)
            groups["ungrouped"].hosts[str(host)] = _mapping(variables, str(host), vaulted)
    if len(hosts_seen) > MAX_HOSTS:
        raise SourceError(f"{source}: more than {MAX_HOSTS} hosts")
    try:
        parsed = ansible.from_groups(groups, environment, source)
    except BadInput as exc:  # a bad port, a huge range: still the inventory's fault
        raise SourceError(str(exc)) from None
    vaulted = list(dict.fromkeys(vaulted))  # a host in several groups: named once
    if vaulted:
        shown = ", ".join(vaulted[:5]) + (
            f" and {len(vaulted) - 5} more" if len(vaulted) > 5 else ""
        )
        note = f"{shown}: encrypted with ansible-vault: not stored (asset vars are not secret)"
        parsed = Parsed(parsed.assets, parsed.key_files, [*parsed.warnings, note])
    return parsed


def _names(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SourceError(f"{where}: must be a list of names")
    return list(value)


def _mapping(value: Any, where: str, vaulted: list[str]) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SourceError(f"{where}: must be an object")
    found = {}
    for key, item in value.items():
        if _vaulted(item):
            vaulted.append(f"{where}.{key}")
        else:
            found[str(key)] = _plain(item)
    return found


def _plain(value: Any) -> Any:
    """Ansible marks templated values ``{"__ansible_unsafe": VALUE}`` in its JSON."""
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _vaulted(value: Any) -> bool:
    """An ansible-vault value (``{"__ansible_vault": CIPHERTEXT}``): a secret, not stored."""
    return isinstance(value, dict) and "__ansible_vault" in value
