"""Reads a NetBox-compatible REST API: every device and virtual machine, page by page.

The token goes in ``Authorization: Token ...`` to the source's own origin only: redirects
are not followed, a ``next`` link to another origin is refused (inventory_netbox.py), and
the environment's proxies are not used (``trust_env=False``). Each page is read to at most
``MAX_PAGE_BYTES``, a listing to ``MAX_PAGES`` pages, and the whole read to ``total_s``
seconds: a hostile or broken API cannot hold the worker or exhaust its memory. No message
raised here contains the token (httpx names the URL only, and the URL carries none).
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlsplit

import httpx

from opsconductor.errors import SourceError
from opsconductor.inventory_netbox import (
    LISTINGS,
    MAX_OBJECTS,
    MAX_PAGE_BYTES,
    MAX_PAGES,
    first_page,
    read_page,
)

Listed = list[tuple[str, dict[str, Any]]]


async def list_objects(
    base_url: str, token: str | None, *, request_s: float = 30.0, total_s: float = 300.0
) -> Listed:
    """(``netbox_type``, object) for every device, then every virtual machine."""
    headers = {"Accept": "application/json"}
    if token is not None:  # NetBox may allow anonymous reads (LOGIN_REQUIRED off)
        headers["Authorization"] = f"Token {token}"
    listed: Listed = []
    try:
        async with (
            asyncio.timeout(total_s),
            httpx.AsyncClient(
                headers=headers, timeout=request_s, follow_redirects=False, trust_env=False
            ) as client,
        ):
            for path, netbox_type in LISTINGS:
                url: str | None = first_page(base_url, path)
                seen: set[str] = set()
                while url is not None:
                    if url in seen or len(seen) >= MAX_PAGES:
                        raise SourceError(
                            f"{path}: more than {MAX_PAGES} pages, or a page links back"
                        )
                    seen.add(url)
                    where = f"GET {urlsplit(url).path}?{urlsplit(url).query}"[:300]
                    items, url = read_page(await _get(client, url, where), base_url, where)
                    listed += [(netbox_type, item) for item in items]
                    if len(listed) > MAX_OBJECTS:
                        raise SourceError(f"more than {MAX_OBJECTS} devices and VMs")
    except TimeoutError:
        raise SourceError(f"{base_url}: not read within {total_s:.0f} s") from None
    return listed


async def _get(client: httpx.AsyncClient, url: str, where: str) -> str:
    try:
        async with client.stream("GET", url) as response:
            if response.status_code != 200:
                hint = {
                    401: ": the token was refused",
                    403: ": the token may not read this",
                    404: ": not a NetBox API (is the URL the server's base URL?)",
                }.get(response.status_code, "")
                if 300 <= response.status_code < 400:
                    hint = ": a redirect (not followed: give the final URL as the source's url)"
                raise SourceError(f"{where}: HTTP {response.status_code}{hint}")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_PAGE_BYTES:
                    raise SourceError(f"{where}: a page larger than {MAX_PAGE_BYTES} bytes")
    except httpx.HTTPError as exc:
        raise SourceError(f"{where}: {type(exc).__name__}: {exc}") from None
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise SourceError(f"{where}: not UTF-8") from None
