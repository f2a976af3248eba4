"""The CLI's way to a server: ``opsc login URL`` stores a token, then every command goes
through the REST API as that token's actor (its tenant, its roles), exactly like any client."""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opsconductor.approvals import ApprovalRefused
from opsconductor.config import load_settings
from opsconductor.errors import (
    BadInput,
    Conflict,
    DatabaseError,
    NotFound,
    OpsError,
    PermissionDenied,
    Unauthenticated,
)

if TYPE_CHECKING:  # imported by the first call: without a login no command needs it
    pass

_KINDS: dict[int, type[OpsError]] = {
    400: BadInput,
    401: Unauthenticated,
    403: PermissionDenied,
    404: NotFound,
    409: Conflict,
    413: BadInput,
    422: BadInput,
    503: DatabaseError,
}


def config_dir() -> Path:
    return load_settings().config_dir


def credentials_file() -> Path:
    return config_dir() / "login.json"


@dataclass(frozen=True)
class Login:
    url: str
    token: str

    @property
    def api(self) -> str:
        return self.url.rstrip("/") + "/api/v1"


def load_login() -> Login | None:
    path = credentials_file()
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise BadInput(f"{path}: readable by others (mode {info.st_mode & 0o777:o}); chmod 600 it")
    data = json.loads(path.read_text(encoding="utf-8"))
    return Login(str(data["url"]), str(data["token"]))


def save_login(login: Login) -> Path:
    path = credentials_file()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Created 0600 from the first byte: the token never sits in a readable file.
    fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump({"url": login.url, "token": login.token}, f)
    os.replace(path.with_suffix(".tmp"), path)
    return path


def forget_login() -> bool:
    try:
        credentials_file().unlink()
    except FileNotFoundError:
        return False
    return True


def revive(value: Any) -> Any:
    """JSON from the API with timestamps as datetimes (``…_at`` fields), as the database
    gives them, so one renderer serves both ways of working."""
    if isinstance(value, list):
        return [revive(v) for v in value]
    if isinstance(value, dict):
        return {
            k: datetime.fromisoformat(v) if isinstance(v, str) and k.endswith("_at") else revive(v)
            for k, v in value.items()
        }
    return value


class Api:
    """A thin synchronous-looking async client: problems become our errors, with the
    server's ``detail`` (and each invalid field) as the message."""

    def __init__(self, login: Login, *, timeout: float = 120.0) -> None:
        import httpx

        self.login = login
        self.http = httpx.AsyncClient(
            base_url=login.api,
            headers={"Authorization": f"Bearer {login.token}"},
            timeout=timeout,
        )

    async def __aenter__(self) -> Api:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()

    async def call(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
        params: dict[str, Any] | None = None,
    ) -> tuple[int, Any]:
        import httpx

        try:
            response = await self.http.request(
                method,
                path,
                json=json_body,
                content=content,
                headers=headers,
                params={k: v for k, v in (params or {}).items() if v is not None},
            )
        except httpx.HTTPError as exc:
            raise DatabaseError(f"{self.login.url}: cannot reach the server ({exc})") from None
        body: Any = None
        if response.content:
            try:
                body = response.json()
            except ValueError:
                body = {"detail": response.text[:500]}
        if response.status_code >= 400:
            raise _problem(response.status_code, body)
        return response.status_code, revive(body)

    async def get(self, path: str, **params: Any) -> Any:
        return (await self.call("GET", path, params=params))[1]


def _problem(status: int, body: Any) -> OpsError:
    detail = str(body.get("detail", "")) if isinstance(body, dict) else ""
    errors = body.get("errors") if isinstance(body, dict) else None
    if errors:
        detail = "; ".join(f"{e.get('path')}: {e.get('message')}" for e in errors)
    code = body.get("code") if isinstance(body, dict) else None
    if code:  # an approval refusal: the same error (and exit code) as on the server
        return ApprovalRefused(str(code), detail)
    return _KINDS.get(status, OpsError)(detail or f"HTTP {status}")
