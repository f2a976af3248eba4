"""One small hostile request must not stall the server: each input below is refused (4xx)
or ends its step failed, and ``/healthz`` of the same server answers while it is handled.

A real ``opsc serve`` process (tests/served.py), so a request that held its event loop
would hold the health probe with it. The 2-second bound is liveness, not speed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import psycopg

from tests.served import opsc, serving, token_of

URL = "/api/v1/executions"
LOCAL = {"hostnames": ["localhost"]}
#: How long /healthz may take while a hostile request is in flight. Generous: CPU-starved
#: beside other test processes it has taken over 2 s; a stall the input caused would last
#: until the request's own budget or forever.
LIVENESS_S = 5.0
YAML = {"Content-Type": "application/yaml"}


@asynccontextmanager
async def _served(
    cli_env: dict[str, str],
) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str]]]:
    """An ``opsc serve`` of tenant acme (local steps allowed) and an operator's headers."""
    env = {**cli_env, "OPSC_TENANT": "acme"}
    assert opsc(env, "tenant", "local-exec", "on").returncode == 0
    _, token = token_of(opsc(env, "tokens", "create", "mallory", "--role", "operator"))
    with serving(cli_env, "--workers", "0") as (url, _):
        base = url.removesuffix("/api/v1")
        async with httpx.AsyncClient(base_url=base, timeout=60) as http:
            yield http, {"Authorization": f"Bearer {token}"}


def _alias_bomb() -> str:
    """547 bytes that expand to 9**7 (4.8 million) strings without the budget."""
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdef", "bcdefg", strict=True):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    return (
        "name: bomb\nsteps:\n  - name: s\n    type: http\n    targets: {hostnames: [localhost]}\n"
        "    url: http://localhost/\n    method: POST\n    json:\n"
        + "\n".join(f"      {line}" for line in lines)
        + "\n"
    )


async def _while_alive(http: httpx.AsyncClient, work: Awaitable[httpx.Response]) -> httpx.Response:
    """Run ``work`` and probe /healthz throughout (at least once): each probe must answer."""
    task = asyncio.ensure_future(work)
    probes = 0
    while not task.done() or probes == 0:
        health = await http.get("/healthz", timeout=LIVENESS_S)
        assert health.status_code == 200
        probes += 1
        await asyncio.sleep(0.1)
    return await task


def _executions(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM execution.executions").fetchone()
        assert row is not None
        return int(row[0])


REFUSED: dict[str, tuple[bytes, dict[str, str], str]] = {
    "alias bomb": (_alias_bomb().encode(), YAML, "once aliases are expanded"),
    "100k-deep JSON": (b"[" * 100_000 + b"]" * 100_000, {}, "nested deeper than 64 levels"),
    "100k-deep YAML": (b"a: " + b"[" * 100_000 + b"]" * 100_000, YAML, "nested deeper"),
    "5001-digit integer": (
        b'{"name": "x", "priority": ' + b"9" * 5001 + b', "steps": []}',
        {},
        "integer longer than 40 digits",
    ),
}


async def test_parse_bombs_are_4xx_and_the_server_stays_alive(
    cli_env: dict[str, str], database_url: str
) -> None:
    before = _executions(database_url)
    async with _served(cli_env) as (http, auth):
        for case, (body, content_type, message) in REFUSED.items():
            headers = {**auth, **content_type}
            r = await _while_alive(http, http.post(URL, content=body, headers=headers))
            assert 400 <= r.status_code < 500, (case, r.text)
            assert message in r.json()["detail"], case
    assert _executions(database_url) == before  # nothing stored


def _step(**fields: Any) -> dict[str, Any]:
    return {"targets": LOCAL, "action_class": "read", **fields}


async def _run(http: httpx.AsyncClient, headers: dict[str, str], plan: dict[str, Any]) -> Any:
    r = await _while_alive(http, http.post(URL, json=plan, headers=headers))
    assert r.status_code in (201, 202), r.text
    execution = r.json()
    while execution["status"] not in ("completed", "failed", "timed_out", "cancelled"):
        await asyncio.sleep(0.2)
        health = await http.get("/healthz", timeout=LIVENESS_S)
        assert health.status_code == 200
        execution = (await http.get(f"{URL}/{execution['id']}", headers=headers)).json()
    return execution


async def test_nested_loop_template_fails_its_step_and_the_server_stays_alive(
    cli_env: dict[str, str], database_url: str
) -> None:
    loops = "{% for i in range(N) %}{% for j in range(N) %}{% endfor %}{% endfor %}"
    # Over the plan's own values the loops run when the plan is checked, at submission:
    # refused (400) within the budget, nothing stored.
    url = "http://localhost/" + loops.replace("N", "8000")
    plan = {"name": "loops", "steps": [{"name": "s", "type": "http", "url": url, **_step()}]}
    before = _executions(database_url)
    async with _served(cli_env) as (http, headers):
        r = await _while_alive(http, http.post(URL, json=plan, headers=headers))
        assert r.status_code == 400, r.text
        assert "template budget exceeded" in r.json()["detail"]
        assert _executions(database_url) == before
        # Over an earlier step's output they can only run at run time: the step fails there.
        url = "http://localhost/" + loops.replace("N", "steps.n.output | int")
        plan = {
            "name": "loops",
            "steps": [
                {"name": "n", "type": "command", "command": "echo 8000", **_step()},
                {"name": "s", "type": "http", "url": url, **_step()},
            ],
        }
        execution = await _run(http, headers, plan)
    assert execution["status"] == "failed"
    step = execution["steps"][-1]
    assert step["status"] == "failed"
    assert "template budget exceeded" in step["error"]


async def test_redos_regex_in_a_validate_step_ends_and_the_server_stays_alive(
    cli_env: dict[str, str],
) -> None:
    plan = {
        "name": "redos",
        "steps": [
            {"name": "print", "type": "command", "command": "printf '%050d1' 0", **_step()},
            {
                "name": "check",
                "type": "validate",
                "step": "print",
                # Exponential under backtracking on 50 zeros and a one: RE2 is linear.
                "expect": {"stdout_regex": "^(0+)+$"},
            },
        ],
    }
    async with _served(cli_env) as (http, headers):
        execution = await _run(http, headers, plan)
    assert execution["status"] == "failed"
    check = next(s for s in execution["steps"] if s["step_name"] == "check")
    assert check["status"] == "failed"
    assert "does not match" in check["error"]


async def test_lookaround_is_refused_at_validation_naming_the_field(
    cli_env: dict[str, str],
) -> None:
    plan = {
        "name": "look",
        "steps": [
            {"name": "p", "type": "command", "command": "true", **_step()},
            {"name": "c", "type": "validate", "step": "p", "expect": {"stdout_regex": "(?=a)"}},
        ],
    }
    async with _served(cli_env) as (http, headers):
        r = await http.post(f"{URL}/validate", content=json.dumps(plan), headers=headers)
    assert r.status_code == 422
    assert r.json()["errors"][0]["path"] == "steps[1].expect.stdout_regex"
    assert "RE2" in r.json()["detail"]
