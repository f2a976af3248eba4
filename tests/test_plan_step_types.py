"""The step types of issue 7 in the plan model: strict fields, errors named by path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from opsconductor.errors import PlanError
from opsconductor.plan import (
    FileStep,
    HttpStep,
    ScriptStep,
    SqlStep,
    load_plan_file,
    parse_plan,
)


def one_step(**fields: Any) -> Any:
    step = {"name": "s", "targets": {"hostnames": ["localhost"]}, **fields}
    return parse_plan({"name": "p", "steps": [step]}).steps[0]


def test_each_new_type_parses_with_its_defaults() -> None:
    script = one_step(type="script", script="echo hi\n")
    assert isinstance(script, ScriptStep) and script.interpreter == "/bin/sh"
    push = one_step(type="file", src="a.conf", dest="/etc/a.conf", mode="0644")
    assert isinstance(push, FileStep) and push.direction == "push"
    web = one_step(type="http", url="http://{{ asset.address }}/healthz")
    assert isinstance(web, HttpStep) and (web.method, web.expect.status) == ("GET", 200)
    assert web.verify_tls is True  # TLS verification is on unless a plan turns it off
    query = one_step(type="sql", dsn="dbname=x", query="SELECT 1")
    assert isinstance(query, SqlStep) and query.expect is None


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"type": "http", "url": "u", "colour": "red"}, "steps[0].colour: unknown field"),
        (
            {"type": "http", "url": "u", "body": "x", "json": {}},
            "steps[0]: give body or json, not both",
        ),
        ({"type": "http", "url": "u", "method": "FETCH"}, "steps[0].method: must be one of"),
        (
            {"type": "http", "url": "u", "auth": {"username": "a"}},
            "steps[0].auth: basic auth needs both username and password",
        ),
        (
            {"type": "http", "url": "u", "expect": {"body_regex": "("}},
            "steps[0].expect.body_regex: not a valid regular expression",
        ),
        (
            {"type": "sql", "dsn": "d", "query": "q", "expect": {"rows": -1}},
            "steps[0].expect.rows: must be >= 0",
        ),
        (
            {"type": "file", "src": "a", "dest": "relative/path"},
            "steps[0].dest: the path on the target must be absolute",
        ),
        ({"type": "file", "src": "a", "dest": "/x", "mode": "rwx"}, "steps[0].mode: must match"),
        (
            {"type": "file", "direction": "fetch", "src": "/var/log/a", "dest": "/tmp/a"},
            "steps[0].dest: a fetch needs one file per target",
        ),
        (
            {"type": "script", "script": "x", "env": {"1BAD": "v"}},
            "steps[0].env: '1BAD' is not a valid environment variable name",
        ),
        (
            {"type": "command", "command": "x", "concurrency": 0},
            "steps[0].concurrency: must be >= 1",
        ),
        ({"type": "ftp"}, "steps[0].type: must be one of 'command', 'script', 'file', 'http'"),
    ],
)
def test_errors_name_the_field(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(PlanError) as caught:
        one_step(**fields)
    assert message in str(caught.value)


def test_every_example_plan_is_valid() -> None:
    folder = Path(__file__).resolve().parent.parent / "examples" / "plans"
    plans = sorted(folder.glob("*.yaml"))
    assert any(p.name == "web-rollout.yaml" for p in plans)
    for path in plans:
        load_plan_file(path)  # raises PlanError naming the file and field
