"""The web console in headless Chromium against a real ``opsc serve`` and PostgreSQL:
sign in and out, the live detail page, approving, rejecting and cancelling from the page,
filters, assets, escaping and accessibility basics."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import ARTIFACTS, Console

pytest.importorskip("playwright", reason="the playwright package is not installed")
from playwright.sync_api import Page, expect

expect.set_options(timeout=10_000)

LOCAL = {"hostnames": ["localhost"]}


def command_steps(*commands: str, action: str = "read") -> list[dict[str, Any]]:
    return [
        {
            "name": f"step {i + 1}",
            "type": "command",
            "action_class": action,
            "targets": LOCAL,
            "command": command,
            "timeout_s": 120,
        }
        for i, command in enumerate(commands)
    ]


def background_plan(name: str, first: str, count: int = 10) -> dict[str, Any]:
    """``count`` command steps: at 1 s each by default estimate, 10 make it background."""
    rest = [f"sleep 0.3; echo step {i} done" for i in range(2, count + 1)]
    return {"name": name, "steps": command_steps(first, *rest)}


def open_console(context: Any, console: Console, token: str, hash_: str = "") -> Page:
    """A page signed in with ``token`` (typed into the sign-in form), at ``hash_``."""
    page: Page = context.new_page()
    page.goto(f"{console.origin}/console/{hash_}")
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    return page


def status_line(page: Page) -> Any:
    return page.locator("#status-line")


def wait_for_status(console: Console, execution_id: str, status: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while console.execution(execution_id)["status"] != status:
        assert time.monotonic() < deadline, f"{execution_id} never reached {status}"
        time.sleep(0.1)


def test_sign_in_by_keyboard_rejects_a_bad_token_and_signs_out(
    context: Any, console: Console
) -> None:
    page: Page = context.new_page()
    page.goto(f"{console.origin}/")  # redirected to the console
    assert page.url.endswith("/console/")
    expect(page.get_by_role("heading", name="Sign in", level=1)).to_be_visible()
    expect(page.get_by_label("API token")).to_be_focused()

    page.keyboard.type("opsc_not-a-real-token")
    page.keyboard.press("Enter")
    expect(page.get_by_role("alert")).to_contain_text("did not accept this token")
    assert page.evaluate("sessionStorage.length") == 0

    page.get_by_label("API token").fill(console.admin_token)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Executions", level=1)).to_be_visible()
    expect(page.get_by_role("banner")).to_contain_text("Signed in as demo-admin in tenant default")
    assert page.evaluate("Object.values(sessionStorage)") == [console.admin_token]

    page.reload()  # the tab keeps its session
    expect(page.get_by_role("heading", name="Executions", level=1)).to_be_visible()

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in", level=1)).to_be_visible()
    expect(page.get_by_role("status")).to_contain_text("You are signed out")
    assert page.evaluate("sessionStorage.length") == 0
    expect(page.get_by_role("navigation", name="Main")).to_be_hidden()


def test_a_revoked_token_signs_the_tab_out(context: Any, console: Console) -> None:
    token = console.token_for("dave", "viewer")
    page = open_console(context, console, token)
    expect(page.get_by_role("banner")).to_contain_text("Signed in as dave")
    console.revoke(token)
    # The list's next refresh is answered 401: the console forgets the token and says why.
    expect(page.get_by_role("heading", name="Sign in", level=1)).to_be_visible()
    expect(page.get_by_role("status")).to_contain_text("no longer accepted")
    assert page.evaluate("sessionStorage.length") == 0


@pytest.mark.parametrize("transport", ["stream", "long-poll"])
def test_detail_page_follows_a_background_execution_live_to_completed(
    context: Any, console: Console, tmp_path: Path, transport: str
) -> None:
    if transport == "long-poll":  # what a tab behind a stream-buffering proxy would choose
        context.add_init_script("localStorage.setItem('opsconductor.transport', 'long-poll')")
    asked: list[str] = []
    context.on("request", lambda request: asked.append(request.url))
    page = open_console(context, console, console.admin_token)
    gate = tmp_path / "work" / "default" / "go"  # in the default tenant's working directory:
    # the first step waits for it, so the test sees it running
    first = f"while [ ! -e '{gate}' ]; do sleep 0.05; done; echo first step done"
    submitted = console.submit(background_plan("Live rollout", first))
    assert submitted.status_code == 202, submitted.text  # background: runs after answering
    execution_id = submitted.json()["id"]

    expect(page.get_by_role("link", name="Live rollout")).to_be_visible()
    page.get_by_role("link", name="Live rollout").click()
    expect(page.get_by_role("heading", name="Live rollout", level=1)).to_be_focused()
    page.evaluate("window.__samePage = true")  # gone if anything reloaded the page
    expect(status_line(page)).to_contain_text("running")
    expect(page.locator("#progress-text")).to_contain_text("0 of 10 done · 1 running · 9 pending")

    gate.touch()
    expect(status_line(page)).to_contain_text("completed", timeout=60_000)
    assert page.evaluate("window.__samePage") is True
    expect(page.locator("#progress-text")).to_contain_text("10 of 10 done")
    assert page.locator("progress").evaluate("p => p.value") == 100
    timeline = page.get_by_role("log", name="Event timeline")
    expect(timeline.locator("li", has_text="step_finished")).to_have_count(10)
    expect(timeline).to_contain_text("running → completed")
    steps = page.get_by_role("region", name="Step attempts (latest last)")
    expect(steps.locator("tbody .badge", has_text="completed")).to_have_count(10)
    page.get_by_text("Output of “step 1” on localhost (attempt 1)").click()
    expect(steps.locator("pre").first).to_have_text("first step done\n")
    assert console.execution(execution_id)["status"] == "completed"

    streamed = [u for u in asked if u.endswith(f"/api/v1/executions/{execution_id}/stream")]
    polled = [u for u in asked if f"/api/v1/executions/{execution_id}/events?" in u]
    tenant_streamed = [u for u in asked if u.endswith("/api/v1/stream")]
    if transport == "stream":
        assert streamed and tenant_streamed and not polled, asked
    else:
        assert polled and not streamed and not tenant_streamed, asked

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / f"console-detail-completed-{transport}.png", full_page=True)

    page.get_by_role("link", name="← All executions").click()
    row = page.get_by_role("row", name="Live rollout")
    expect(row).to_contain_text("completed")


def test_an_approver_reviews_the_plan_and_hash_and_approves_from_the_page(
    context: Any, console: Console
) -> None:
    alice = console.token_for("alice", "operator")
    bob = console.token_for("bob", "approver")
    carol = console.token_for("carol", "viewer")
    plan = {
        "name": "Rotate logs",
        "approval_level": 2,
        "steps": command_steps("echo rotated", action="modify"),
    }
    made = console.submit(plan, alice)
    assert made.status_code == 201, made.text
    execution = made.json()
    assert execution["status"] == "pending_approval"
    at = f"#/executions/{execution['id']}"

    # The requester may cancel but not approve (level 2: separation of duties).
    requester = open_console(context, console, alice, at)
    expect(requester.get_by_role("button", name="Cancel execution")).to_be_visible()
    expect(requester.get_by_role("button", name="Approve")).to_have_count(0)
    requester.close()

    # A viewer sees the execution and no action at all.
    viewer = open_console(context, console, carol, at)
    expect(status_line(viewer)).to_contain_text("pending_approval")
    expect(viewer.get_by_role("button", name="Approve")).to_have_count(0)
    expect(viewer.get_by_role("button", name="Cancel execution")).to_have_count(0)
    viewer.close()

    page = open_console(context, console, bob, at)
    panel = page.get_by_role("region", name="Approval needed")
    expect(panel.locator("#review-hash")).to_have_text(execution["plan_hash"])
    expect(panel.get_by_label("Plan as JSON")).to_contain_text('"command": "echo rotated"')
    expect(page.get_by_role("button", name="Cancel execution")).to_have_count(0)  # no cancel
    page.get_by_label("Comment").fill("looks right")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "console-approval.png", full_page=True)
    page.get_by_role("button", name="Approve").click()

    expect(page.get_by_role("status").filter(has_text="Approved.")).to_be_visible()
    expect(status_line(page)).to_contain_text("completed", timeout=30_000)
    expect(page.get_by_role("region", name="Approval needed")).to_have_count(0)
    decision = next(
        e for e in console.events(execution["id"]) if e["event_type"] == "approval_decision"
    )
    assert decision["actor_id"] == "bob"
    assert decision["payload"]["plan_hash"] == execution["plan_hash"]
    assert decision["payload"]["comment"] == "looks right"


def test_rejecting_needs_a_comment(context: Any, console: Console) -> None:
    alice = console.token_for("alice", "operator")
    made = console.submit(
        {"name": "Risky change", "approval_level": 1, "steps": command_steps("true")}, alice
    )
    execution_id = made.json()["id"]
    page = open_console(context, console, console.admin_token, f"#/executions/{execution_id}")
    page.get_by_role("button", name="Reject").click()
    comment = page.get_by_label("Comment")
    expect(comment).to_have_attribute("aria-invalid", "true")
    expect(comment).to_be_focused()
    assert console.execution(execution_id)["status"] == "pending_approval"

    comment.fill("not during the freeze")
    page.get_by_role("button", name="Reject").click()
    expect(status_line(page)).to_contain_text("rejected")
    expect(status_line(page)).to_contain_text("not during the freeze")
    expect(page.get_by_role("button", name="Cancel execution")).to_have_count(0)


def test_cancel_a_running_execution_from_the_page(context: Any, console: Console) -> None:
    operator = console.token_for("olga", "operator")
    submitted = console.submit(background_plan("Long sleep", "sleep 60"), operator)
    assert submitted.status_code == 202, submitted.text
    execution_id = submitted.json()["id"]
    wait_for_status(console, execution_id, "running")

    page = open_console(context, console, operator, f"#/executions/{execution_id}")
    expect(status_line(page)).to_contain_text("running")
    expect(page.locator("#progress-text")).to_contain_text("1 running")
    started = time.monotonic()
    page.get_by_role("button", name="Cancel execution").click()
    keep = page.get_by_role("button", name="No, keep it")
    expect(keep).to_be_focused()
    page.get_by_role("button", name="Yes, cancel it").click()

    expect(status_line(page)).to_contain_text("cancelled", timeout=30_000)
    assert time.monotonic() - started < 20, "the sleep was not stopped"
    expect(page.get_by_role("button", name="Cancel execution")).to_have_count(0)
    details = page.locator("dl.summary")
    expect(details).to_contain_text("Cancelled by")
    expect(details).to_contain_text("olga")
    timeline = page.get_by_role("log", name="Event timeline")
    expect(timeline).to_contain_text("cancel requested by olga")
    final = console.execution(execution_id)
    assert (final["status"], final["cancelled_by"]) == ("cancelled", "olga")


def test_output_and_names_are_shown_as_text_never_as_markup(context: Any, console: Console) -> None:
    hostile = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'
    plan = {
        "name": "<b>bold</b> plan",
        # The plan never holds the secret literally; only the output does (and gets masked).
        "steps": command_steps(f"printf '%s\\n' '{hostile}'; echo pass\"\"word=hun\"\"ter2"),
    }
    made = console.submit(plan)
    assert made.status_code == 201 and made.json()["status"] == "completed", made.text
    page = open_console(context, console, console.admin_token, f"#/executions/{made.json()['id']}")
    expect(page.get_by_role("heading", level=1)).to_have_text("<b>bold</b> plan")
    page.get_by_text("Output of “step 1”").click()
    output = page.get_by_role("region", name="Step attempts (latest last)").locator("pre").first
    expect(output).to_contain_text(hostile)
    expect(output).to_contain_text("password=")
    assert "hunter2" not in page.content()  # masked by the server, shown as it came
    assert page.evaluate("window.__pwned") is None
    assert page.locator("main img, main b, main script").count() == 0


def test_filters_and_the_assets_view(context: Any, console: Console) -> None:
    alice = console.token_for("alice", "operator")
    console.submit({"name": "quick look", "steps": command_steps("true")}, alice)
    console.submit({"name": "wants approval", "approval_level": 1, "steps": command_steps("true")})
    page = open_console(context, console, console.admin_token)
    table = page.get_by_role("region", name="Executions, newest first")
    expect(table.locator("tbody tr")).to_have_count(2)

    page.get_by_label("Status").select_option("pending_approval")
    page.get_by_role("button", name="Apply filters").click()
    filtered = page.get_by_role("region", name="Executions matching the filters, newest first")
    expect(filtered.locator("tbody tr")).to_have_count(1)
    expect(filtered).to_contain_text("wants approval")
    assert "status=pending_approval" in page.url

    page.get_by_role("button", name="Clear").click()
    page.get_by_label("Actor").fill("alice")
    page.get_by_label("Actor").press("Enter")
    expect(filtered.locator("tbody tr")).to_have_count(1)
    expect(filtered).to_contain_text("quick look")

    page.get_by_role("link", name="Assets").click()
    expect(page.get_by_role("heading", name="Assets", level=1)).to_be_visible()
    assets = page.get_by_role("region", name="The tenant's inventory")
    expect(assets.get_by_role("row", name="localhost")).to_be_visible()
    expect(page.get_by_role("link", name="Assets")).to_have_attribute("aria-current", "page")


UNLABELLED = """() => [...document.querySelectorAll('input, select, textarea, button')]
    .filter(e => !e.closest('[hidden]'))
    .filter(e => e.labels.length === 0 && !e.getAttribute('aria-label')
                 && !(e.tagName === 'BUTTON' && e.textContent.trim()))
    .map(e => e.outerHTML)"""


def test_pages_have_landmarks_one_heading_and_labelled_controls(
    context: Any, console: Console
) -> None:
    made = console.submit({"name": "a11y", "approval_level": 1, "steps": command_steps("true")})
    page: Page = context.new_page()
    page.goto(f"{console.origin}/console/")
    pages = ["sign in"]
    assert page.evaluate(UNLABELLED) == []
    page.get_by_label("API token").fill(console.admin_token)
    page.get_by_role("button", name="Sign in").click()
    for hash_ in ("#/executions", f"#/executions/{made.json()['id']}", "#/approvals", "#/assets"):
        page.goto(f"{console.origin}/console/{hash_}")
        expect(page.get_by_role("heading", level=1)).to_have_count(1)
        expect(page.locator("main h1")).not_to_have_text("Execution")  # loaded
        pages.append(hash_)
        assert page.evaluate(UNLABELLED) == [], hash_
        for landmark in ("banner", "main"):
            expect(page.get_by_role(landmark)).to_have_count(1)
        expect(page.get_by_role("navigation", name="Main")).to_be_visible()
    # The skip link is the first stop of the keyboard and moves focus to the content.
    page.reload()
    expect(page.get_by_role("heading", name="Assets", level=1)).to_be_visible()
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.get_by_role("main")).to_be_focused()
    assert len(pages) == 5


async def _dead_letter(database_url: str) -> str:
    """An execution of the demo admin whose queue attempts all ended without a verdict (as
    when workers keep dying), made before the server (and its worker pool) starts."""
    from opsconductor.db import queue
    from opsconductor.db.connection import Database
    from opsconductor.plan import parse_plan
    from opsconductor.submission import Request, submit

    plan = parse_plan({"name": "flaky infra", "steps": command_steps("echo back again")})
    async with Database(database_url, max_size=2) as db:
        made = await submit(db, Request(plan, "default", "demo-admin", enqueue=True))
        while True:
            async with db.connection() as conn:
                await conn.execute("UPDATE execution.execution_queue SET available_at = now()")
            leases = await queue.claim(db, "crashy-worker", limit=1)
            if await queue.fail(db, leases[0], "worker lost", "crashy-worker") == "dead_letter":
                return str(made.execution.id)


@pytest.fixture
def dead_letter(database_url: str) -> str:
    # Its own thread: Playwright's sync API keeps an event loop on this one.
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, _dead_letter(database_url)).result()


def test_dead_letters_are_listed_and_requeued_from_the_page(
    context: Any, dead_letter: str, console: Console
) -> None:
    viewer = open_console(context, console, console.token_for("vic", "viewer"), "#/dlq")
    table = viewer.get_by_role("region", name="Executions that ran out of attempts")
    expect(table.get_by_role("row", name="flaky infra")).to_contain_text("worker lost")
    expect(viewer.get_by_role("button", name="Requeue flaky infra")).to_have_count(0)
    viewer.close()

    page = open_console(context, console, console.admin_token, "#/dlq")
    expect(page.get_by_role("link", name="Dead letters")).to_have_attribute("aria-current", "page")
    table = page.get_by_role("region", name="Executions that ran out of attempts")
    row = table.get_by_role("row", name="flaky infra")
    expect(row).to_contain_text("worker lost")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "console-dlq.png")
    page.get_by_role("button", name="Requeue flaky infra").click()
    expect(page.get_by_role("status")).to_contain_text("Requeued “flaky infra”")
    expect(page.get_by_text("The dead-letter queue is empty.")).to_be_visible()

    page.get_by_label("Also show requeued entries").check()
    expect(row).to_contain_text("requeued by demo-admin")
    row.get_by_role("link", name="flaky infra").click()
    expect(status_line(page)).to_contain_text("completed", timeout=30_000)
    assert console.execution(dead_letter)["status"] == "completed"
