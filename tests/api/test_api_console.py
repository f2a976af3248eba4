"""``GET /api/v1/me`` and the console's static files (served by the API, no build step)."""

from __future__ import annotations

import re
from pathlib import Path

from opsconductor import rbac
from opsconductor.api.console_files import CONSOLE_DIR
from tests.api.support import Api

#: Ways to turn data into markup or code; the console builds every node with textContent.
HTML_SINKS = re.compile(
    r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function|"
    r"setHTMLUnsafe|createContextualFragment"
)


async def test_me_tells_the_actor_tenant_roles_and_permissions(api: Api) -> None:
    operator = await api.login("acme", "alice", "operator")
    answer = await api.client.get("/api/v1/me", headers=operator)
    assert answer.status_code == 200
    me = answer.json()
    assert (me["tenant_id"], me["actor_id"], me["roles"]) == ("acme", "alice", ["operator"])
    assert "executions:cancel" in me["permissions"]
    assert "executions:approve" not in me["permissions"]
    assert "steps:modify@dev,local,staging" in me["permissions"]
    assert not any(p.startswith("steps:deploy") for p in me["permissions"])

    nobody = await api.login("acme", "nobody")
    bare = (await api.client.get("/api/v1/me", headers=nobody)).json()
    assert (bare["roles"], bare["permissions"]) == ([], [])
    assert (await api.client.get("/api/v1/me")).status_code == 401


def test_held_permissions_lists_every_grant_once() -> None:
    admin = rbac.held_permissions([rbac.BUILTIN_ROLES["admin"]])
    assert "executions:approve" in admin and "steps:deploy" in admin
    both = rbac.held_permissions([rbac.BUILTIN_ROLES["viewer"], rbac.BUILTIN_ROLES["approver"]])
    assert both == ["assets:view", "executions:approve", "executions:view", "jobs:view"]


async def test_console_is_served_with_a_strict_content_security_policy(api: Api) -> None:
    root = await api.client.get("/")
    assert root.status_code == 307 and root.headers["location"] == "/console/"
    assert (await api.client.get("/console")).headers["location"] == "/console/"

    page = await api.client.get("/console/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    assert '<script type="module" src="app.js">' in page.text

    module = await api.client.get("/console/app.js")
    assert module.status_code == 200
    assert module.headers["content-type"].startswith("text/javascript")
    assert (await api.client.get("/console/missing.js")).status_code == 404
    assert "/console" not in (await api.client.get("/api/v1/openapi.json")).text


def test_console_files_use_no_html_sink_and_load_nothing_from_elsewhere() -> None:
    files = sorted(CONSOLE_DIR.iterdir())
    assert {f.suffix for f in files} <= {".html", ".css", ".js", ".svg"}
    for file in files:
        text = file.read_text()
        assert not HTML_SINKS.search(text), file.name
        assert not re.search(r"(src|href)=\"(https?:)?//", text), file.name
        assert "@import" not in text and "url(http" not in text, file.name
    imports = {
        name
        for file in files
        if file.suffix == ".js"
        for name in re.findall(r'from "\./([^"]+)"', file.read_text())
    }
    assert imports <= {f.name for f in files}, "a module imports a file that does not exist"


def test_console_is_package_data() -> None:
    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    for suffix in {f.suffix for f in CONSOLE_DIR.iterdir()}:
        assert f'"api/console/*{suffix}"' in pyproject
