"""Job pages in the console: a job run from the form drawn from its params (a bad value
caught before anything runs, the run landing on its execution page), a refusal of the
server shown next to its field, and a viewer who sees the job but no form. Screenshots
go to test-artifacts/."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.browser.conftest import ARTIFACTS, Console

pytest.importorskip("playwright", reason="the playwright package is not installed")
from playwright.sync_api import Route, expect

from tests.browser.test_console import open_console, status_line

expect.set_options(timeout=10_000)

#: a description is text on the page, never markup
HOSTILE = 'Release tag <img src=x onerror="window.__pwned = 1">'
PLAN = {
    "name": "Deploy the app",
    "params": {
        "release": {"type": "string", "default": "1.0", "description": HOSTILE},
        "replicas": {"type": "int", "description": "How many copies"},
        "tier": {"type": "choice", "choices": ["web", "db"]},
    },
    "steps": [
        {
            "name": "deploy",
            "type": "command",
            "action_class": "read",
            "targets": {"hostnames": ["localhost"]},
            "command": 'echo "deploy $OPSC_PARAM_RELEASE x$OPSC_PARAM_REPLICAS'
            ' on $OPSC_PARAM_TIER"',
            "timeout_s": 120,
        }
    ],
}


def save_job(console: Console, name: str = "deploy") -> None:
    saved = console.http.put(f"{console.api}/jobs/{name}", json=PLAN, headers=console.headers())
    assert saved.status_code == 201, saved.text


def runs_of(console: Console, name: str = "deploy") -> list[dict[str, Any]]:
    found = console.http.get(f"{console.api}/jobs/{name}/runs", headers=console.headers())
    assert found.status_code == 200, found.text
    result: list[dict[str, Any]] = found.json()
    return result


def test_a_job_run_from_its_form(context: Any, console: Console) -> None:
    save_job(console)
    olga = console.token_for("olga", "operator")
    page = open_console(context, console, olga)
    page.get_by_role("link", name="Jobs").click()
    jobs = page.get_by_role("region", name="The tenant's jobs")
    expect(jobs.get_by_role("row", name="deploy")).to_contain_text("never run")
    jobs.get_by_role("link", name="deploy").click()
    expect(page.get_by_role("heading", name="Job deploy", level=1)).to_be_visible()

    form = page.locator("form.run-form")
    release = form.get_by_label("release")
    replicas = form.get_by_label("replicas")
    tier = form.get_by_label("tier")
    expect(release).to_have_value("1.0")  # the default, pre-filled
    expect(replicas).to_have_value("")
    expect(tier.locator("option")).to_have_text(["— choose —", "web", "db"])
    expect(form).to_contain_text("How many copies")
    expect(form).to_contain_text(HOSTILE)
    assert page.locator("form.run-form img").count() == 0
    assert page.evaluate("window.__pwned") is None

    # A value the declaration refuses: said next to its field, and nothing is run.
    replicas.fill("three")
    tier.select_option("db")
    form.get_by_role("button", name="Run version 1").click()
    replicas_error = page.locator("#param-replicas-error")
    expect(replicas_error).to_have_text("Must be an integer of at most 18 digits (got “three”).")
    expect(replicas).to_have_attribute("aria-invalid", "true")
    expect(replicas).to_be_focused()
    assert "param-replicas-error" in (replicas.get_attribute("aria-describedby") or "")
    expect(page.locator("#param-tier-error")).to_be_hidden()
    expect(form.get_by_role("alert")).to_contain_text("nothing was run")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "console-job-run-form.png", full_page=True)
    assert runs_of(console) == []

    replicas.fill("3")
    form.get_by_role("button", name="Run version 1").click()
    page.wait_for_url(re.compile(r"#/executions/[0-9a-f-]{36}$"))
    execution_id = page.url.rsplit("/", 1)[1]
    expect(status_line(page)).to_contain_text("completed", timeout=60_000)
    expect(page.locator("main")).to_contain_text("deploy 1.0 x3 on db")
    expect(page.get_by_role("link", name="deploy", exact=True)).to_be_visible()
    page.screenshot(path=ARTIFACTS / "console-job-run-execution.png", full_page=True)
    [run] = runs_of(console)
    assert (run["id"], run["job_version"], run["actor_id"]) == (execution_id, 1, "olga")
    assert run["plan_name"] == "Deploy the app"

    # The job page lists the run; the jobs list shows it as the last one.
    page.get_by_role("link", name="deploy", exact=True).click()
    recent = page.get_by_role("region", name="Recent runs", exact=True)
    expect(recent.get_by_role("link", name=execution_id[:8])).to_be_visible()
    expect(recent).to_contain_text("completed")
    page.get_by_role("link", name="← All jobs").click()
    expect(page.get_by_role("link", name="Last run of deploy: completed")).to_be_visible()


def test_what_the_server_refuses_is_shown_next_to_its_field(context: Any, console: Console) -> None:
    """A form out of step with the job (here: its answer widened on the way in) lets a
    value through; the server's 400 names the field, and the page puts it there."""
    save_job(console)
    olga = console.token_for("olga", "operator")
    page = open_console(context, console, olga)

    def widened(route: Route) -> None:
        answer = route.fetch()
        form = answer.json()
        for field in form["fields"]:
            if field["name"] == "tier":
                field["choices"].append("edge")
        route.fulfill(response=answer, json=form)

    page.route("**/api/v1/jobs/deploy/form*", widened)
    page.goto(f"{console.origin}/console/#/jobs/deploy")
    form = page.locator("form.run-form")
    form.get_by_label("replicas").fill("2")
    form.get_by_label("tier").select_option("edge")
    form.get_by_role("button", name="Run version 1").click()
    tier_error = page.locator("#param-tier-error")
    expect(tier_error).to_contain_text("must be one of ['web', 'db'] (got 'edge')")
    expect(form.get_by_label("tier")).to_have_attribute("aria-invalid", "true")
    expect(form.get_by_role("alert")).to_contain_text("The server refused the marked fields")
    assert runs_of(console) == []


def test_a_viewer_sees_the_job_without_the_form(context: Any, console: Console) -> None:
    save_job(console)
    admin = console.headers()
    schedule = console.http.post(
        f"{console.api}/schedules",
        json={"name": "nightly", "job": "deploy", "cron": "0 3 * * *", "timezone": "Europe/Paris",
              "params": {"replicas": 1, "tier": "web"}},
        headers=admin,
    )  # fmt: skip
    assert schedule.status_code == 201, schedule.text
    paused = console.http.post(
        f"{console.api}/schedules",
        json={"name": "weekly", "job": "deploy", "cron": "0 4 * * 1",
              "params": {"replicas": 2, "tier": "db"}, "follow_latest": True},
        headers=admin,
    )  # fmt: skip
    assert paused.status_code == 201, paused.text
    assert (
        console.http.post(f"{console.api}/schedules/weekly/pause", headers=admin).status_code == 200
    )
    hook = console.http.post(
        f"{console.api}/jobs/deploy/hooks",
        json={"mapping": {"release": "/release/tag"}, "params": {"replicas": 1, "tier": "web"}},
        headers=admin,
    )
    assert hook.status_code == 201, hook.text

    vera = console.token_for("vera", "viewer")
    page = open_console(context, console, vera, "#/jobs/deploy")
    expect(page.get_by_role("heading", name="Job deploy", level=1)).to_be_visible()
    expect(page.locator("#run-not-allowed")).to_contain_text("jobs:run")
    versions = page.get_by_role("region", name="Versions", exact=True)
    expect(versions.get_by_role("row", name="v1")).to_contain_text("release, replicas, tier")
    schedules = page.get_by_role("region", name="Schedules", exact=True)
    nightly = schedules.get_by_role("row", name="nightly")
    expect(nightly).to_contain_text("0 3 * * * (Europe/Paris)")
    expect(nightly).to_contain_text("active")
    expect(nightly.get_by_role("cell", name="v1", exact=True)).to_be_visible()  # pinned
    upcoming = schedule.json()["upcoming"][:3]
    expect(nightly.locator("time")).to_have_count(3)
    assert nightly.locator("time").evaluate_all("ts => ts.map(t => t.dateTime)") == upcoming
    weekly = schedules.get_by_role("row", name="weekly")
    expect(weekly).to_contain_text("paused")
    expect(weekly).to_contain_text("latest at each fire")
    expect(weekly).to_contain_text("none while paused")
    hooks = page.get_by_role("region", name="Webhooks", exact=True)
    expect(hooks).to_contain_text(hook.json()["id"])
    expect(hooks).to_contain_text("release ← /release/tag")
    # The form is not there, and the signing secret never is.
    assert page.locator("form.run-form").count() == 0
    assert hook.json()["secret"] not in page.content()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "console-job-page-viewer.png", full_page=True)


def test_the_inbox_compares_a_job_run_with_the_jobs_last_run(
    context: Any, console: Console
) -> None:
    gated = {**PLAN, "approval_level": 1}
    saved = console.http.put(f"{console.api}/jobs/gated", json=gated, headers=console.headers())
    assert saved.status_code == 201, saved.text
    olga = console.token_for("olga", "operator")
    made = []
    for replicas in (2, 3):
        ran = console.http.post(
            f"{console.api}/jobs/gated/runs",
            json={"params": {"replicas": replicas, "tier": "web"}},
            headers=console.headers(olga),
        )
        assert ran.status_code == 202 and ran.json()["status"] == "pending_approval", ran.text
        made.append(ran.json())
    bob = console.token_for("bob", "approver")
    page = open_console(context, console, bob, "#/approvals")
    items = page.get_by_role("region", name="Deploy the app")
    expect(items).to_have_count(2)
    second = items.filter(has=page.locator(f'h2 a[href="#/executions/{made[1]["id"]}"]'))
    expect(second).to_contain_text("Compared with the last run of job gated (version 1)")
    expect(second.get_by_role("link", name=made[0]["id"][:8])).to_be_visible()
    changes = second.get_by_role("list", name="Changes since the last run")
    expect(changes.locator("li.removed")).to_contain_text(["param replicas: 2"])
    expect(changes.locator("li.added")).to_contain_text(["param replicas: 3"])
    first = items.filter(has=page.locator(f'h2 a[href="#/executions/{made[0]["id"]}"]'))
    expect(first).to_contain_text(
        "No earlier run of job gated or execution of this plan name to compare with."
    )
