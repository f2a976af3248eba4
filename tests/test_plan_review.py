"""The plan as an approver reads it, and the diff against the last run of the same name."""

from __future__ import annotations

from typing import Any

from opsconductor.plan_review import DiffLine, Op, diff, lines, steps


def snapshot(command: str, hosts: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "plan": {
            "name": "Rotate logs",
            "approval_level": 2,
            "steps": [
                {"name": "check", "type": "validate", "targets": {"tags": {"role": "web"}},
                 "expect": {"exit_code": 0}},
                {"name": "rotate", "type": "command", "action_class": "modify",
                 "targets": {"tags": {"role": "web"}}, "command": command, "concurrency": 5,
                 **extra},
            ],
        },
        "targets": [hosts, hosts],
        "params": {"keep": 7},
    }  # fmt: skip


def test_steps_show_targets_and_the_work_not_the_selectors() -> None:
    found = steps(snapshot("logrotate -f /etc/logrotate.conf", ["web-1", "web-2"]))
    assert [s.name for s in found] == ["check", "rotate"]
    rotate = found[1]
    assert (rotate.type, rotate.action_class, rotate.targets) == (
        "command",
        "modify",
        ("web-1", "web-2"),
    )
    assert rotate.work == (("command", "logrotate -f /etc/logrotate.conf"),)
    assert rotate.settings == (("concurrency", "5"),)
    assert found[0].work == (("expect", '{"exit_code": 0}'),)


def test_lines_put_one_target_per_line_and_indent_multiline_work() -> None:
    text = lines(snapshot("echo a\necho b", ["web-1"]))
    assert text[:2] == ["approval_level: 2", "param keep: 7"]
    assert "step 2 “rotate” (command, modify)" in text
    at = text.index("  command: echo a")
    assert text[at + 1] == "           echo b"
    assert text[-1] == "  target web-1"


def test_the_diff_shows_a_changed_command_and_an_added_host_only() -> None:
    hosts = [f"web-{i}" for i in range(1, 21)]
    old = lines(snapshot("logrotate -f", hosts))
    new = lines(snapshot("logrotate -f -v", [*hosts, "web-21"]))
    changed = [line for line in diff(old, new) if line.op in (Op.ADDED, Op.REMOVED)]
    assert changed == [
        DiffLine(Op.ADDED, "  target web-21"),  # of step 1
        DiffLine(Op.REMOVED, "  command: logrotate -f"),
        DiffLine(Op.ADDED, "  command: logrotate -f -v"),
        DiffLine(Op.ADDED, "  target web-21"),  # of step 2
    ]
    shown = diff(old, new)
    assert len(shown) < 16  # the 19 unchanged hosts of each step are not repeated
    assert Op.GAP in {line.op for line in shown}


def test_the_same_plan_has_an_empty_diff() -> None:
    same = lines(snapshot("logrotate -f", ["web-1"]))
    assert diff(same, list(same)) == []
