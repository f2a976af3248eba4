"""Plan validation errors as a person reads them: ``path: message``
(``steps[2].timeout_s: must be > 0``), from pydantic's error records. Pure."""

from __future__ import annotations

from typing import Any

_STEP_TAGS = ("command", "script", "file", "http", "sql", "noop", "validate", "ansible")

_VALUE_UNION_TAGS = ("str", "SecretRef")

_TYPE_NAMES = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "list_type": "a list",
}


def _format_location(loc: tuple[str | int, ...]) -> str:
    out = ""
    for i, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in _STEP_TAGS and i > 0 and isinstance(loc[i - 1], int):
            continue  # pydantic's union tag (steps[0].command.timeout_s) adds nothing
        elif part in _VALUE_UNION_TAGS:
            continue  # env.TOKEN.SecretRef.secret: the member name adds nothing either
        else:
            out += f".{part}" if out else str(part)
    return out or "plan"


def _number(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


def format_error(err: Any) -> str:
    loc, kind, ctx = tuple(err["loc"]), err["type"], err.get("ctx") or {}
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        loc += ("type",)
    if kind in _TYPE_NAMES:
        got = type(err.get("input")).__name__.replace("NoneType", "null")
        message = f"must be {_TYPE_NAMES[kind]} (got {got})"
    else:
        message = {
            "extra_forbidden": "unknown field",
            "missing": "field required",
            "greater_than": f"must be > {_number(ctx.get('gt'))}",
            "greater_than_equal": f"must be >= {_number(ctx.get('ge'))}",
            "less_than_equal": f"must be <= {_number(ctx.get('le'))}",
            "too_short": "must not be empty",
            "union_tag_invalid": f"must be one of {ctx.get('expected_tags')} "
            f"(got {ctx.get('tag')!r})",
            "union_tag_not_found": f"field required (one of {', '.join(map(repr, _STEP_TAGS))})",
            "literal_error": f"must be one of {ctx.get('expected')}",
            "string_pattern_mismatch": f"must match {ctx.get('pattern')}",
        }.get(kind) or str(err["msg"]).removeprefix("Value error, ")
    return f"{_format_location(loc)}: {message}"
