"""Browser tests: Debian's Chromium, driven headless by Playwright, against ``opsc serve``
(a real uvicorn process on loopback) over the test PostgreSQL.

Nothing is downloaded: Playwright talks to the system Chromium through
``executable_path``. Where Playwright or Chromium is missing, these tests skip and say why.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"

#: Headless, no sandbox (CI runs as root), and no calls home of any kind.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_executable() -> str | None:
    """``$OPSC_CHROMIUM``, else Debian's ``/usr/bin/chromium``, else one on the PATH."""
    candidates = [
        os.environ.get("OPSC_CHROMIUM"),
        "/usr/bin/chromium",
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
    ]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright package is not installed (pip install -e '.[dev]')")
    executable = chromium_executable()
    if executable is None:
        pytest.skip(
            "Chromium not found (/usr/bin/chromium, $OPSC_CHROMIUM or on PATH): "
            "install Debian's package with 'apt-get install chromium' (.ci/run does)"
        )
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_ARGS
        )
        yield launched
        launched.close()


@dataclass
class Console:
    """A running ``opsc serve --demo``: its origin, the demo admin token, an HTTP client."""

    origin: str
    admin_token: str
    http: httpx.Client
    token_ids: dict[str, str] = field(default_factory=dict)

    @property
    def api(self) -> str:
        return f"{self.origin}/api/v1"

    def headers(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.admin_token}"}

    def token_for(self, actor: str, *roles: str) -> str:
        """A fresh token for ``actor`` in the tenant, holding ``roles``."""
        for role in roles:
            granted = self.http.put(
                f"{self.api}/actors/{actor}/roles/{role}", headers=self.headers()
            )
            assert granted.status_code == 200, granted.text
        made = self.http.post(
            f"{self.api}/tokens", json={"actor_id": actor}, headers=self.headers()
        )
        assert made.status_code == 201, made.text
        token = str(made.json()["token"])
        self.token_ids[token] = str(made.json()["token_id"])
        return token

    def revoke(self, token: str) -> None:
        gone = self.http.delete(
            f"{self.api}/tokens/{self.token_ids[token]}", headers=self.headers()
        )
        assert gone.status_code == 204, gone.text

    def submit(self, plan: dict[str, Any], token: str | None = None) -> httpx.Response:
        return self.http.post(f"{self.api}/executions", json=plan, headers=self.headers(token))

    def execution(self, execution_id: str) -> dict[str, Any]:
        found = self.http.get(f"{self.api}/executions/{execution_id}", headers=self.headers())
        assert found.status_code == 200, found.text
        result: dict[str, Any] = found.json()
        return result

    def events(self, execution_id: str) -> list[dict[str, Any]]:
        page = self.http.get(f"{self.api}/executions/{execution_id}/events", headers=self.headers())
        assert page.status_code == 200, page.text
        result: list[dict[str, Any]] = page.json()["events"]
        return result


@pytest.fixture
def console(cli_env: dict[str, str], tmp_path: Path) -> Iterator[Console]:
    """``opsc serve --demo --port 0`` on loopback; stopped with SIGINT (as Ctrl-C would)."""
    errors = (tmp_path / "serve.stderr").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "opsconductor.cli", "serve", "--demo", "--port", "0"],
        env=cli_env,
        stdout=subprocess.PIPE,
        stderr=errors,
        text=True,
    )
    assert proc.stdout is not None
    said = []
    for line in proc.stdout:  # the URLs, the demo token, then "Ctrl-C stops the server."
        said.append(line)
        if "Ctrl-C" in line:
            break
    text = "".join(said)
    url = re.search(r"Web console: (http://127\.0\.0\.1:\d+)/console/ ", text)
    token = re.search(r"^(opsc_\S+)$", text, re.MULTILINE)
    assert url and token, text + (tmp_path / "serve.stderr").read_text()
    # The console's plans run on localhost: the installation admin lets the default tenant.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "opsconductor.cli",
            "tenant",
            "local-exec",
            "on",
            "--tenant",
            "default",
        ],
        env=cli_env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    try:
        with httpx.Client(timeout=60) as http:
            yield Console(url[1], token[1], http)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        errors.close()


@pytest.fixture
def context(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh browser profile (own sessionStorage) per test; a screenshot if it fails."""
    made = browser.new_context(viewport={"width": 1280, "height": 900})
    made.set_default_timeout(15_000)
    yield made
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        ARTIFACTS.mkdir(exist_ok=True)
        for index, page in enumerate(made.pages):
            page.screenshot(
                path=ARTIFACTS / f"failed-{request.node.name}-{index}.png", full_page=True
            )
    made.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[Any]:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
