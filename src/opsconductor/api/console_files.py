"""The web console: static HTML, CSS and ES modules under ``/console/``, no build step.

Everything the console shows comes from the API with the user's bearer token; the files
themselves are public. A strict Content-Security-Policy allows only same-origin scripts,
styles and connections, so injected markup could not run even if it reached the page.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

CONSOLE_DIR = Path(__file__).with_name("console")
MOUNT = "/console"

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    # Revalidate on every load (ETag), so an upgraded server never runs stale modules.
    "Cache-Control": "no-cache",
}


class ConsoleFiles(StaticFiles):
    """Starlette's static files with the console's security headers on every answer."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(SECURITY_HEADERS)
        return response


async def _to_console() -> RedirectResponse:
    return RedirectResponse(f"{MOUNT}/", status_code=307)


def install(app: FastAPI) -> None:
    """Serve the console at ``/console/``; ``/`` and ``/console`` lead there."""
    app.add_api_route("/", _to_console, methods=["GET"], include_in_schema=False)
    app.add_api_route(MOUNT, _to_console, methods=["GET"], include_in_schema=False)
    app.mount(MOUNT, ConsoleFiles(directory=CONSOLE_DIR, html=True), name="console")
