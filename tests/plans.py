"""Small plan builders shared by tests."""

from __future__ import annotations

from typing import Any

from opsconductor.plan import Plan, parse_plan


def command_step(name: str, command: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "type": "command",
        "action_class": "read",
        "targets": extra.pop("targets", {"hostnames": ["localhost"]}),
        "command": command,
        **extra,
    }


def plan_of(*steps: dict[str, Any], **extra: Any) -> Plan:
    return parse_plan({"name": extra.pop("name", "test plan"), "steps": list(steps), **extra})
