"""The console for a fleet: the step-by-target matrix of a 150-target execution with a
failure filter, the approvals inbox (countdown, readable plan, diff, approve), and one
tenant shared by ``make run``'s token and the CLI. Screenshots go to test-artifacts/."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import ARTIFACTS, Console

pytest.importorskip("playwright", reason="the playwright package is not installed")
from playwright.sync_api import expect

from tests.browser.test_console import command_steps, open_console, status_line

expect.set_options(timeout=10_000)

FLEET = 150
#: every 15th host has a full disk: 10 of 150 fail the check
FULL = {f"web-{i:03d}" for i in range(1, FLEET + 1) if i % 15 == 0}
CHECK = (
    'if [ "$DISK" = full ]; then echo "checking $HOST" >&2; '
    'echo "disk /var 97% full" >&2; exit 1; fi; echo ok'
)
#: env values are templates, rendered per target
CHECK_ENV = {"DISK": "{{ asset.tags.disk }}", "HOST": "{{ asset.hostname }}"}


def wait_until_finished(console: Console, execution_id: str, timeout: float = 240) -> str:
    deadline = time.monotonic() + timeout
    while True:
        status = str(console.execution(execution_id)["status"])
        if status in ("completed", "failed", "partial", "timeout", "cancelled"):
            return status
        assert time.monotonic() < deadline, f"{execution_id} still {status}"
        time.sleep(0.5)


def add_fleet(console: Console) -> None:
    for i in range(1, FLEET + 1):
        name = f"web-{i:03d}"
        made = console.http.post(
            f"{console.api}/assets",
            json={
                "asset_id": name,
                "hostname": name,
                "tags": {"fleet": "web", "disk": "full" if name in FULL else "ok"},
            },
            headers=console.headers(),
        )
        assert made.status_code == 201, made.text


def test_the_matrix_of_150_targets_filters_to_the_failed_with_their_stderr(
    context: Any, console: Console, tmp_path: Path
) -> None:
    add_fleet(console)
    fleet = {"tags": {"fleet": "web"}}
    gate = tmp_path / "work" / "default" / "go"  # the first step waits for it: the page
    # is open and live before the 150 targets run
    plan = {
        "name": "Fleet disk check",
        "steps": [
            {"name": "wait for the window", "type": "command", "action_class": "read",
             "targets": {"assets": ["web-001"]},
             "command": f"while [ ! -e '{gate}' ]; do sleep 0.05; done"},
            {"name": "check disk", "type": "command", "action_class": "read",
             "targets": fleet, "command": CHECK, "env": CHECK_ENV, "concurrency": 50},
            {"name": "report", "type": "noop", "targets": fleet, "concurrency": 150},
        ],
    }  # fmt: skip
    made = console.submit(plan)
    assert made.status_code == 202, made.text
    execution_id = made.json()["id"]
    page = open_console(context, console, console.admin_token, f"#/executions/{execution_id}")
    expect(status_line(page)).to_contain_text("running")
    page.evaluate("window.__samePage = true")  # gone if anything reloaded the page
    waiting = page.get_by_role("region", name="Step 2 check disk")
    expect(waiting.locator('button.cell[data-status="pending"]')).to_have_count(FLEET)
    # Nothing of this plan ever ran: no basis for an ETA, and the page says so.
    expect(page.locator("#progress-text")).to_contain_text("time left unknown")
    expect(page.locator("#eta-basis")).to_contain_text("has no earlier run to go by")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "console-matrix-150-waiting.png", full_page=True)
    gate.touch()
    final = wait_until_finished(console, execution_id)
    expect(status_line(page)).to_contain_text(final, timeout=30_000)
    assert page.evaluate("window.__samePage") is True  # the matrix was filled in live

    matrix = page.get_by_role("region", name="Step 2 check disk")
    cells = matrix.locator("button.cell")
    expect(cells).to_have_count(FLEET)
    expect(matrix.locator('button.cell[data-status="failed"]')).to_have_count(len(FULL))
    expect(matrix.get_by_role("heading")).to_contain_text(f"{FLEET} targets: {len(FULL)} failed")
    # Grouped by message: one line for the ten, not ten rows.
    failures = page.get_by_role("region", name="Failures")
    expect(failures).to_contain_text("exit 1: disk /var 97% full")
    expect(failures).to_contain_text(f"\N{MULTIPLICATION SIGN}{len(FULL)}: web-015, web-030")
    # The per-attempt table gives way to the matrix at this scale.
    expect(page.get_by_role("region", name="Step attempts (latest last)")).to_be_hidden()

    page.get_by_role("button", name=f"failed ({len(FULL)})").click()
    expect(page.get_by_role("button", name=f"failed ({len(FULL)})")).to_have_attribute(
        "aria-pressed", "true"
    )
    expect(cells).to_have_count(len(FULL))
    shown = set(cells.evaluate_all("cs => cs.map(c => c.dataset.target)"))
    assert shown == FULL
    listed = page.locator("ul.failed-targets > li")
    expect(listed).to_have_count(len(FULL))
    # stderr in plain sight, no expander to open per host
    stderr = page.get_by_label("Standard error of web-045")
    expect(stderr).to_be_visible()
    expect(stderr).to_have_text("checking web-045\ndisk /var 97% full")
    assert page.locator("ul.failed-targets details").count() == 0
    # Compact: the whole page of 300 (step, target) pairs stays a few screens tall.
    height = page.evaluate("document.documentElement.scrollHeight")
    assert height < 4000, height
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "console-matrix-150-failed.png", full_page=True)

    cells.first.click()  # a cell opens its attempt: status, exit, output and stderr
    expect(page.locator(".cell-detail")).to_contain_text("web-015 · step 2 “check disk”")
    expect(page.locator(".cell-detail pre")).to_have_text("checking web-015\ndisk /var 97% full\n")
    page.get_by_role("button", name=f"all ({2 * FLEET + 1})").click()
    expect(cells).to_have_count(FLEET)
    # One tab stop per step, not 150: the arrow keys walk the cells.
    assert cells.evaluate_all("cs => cs.filter(c => c.tabIndex === 0).length") == 1
    cells.first.focus()
    page.keyboard.press("ArrowRight")
    expect(cells.nth(1)).to_be_focused()
    page.keyboard.press("End")
    expect(cells.last).to_be_focused()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "console-matrix-150-all.png", full_page=True)


def test_the_approvals_inbox_counts_down_shows_the_plan_and_the_change_and_approves(
    context: Any, console: Console
) -> None:
    alice = console.token_for("alice", "operator")
    bob = console.token_for("bob", "approver")
    before = console.submit({"name": "Rotate logs", "steps": command_steps("echo rotated")}, alice)
    assert before.json()["status"] == "completed", before.text
    plan = {
        "name": "Rotate logs",
        "approval_level": 2,
        "steps": command_steps("echo rotated --verbose", action="modify"),
    }
    made = console.submit(plan, alice)
    assert made.status_code == 201 and made.json()["status"] == "pending_approval", made.text
    execution = made.json()

    page = open_console(context, console, bob)
    page.get_by_role("link", name="Approvals").click()
    expect(page.get_by_role("heading", name="Approvals", level=1)).to_be_visible()
    item = page.get_by_role("region", name="Rotate logs")
    countdown = item.locator(".countdown")
    expect(countdown).to_contain_text("Expires in")
    first = countdown.text_content()
    expect(countdown).not_to_have_text(first or "")  # live: it ticks
    expect(item.locator("code.hash")).to_have_text(execution["plan_hash"])
    steps = item.locator("ol.review-steps > li")
    expect(steps).to_have_count(1)
    expect(steps).to_contain_text("step 1 — command · modify · on 1 target: localhost")
    expect(steps.locator("pre")).to_have_text("echo rotated --verbose")
    assert item.locator("pre", has_text='"command"').count() == 0  # no raw JSON
    changes = item.get_by_role("list", name="Changes since the last run")
    expect(changes.locator("li.removed")).to_contain_text(
        ["approval_level: 0", "step 1 “step 1” (command, read)", "command: echo rotated"]
    )
    expect(changes.locator("li.added")).to_contain_text(
        [
            "approval_level: 2",
            "step 1 “step 1” (command, modify)",
            "command: echo rotated --verbose",
        ]
    )
    expect(item.get_by_role("link", name=before.json()["id"][:8])).to_be_visible()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "console-approvals-inbox.png", full_page=True)

    item.get_by_label("Comment (required to reject)").fill("verbose is fine")
    item.get_by_role("button", name="Approve").click()
    expect(page.get_by_role("status").filter(has_text="Approved “Rotate logs”.")).to_be_visible()
    expect(page.get_by_text("Nothing waits for a decision.")).to_be_visible()
    assert wait_until_finished(console, execution["id"]) == "completed"
    decision = next(
        e for e in console.events(execution["id"]) if e["event_type"] == "approval_decision"
    )
    assert decision["actor_id"] == "bob"
    assert decision["payload"]["plan_hash"] == execution["plan_hash"]


def test_a_run_from_the_shell_shows_in_the_console_of_make_run(
    context: Any, console: Console, cli_env: dict[str, str], tmp_path: Path
) -> None:
    """``make run``'s token and the CLI act in one tenant (``default``)."""
    plan = tmp_path / "from-shell.yaml"
    plan.write_text(
        "name: From the shell\n"
        "steps:\n"
        "  - {name: hi, type: command, command: echo hi, targets: {hostnames: [localhost]}}\n"
    )
    ran = subprocess.run(
        [sys.executable, "-m", "opsconductor.cli", "run", "--record-only", str(plan)],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    page = open_console(context, console, console.admin_token)
    expect(page.get_by_role("banner")).to_contain_text("in tenant default")
    expect(page.get_by_role("row", name="From the shell")).to_contain_text("record-only")
