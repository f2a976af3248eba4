"""Pure parts of become and live output: plan validation, what goes on sudo's command line
and stdin, line splitting for the live view, how ``opsc watch`` prints output events."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from opsconductor.api import models
from opsconductor.cli import render
from opsconductor.connectors import ssh_run
from opsconductor.errors import PlanError
from opsconductor.masking import Masker
from opsconductor.output import MARGIN, MAX_LINE, Capped, LineSplitter
from opsconductor.plan import parse_plan, plan_document


def _step(**fields: Any) -> Any:
    step = {"name": "s", "type": "command", "targets": {"assets": ["a"]}, "command": "id"}
    return parse_plan({"name": "p", "steps": [{**step, **fields}]})


def test_become_fields_are_checked_and_hashed_only_when_set() -> None:
    plan = _step(become=True, become_password={"secret": "kv/sudo/web"})
    assert plan.steps[0].become_as == "root"
    assert plan_document(plan)["steps"][0]["become"] is True
    assert "become" not in plan_document(_step())["steps"][0]  # old plans keep their hash
    with pytest.raises(PlanError, match=r"steps\[0\]\.become_password: must be a secret"):
        _step(become=True, become_password="hunter2")
    with pytest.raises(PlanError, match="need become: true"):
        _step(become_user="deploy")
    with pytest.raises(PlanError, match=r"become_user: must match"):
        _step(become=True, become_user="root; rm -rf /")
    with pytest.raises(PlanError, match="become: unknown field"):
        parse_plan(
            {
                "name": "p",
                "steps": [
                    {"name": "s", "type": "noop", "targets": {"assets": ["a"]}, "become": True}
                ],
            }
        )


def test_the_password_goes_on_stdin_only() -> None:
    become = ssh_run.Become("deploy", "pa55-word'x")
    line, feed = ssh_run.wrap_become("systemctl restart web", become, {"K": "v"}, "/srv")
    assert "pa55" not in line and "'v'" not in line and "/srv" not in line
    assert "sudo -S -p '' -u deploy --" in line
    password, _, rest = feed.decode().partition("\n")
    assert password == "pa55-word'x"
    mark = rest.lstrip("\n").split("\n")[0]
    assert mark.startswith("opsc-setup-") and mark in line
    assert rest.lstrip("\n").split("\n")[1] == "cd /srv && export K=v && :"
    assert "pa55" not in repr(become)
    quiet, nothing_asked = ssh_run.wrap_become("id", ssh_run.Become("root"))
    assert "sudo -n -u root" in quiet and nothing_asked.startswith(b"opsc-setup-")
    with pytest.raises(ValueError, match="line break"):
        ssh_run.Become("root", "two\nlines")


def test_lines_are_passed_on_whole_and_long_ones_cut_once() -> None:
    got: list[str] = []
    split = LineSplitter(got.append)
    for chunk in (b"ab", b"c\nde", b"f\r\n", b"x" * (MAX_LINE + MARGIN), b"more\n", b"end"):
        split.feed(chunk)
    split.close()
    assert got[:2] == ["abc", "def"]
    assert isinstance(got[2], Capped) and got[2] == "x" * MAX_LINE + "…[line cut]"
    assert got[3:] == ["end"]  # the rest of the long line ("more") is dropped


def test_a_secret_across_a_long_lines_cut_is_masked_whole() -> None:
    secret = "s3cret-value-42"
    got: list[str] = []
    split = LineSplitter(got.append)
    split.feed(b"y" * (MAX_LINE - 5) + secret.encode() + b"z" * 50 + b"\n")
    masker = Masker().with_secrets([secret])
    shown = masker.mask_output(got[0])
    assert "s3cre" not in shown and shown.endswith("****…[line cut]")


def test_watch_prints_output_lines_as_text() -> None:
    event = models.Event(
        id=1,
        event_type="step_output",
        from_status=None,
        to_status=None,
        actor_id="w",
        payload={"step": "s", "target": "web-1", "stream": "stderr", "lines": ["[bold]x"]},
        created_at=datetime(2024, 1, 1, 12, 0, 0, tzinfo=UTC),
    )
    assert render.event_line(event) == "12:00:00 s @ web-1 ! \\[bold]x"
