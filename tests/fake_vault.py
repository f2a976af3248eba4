"""A small HashiCorp Vault stand-in on loopback speaking the KV version 2 HTTP protocol
(``/v1/<mount>/data/<path>``: read, write, versions, token check), enough for ``hvac``.

Vault itself cannot run here; this server answers exactly as Vault documents the KV v2
API, so the client code under test is the real one, over real HTTP.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _KV:
    def __init__(self, token: str, mounts: set[str]) -> None:
        self.token = token
        self.mounts = mounts
        self.versions: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.requests: list[tuple[str, str]] = []


def _handler(kv: _KV) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # keep test output clean
            return

        def _send(self, status: int, body: dict[str, Any] | None) -> None:
            raw = json.dumps(body).encode() if body is not None else b""
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def _route(self) -> tuple[str, str] | None:
            path = self.path.split("?", 1)[0]
            kv.requests.append((self.command, path))
            if self.headers.get("X-Vault-Token") != kv.token:
                self._send(403, {"errors": ["permission denied"]})
                return None
            parts = path.removeprefix("/v1/").split("/", 2)
            if len(parts) != 3 or parts[0] not in kv.mounts or parts[1] != "data":
                self._send(404, {"errors": []})
                return None
            return parts[0], parts[2]

        def do_GET(self) -> None:
            route = self._route()
            if route is None:
                return
            history = kv.versions.get(route)
            if not history:
                self._send(404, {"errors": []})
                return
            latest = history[-1]
            self._send(
                200,
                {
                    "request_id": "fake",
                    "lease_id": "",
                    "renewable": False,
                    "lease_duration": 0,
                    "data": {"data": latest["data"], "metadata": latest["metadata"]},
                    "wrap_info": None,
                    "warnings": None,
                    "auth": None,
                },
            )

        def do_POST(self) -> None:
            route = self._route()
            if route is None:
                return
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            history = kv.versions.setdefault(route, [])
            metadata = {
                "created_time": datetime.now(UTC).isoformat(),
                "custom_metadata": None,
                "deletion_time": "",
                "destroyed": False,
                "version": len(history) + 1,
            }
            history.append({"data": body["data"], "metadata": metadata})
            self._send(200, {"data": metadata})

        do_PUT = do_POST

    return Handler


@dataclass(frozen=True)
class VaultHandle:
    url: str
    token: str
    kv: _KV


@contextmanager
def fake_vault(
    token: str = "root-token", mounts: tuple[str, ...] = ("kv",)
) -> Iterator[VaultHandle]:
    kv = _KV(token, set(mounts))
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(kv))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield VaultHandle(f"http://127.0.0.1:{server.server_address[1]}", token, kv)
    finally:
        server.shutdown()
        server.server_close()
