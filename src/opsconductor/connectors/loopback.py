"""``http`` and ``sql`` steps run in the worker's own process: pointed at this host, they
would reach the control plane itself (the API, and a PostgreSQL whose socket and loopback
port often trust whoever connects: the embedded one does). So a step may address the
host's loopback or a local socket only where the installation opened the host's network to
the tenant (``opsc tenant local-exec on --network``), the same opt-in that gives local
steps the host's network.

Host names are resolved before the check (``localhost``, ``127.1``, a DNS name that points
at 127.0.0.1 are all this host). The connection resolves again, so a name that changes its
answer in between (DNS rebinding) is not covered; neither are the host's other addresses:
keep the database's trusting rules on loopback and sockets only."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Iterable, Mapping

from opsconductor.connectors.access import TenantAccess


def _is_this_host(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback or ip.is_unspecified


async def _resolves_here(host: str) -> bool:
    try:
        return _is_this_host(host)
    except ValueError:
        pass  # a name: resolve it
    try:
        found = await asyncio.get_running_loop().getaddrinfo(host, None)
    except (OSError, UnicodeError):
        return False  # unresolvable: the connection fails on its own
    return any(_is_this_host(str(entry[4][0])) for entry in found)


async def refusal(hosts: Iterable[str], access: TenantAccess | None, field: str) -> str | None:
    """Why the step may not address these hosts (None: it may). An empty host or a path is
    a local socket (libpq's default when a DSN names no host)."""
    if access is not None and access.local_execution and access.local_network:
        return None
    tenant = access.tenant_id if access else "?"
    for host in hosts:
        local_socket = host == "" or host.startswith(("/", "@"))
        if local_socket or await _resolves_here(host):
            what = "a local socket" if local_socket else f"{host!r}, this host"
            return (
                f"{field}: {what} is the control plane's own machine (its API and database "
                "listen there); only an installation admin opens it to a tenant "
                f"(opsc tenant local-exec on --network --tenant {tenant})"
            )
    return None


def sql_hosts(parts: Mapping[str, object]) -> list[str]:
    """Every host a libpq connection string may connect to; none named: the default local
    socket (returned as an empty host)."""
    hosts = [
        h.strip() for key in ("host", "hostaddr") for h in str(parts.get(key) or "").split(",")
    ]
    named = [h for h in hosts if h]
    return named or [""]
