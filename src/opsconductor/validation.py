"""Assertions of ``validate`` steps over an earlier step's result. Pure."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from opsconductor import linear_regex
from opsconductor.plan import Expectations, JsonPathCheck
from opsconductor.safe_parse import json_depth

_PART = re.compile(r"\.([A-Za-z_][A-Za-z0-9_-]*)|\[(\d+)\]")


@dataclass(frozen=True)
class Observed:
    """What an earlier step left behind on one target."""

    status: str
    exit_code: int | None
    output: str


_MISSING = object()


def json_path_get(document: Any, path: str) -> Any:
    """Follow ``$.a.b[0]``; a deliberately small subset, the plan model checks the syntax."""
    node = document
    for key, index in _PART.findall(path[1:]):
        if key and isinstance(node, dict) and key in node:
            node = node[key]
        elif index and isinstance(node, list) and int(index) < len(node):
            node = node[int(index)]
        else:
            return _MISSING
    return node


#: Deeper output is not decoded: the JSON decoder recurses once per level.
MAX_OUTPUT_DEPTH = 500


def check_json_path(check: JsonPathCheck, output: str) -> str | None:
    if json_depth(output) > MAX_OUTPUT_DEPTH:
        return f"output is nested deeper than {MAX_OUTPUT_DEPTH} levels"
    try:
        document = json.loads(output)
    except json.JSONDecodeError as exc:
        return f"output is not JSON ({exc.msg} at line {exc.lineno})"
    except ValueError as exc:  # e.g. an integer past Python's digit limit
        return f"output is not usable JSON ({exc})"
    value = json_path_get(document, check.path)
    if value is _MISSING:
        return None if not check.exists else f"{check.path} not found"
    if not check.exists:
        return f"{check.path} exists but should not"
    if "equals" in check.model_fields_set and value != check.equals:
        return f"{check.path} is {value!r}, expected {check.equals!r}"
    return None


def failures(expect: Expectations, seen: Observed) -> list[str]:
    """Every expectation that does not hold, as one readable sentence each."""
    problems = []
    if seen.status != "completed" and expect.exit_code is None:
        problems.append(f"step ended {seen.status}")
    if expect.exit_code is not None and seen.exit_code != expect.exit_code:
        problems.append(f"exit code {seen.exit_code}, expected {expect.exit_code}")
    matches, bad = linear_regex.search, expect.stdout_not_regex
    if expect.stdout_regex is not None and not matches(expect.stdout_regex, seen.output):
        problems.append(f"output does not match /{expect.stdout_regex}/")
    if bad is not None and matches(bad, seen.output):
        problems.append(f"output matches /{expect.stdout_not_regex}/")
    if expect.json_path is not None:
        problem = check_json_path(expect.json_path, seen.output)
        if problem:
            problems.append(problem)
    return problems
