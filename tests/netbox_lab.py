"""A stand-in for NetBox (which cannot run here) on loopback, speaking its documented REST
format: ``GET /api/dcim/devices/`` and ``/api/virtualization/virtual-machines/`` with
``Authorization: Token ...``, ``?limit=&offset=`` pagination capped at ``max_page`` (as
NetBox's ``MAX_PAGE_SIZE``), answers ``{count, next, previous, results}`` with absolute
``next``/``previous`` URLs, nested objects ``{id, url, display, name, slug}``, ``status``
as ``{value, label}``, ``primary_ip`` as ``{id, family, address: "10.0.0.1/24"}``.

Tests change ``devices``/``vms`` between syncs, read ``requests`` (what was asked, with
which Authorization), and may replace a listing's answer with ``override`` (raw bytes).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

TOKEN = "0123456789abcdef0123456789abcdef01234567"
PATHS = {"/api/dcim/devices/": "devices", "/api/virtualization/virtual-machines/": "vms"}


def nested(kind: str, pk: int, name: str, slug: str) -> dict[str, Any]:
    return {"id": pk, "url": f"/api/{kind}/{pk}/", "display": name, "name": name, "slug": slug}


def device(
    pk: int,
    name: str,
    ip: str | None,
    *,
    site: str = "dc1",
    role: str = "leaf",
    platform: str | None = "eos",
    status: str = "active",
    tags: tuple[str, ...] = (),
    old_role_key: bool = False,
) -> dict[str, Any]:
    """A device as NetBox 4 lists it (``device_role`` instead of ``role`` before 4.0)."""
    return {
        "id": pk,
        "url": f"/api/dcim/devices/{pk}/",
        "display": name,
        "name": name,
        "device_type": nested("dcim/device-types", 1, "DCS-7050", "dcs-7050"),
        ("device_role" if old_role_key else "role"): nested(
            "dcim/device-roles", 1, role.title(), role
        ),
        "platform": None if platform is None else nested("dcim/platforms", 1, platform, platform),
        "site": nested("dcim/sites", 1, site.upper(), site),
        "status": {"value": status, "label": status.title()},
        "primary_ip": None if ip is None else {"id": pk, "family": 4, "address": f"{ip}/24"},
        "primary_ip4": None if ip is None else {"id": pk, "family": 4, "address": f"{ip}/24"},
        "primary_ip6": None,
        "tags": [{"id": i, "name": t, "slug": t, "color": "9e9e9e"} for i, t in enumerate(tags)],
        "custom_fields": {},
    }


def vm(
    pk: int, name: str, ip: str, *, role: str = "app", platform: str = "ubuntu"
) -> dict[str, Any]:
    return {
        "id": pk,
        "url": f"/api/virtualization/virtual-machines/{pk}/",
        "display": name,
        "name": name,
        "status": {"value": "active", "label": "Active"},
        "site": None,
        "cluster": nested("virtualization/clusters", 1, "prod", "prod"),
        "role": nested("dcim/device-roles", 2, role.title(), role),
        "platform": nested("dcim/platforms", 2, platform, platform),
        "primary_ip": {"id": 100 + pk, "family": 4, "address": f"{ip}/32"},
        "tags": [],
    }


@dataclass
class NetBox:
    devices: list[dict[str, Any]] = field(default_factory=list)
    vms: list[dict[str, Any]] = field(default_factory=list)
    max_page: int = 2
    token: str = TOKEN
    #: (path with query, Authorization header) of every request
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    #: listing ("devices" or "vms") -> raw body answered instead (hostile-server tests)
    override: dict[str, bytes] = field(default_factory=dict)
    #: listing -> the ``next`` link its first page gives instead of the real one
    next_override: dict[str, str] = field(default_factory=dict)
    #: seconds every answer waits before it is sent (a stalling server)
    delay_s: float = 0.0
    url: str = ""


@contextmanager
def netbox(state: NetBox, host: str = "127.0.0.1") -> Iterator[NetBox]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            auth = self.headers.get("Authorization")
            state.requests.append((self.path, auth))
            time.sleep(state.delay_s)
            parts = urlsplit(self.path)
            listing = PATHS.get(parts.path)
            if listing is None:
                return self._answer(404, {"detail": "Not found."})
            if auth != f"Token {state.token}":
                return self._answer(403, {"detail": "Invalid token"})
            if listing in state.override:
                return self._raw(200, state.override[listing])
            query = parse_qs(parts.query)
            limit = min(int(query.get("limit", ["50"])[0]), state.max_page)
            offset = int(query.get("offset", ["0"])[0])
            items = getattr(state, listing)
            base = f"{state.url}{parts.path}"
            following = (
                f"{base}?limit={limit}&offset={offset + limit}"
                if offset + limit < len(items)
                else None
            )
            if following is not None and offset == 0 and listing in state.next_override:
                following = state.next_override[listing]
            previous = f"{base}?limit={limit}&offset={max(0, offset - limit)}" if offset else None
            body = {
                "count": len(items),
                "next": following,
                "previous": previous,
                "results": items[offset : offset + limit],
            }
            return self._answer(200, body)

        def _answer(self, status: int, body: Any) -> None:
            self._raw(status, json.dumps(body).encode())

        def _raw(self, status: int, data: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer((host, 0), Handler)
    state.url = f"http://{host}:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
