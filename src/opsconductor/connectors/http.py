"""HTTP steps with httpx: one request per target, sent from this machine.

TLS certificates are verified unless the step says ``verify_tls: false``. Only the first
``BODY_LIMIT`` bytes of a response are read: enough for the expectations and the stored
output (itself capped at 10 KB), and a huge download cannot exhaust the worker.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx

from opsconductor import linear_regex
from opsconductor.plan import HttpExpect
from opsconductor.validation import check_json_path

BODY_LIMIT = 1_048_576


@dataclass(frozen=True)
class Request:
    method: str
    url: str
    headers: dict[str, str]
    content: bytes | None


@dataclass(frozen=True)
class Response:
    status: int
    reason: str
    body: str
    truncated: bool


def build(
    method: str, url: str, headers: dict[str, str], body: str | None, json_body: Any
) -> Request:
    content: bytes | None = None
    headers = dict(headers)
    if json_body is not None:
        content = json.dumps(json_body).encode()
        headers.setdefault("content-type", "application/json")
    elif body is not None:
        content = body.encode()
    return Request(method, url, headers, content)


async def send(client: httpx.AsyncClient, request: Request, timeout_s: float) -> Response:
    """Raises ``httpx.HTTPError`` for transport failures (refused, TLS, timeout)."""
    async with client.stream(
        request.method,
        request.url,
        headers=request.headers,
        content=request.content,
        timeout=timeout_s,
    ) as response:
        kept, truncated = bytearray(), False
        async for chunk in response.aiter_bytes():
            kept += chunk
            if len(kept) > BODY_LIMIT:
                truncated = True
                del kept[BODY_LIMIT:]
                break
        body = kept.decode(response.encoding or "utf-8", errors="replace")
        return Response(response.status_code, response.reason_phrase, body, truncated)


def failures(expect: HttpExpect, response: Response) -> list[str]:
    """Every expectation that does not hold, one sentence each."""
    problems = []
    wanted = expect.status if isinstance(expect.status, list) else [expect.status]
    if response.status not in wanted:
        problems.append(f"status {response.status}, expected {' or '.join(map(str, wanted))}")
    if expect.body_regex is not None and not linear_regex.search(expect.body_regex, response.body):
        problems.append(f"body does not match /{expect.body_regex}/")
    if expect.json_path is not None:
        problem = check_json_path(expect.json_path, response.body)
        if problem:
            problems.append(problem)
    return problems
