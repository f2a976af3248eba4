"""A tenant's ``ssh_config``: the OpenSSH client config file, honoured for the keys that say
*where* and *as whom* a host is reached. Pure (the caller reads the file).

The file is ``ssh_config`` in the tenant's files root (``opsc files put ssh_config``): never
the worker's own ``~/.ssh/config``, which belongs to whoever runs the worker. Only
``Host`` blocks and the keys in ``HONOURED`` apply; anything else (``Match``, ``Include``,
``StrictHostKeyChecking``, ``UserKnownHostsFile``, ``ProxyCommand``...) is listed in
``warnings`` and ignored, so the file can never switch off host key checking or run a
command on the worker. As in OpenSSH, the first value found for a key wins, and keys
before the first ``Host`` line apply to every host.
"""

from __future__ import annotations

import fnmatch
import shlex
from dataclasses import dataclass, field

#: lower-case key -> the field of ``HostConfig`` it sets
HONOURED = {
    "hostname": "hostname",
    "port": "port",
    "user": "user",
    "identityfile": "identity_file",
    "proxyjump": "proxy_jump",
}

FILE_NAME = "ssh_config"


@dataclass(frozen=True)
class HostConfig:
    """What the config says about one host (None: it says nothing)."""

    hostname: str | None = None
    port: int | None = None
    user: str | None = None
    identity_file: str | None = None
    #: ``[user@]host[:port]`` hops, comma-separated as in OpenSSH; "none" clears it
    proxy_jump: str | None = None


@dataclass(frozen=True)
class _Block:
    patterns: tuple[str, ...]
    settings: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class SshConfig:
    blocks: tuple[_Block, ...] = ()
    warnings: tuple[str, ...] = field(default=())

    def lookup(self, host: str) -> HostConfig:
        found: dict[str, str] = {}
        for block in self.blocks:
            if not _matches(block.patterns, host):
                continue
            for key, value in block.settings:
                found.setdefault(key, value)
        port = found.get("port")
        hostname = found.get("hostname")
        return HostConfig(
            hostname=None if hostname is None else hostname.replace("%h", host),
            port=None if port is None else int(port),
            user=found.get("user"),
            identity_file=found.get("identity_file"),
            proxy_jump=found.get("proxy_jump"),
        )


def _matches(patterns: tuple[str, ...], host: str) -> bool:
    """OpenSSH's rule: some pattern matches and no negated (``!``) one does."""
    hit = False
    for pattern in patterns:
        if pattern.startswith("!"):
            if fnmatch.fnmatchcase(host, pattern[1:]):
                return False
        elif fnmatch.fnmatchcase(host, pattern):
            hit = True
    return hit


def parse(text: str) -> SshConfig:
    blocks: list[_Block] = []
    warnings: list[str] = []
    patterns: tuple[str, ...] = ("*",)  # before the first Host: every host
    settings: list[tuple[str, str]] = []
    skipping = False  # inside a Match block: ignored whole

    def close() -> None:
        if settings and not skipping:
            blocks.append(_Block(patterns, tuple(settings)))

    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, value = _split(line)
        where = f"ssh_config line {number}"
        lower = key.lower()
        if lower in {"host", "match"}:
            close()
            settings = []
            skipping = lower == "match"
            if skipping:
                warnings.append(f"{where}: Match blocks are not supported; block ignored")
            else:
                patterns = tuple(shlex.split(value)) or ("*",)
            continue
        if skipping:
            continue
        if lower not in HONOURED:
            warnings.append(f"{where}: {key} is not supported; ignored")
            continue
        if not value:
            warnings.append(f"{where}: {key} has no value; ignored")
            continue
        if lower == "port" and not (value.isdigit() and 1 <= int(value) <= 65535):
            warnings.append(f"{where}: Port {value!r} is not a port number; ignored")
            continue
        settings.append((HONOURED[lower], value))
    close()
    return SshConfig(tuple(blocks), tuple(warnings))


def _split(line: str) -> tuple[str, str]:
    """``Key value`` or ``Key=value``; one pair of double quotes around the value is
    dropped, as OpenSSH does."""
    key, sep, rest = line.partition("=") if "=" in line.split(None, 1)[0] else ("", "", "")
    if not sep:
        parts = line.split(None, 1)
        key, rest = parts[0], parts[1] if len(parts) > 1 else ""
    value = rest.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    return key.strip(), value


def hops(proxy_jump: str) -> list[tuple[str | None, str, int | None]]:
    """``[user@]host[:port]`` hops of a ProxyJump value, first hop first; none for "none"."""
    if proxy_jump.strip().lower() == "none":
        return []
    found: list[tuple[str | None, str, int | None]] = []
    for hop in proxy_jump.split(","):
        hop = hop.strip().removeprefix("ssh://")
        user, at, rest = hop.rpartition("@")
        host, colon, port = rest.rpartition(":") if rest.count(":") == 1 else ("", "", "")
        if not colon:
            host, port = rest, ""
        if not host or (port and not port.isdigit()):
            raise ValueError(f"ProxyJump hop {hop!r}: use [user@]host[:port]")
        found.append((user if at else None, host, int(port) if port else None))
    return found
