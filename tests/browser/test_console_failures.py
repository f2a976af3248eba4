"""The console shows record-only unmistakably (list and detail), groups failures on the
detail page with the last lines of stderr, and links a re-run to what it re-runs."""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser.conftest import ARTIFACTS, Console

pytest.importorskip("playwright", reason="the playwright package is not installed")
from playwright.sync_api import expect

from tests.browser.test_console import command_steps, open_console, status_line

expect.set_options(timeout=10_000)


def test_record_only_badges_failures_and_the_rerun_link(context: Any, console: Console) -> None:
    dark = console.http.post(
        f"{console.api}/executions",
        params={"record_only": "true"},
        json={"name": "Dark launch", "steps": command_steps("echo would run")},
        headers=console.headers(),
    )
    assert dark.status_code == 201 and dark.json()["status"] == "completed", dark.text
    real = console.submit({"name": "Real change", "steps": command_steps("true")})
    failing = console.submit(
        {
            "name": "Disk check",
            "steps": command_steps("echo checking >&2; echo 'disk /var 97% full' >&2; exit 1"),
        }
    )
    assert real.json()["status"] == "completed" and failing.json()["status"] == "failed"

    page = open_console(context, console, console.admin_token)
    dark_row = page.get_by_role("row", name="Dark launch")
    real_row = page.get_by_role("row", name="Real change")
    expect(dark_row).to_contain_text("record-only")
    expect(dark_row.locator(".badge.record-only")).to_be_visible()
    expect(real_row).to_contain_text("completed")
    expect(real_row.locator(".badge.record-only")).to_have_count(0)

    page.get_by_role("link", name="Dark launch").click()
    expect(status_line(page)).to_contain_text("completed")
    expect(status_line(page).locator(".badge.record-only")).to_have_text("record-only")

    page.goto(f"{console.origin}/console/#/executions/{failing.json()['id']}")
    found = page.get_by_role("region", name="Failures")
    expect(found).to_contain_text("step 1 “step 1”: exit 1: disk /var 97% full")
    expect(found).to_contain_text("\N{MULTIPLICATION SIGN}1: localhost")
    expect(found.locator("pre")).to_have_text("checking\ndisk /var 97% full")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "console-failures.png", full_page=True)

    again = console.http.post(
        f"{console.api}/executions/{failing.json()['id']}/rerun",
        params={"failed": "true"},
        headers=console.headers(),
    )
    assert again.status_code == 201, again.text
    page.goto(f"{console.origin}/console/#/executions/{again.json()['id']}")
    link = page.get_by_role("link", name=failing.json()["id"])
    expect(link).to_be_visible()
    link.click()
    expect(page.get_by_role("heading", name="Disk check", level=1)).to_be_visible()
