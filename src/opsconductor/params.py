"""Plan parameters: what a plan declares (``params:``) and the values a caller gives. Pure.

A value comes from ``--set name=value`` (text, converted by the declared type), a JSON or
YAML file or an API body (typed: a string where an integer is declared is an error), and
is checked against its declaration before anything is stored. The bound values are part of
the plan hash, so an approval covers them. A ``secret-ref`` parameter holds the *path* of
a secret (``kv/db/password``); its value is fetched just in time by the worker like every
other secret reference, never hashed, stored or shown.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from opsconductor.errors import BadInput

ParamType = Literal["string", "int", "bool", "choice", "secret-ref"]
#: A bound value: what the hash, the snapshot and templates hold (a secret-ref: its path).
Value = str | int | bool | None

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_SECRET_PATH = re.compile(r"^\S{1,500}$")
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
#: Longest string value: a parameter is a knob, not a payload.
MAX_STRING = 4096


class ParamSpec(BaseModel):
    """One declared parameter."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    type: ParamType = "string"
    description: str | None = Field(default=None, max_length=2000)
    default: str | int | bool | None = None
    #: None: required exactly when there is no default.
    required: bool | None = None
    choices: list[Annotated[str, Field(min_length=1, max_length=MAX_STRING)]] | None = Field(
        default=None, min_length=1, max_length=1000
    )

    @model_validator(mode="after")
    def _consistent(self) -> ParamSpec:
        if (self.type == "choice") != (self.choices is not None):
            raise ValueError("choices: give them for type choice, and only for it")
        if self.default is not None:
            problem = _problem(self, self.default)
            if problem is not None:
                raise ValueError(f"default: {problem}")
        return self

    @property
    def is_required(self) -> bool:
        return self.required if self.required is not None else self.default is None


def _problem(spec: ParamSpec, value: Any) -> str | None:
    """Why ``value`` does not fit ``spec``; None if it does."""
    got = type(value).__name__.replace("NoneType", "null")
    if spec.type == "int":
        if not isinstance(value, int) or isinstance(value, bool):
            return f"must be an integer (got {got})"
        if abs(value) >= 10**18:
            return "must be an integer of at most 18 digits"
        return None
    if spec.type == "bool":
        return None if isinstance(value, bool) else f"must be true or false (got {got})"
    if not isinstance(value, str):
        return f"must be a string (got {got})"
    if len(value) > MAX_STRING:
        return f"must be at most {MAX_STRING} characters"
    if spec.type == "choice" and value not in (spec.choices or []):
        return f"must be one of {spec.choices} (got {value!r})"
    if spec.type == "secret-ref" and not _SECRET_PATH.match(value):
        return "must be a secret path such as kv/db/password (no spaces)"
    return None


def from_text(spec: ParamSpec, text: str) -> Value:
    """A ``--set`` value (always text) as the declared type; ``BadInput`` if it is none."""
    if spec.type == "int":
        if re.fullmatch(r"[+-]?\d{1,18}", text.strip()):
            return int(text)
        raise BadInput(f"must be an integer (got {text!r})")
    if spec.type == "bool":
        lowered = text.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise BadInput(f"must be true or false (got {text!r})")
    return text


def parse_sets(specs: Mapping[str, ParamSpec], pairs: list[str]) -> dict[str, Value]:
    """``["version=1.2", "restart=true"]`` as typed values; unknown names are errors."""
    values: dict[str, Value] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        name = name.strip()
        if not sep or not name:
            raise BadInput(f"--set {pair!r}: write name=value")
        spec = specs.get(name)
        if spec is None:
            raise BadInput(_unknown(name, specs))
        try:
            values[name] = from_text(spec, text)
        except BadInput as exc:
            raise BadInput(f"params.{name}: {exc}") from None
    return values


def _unknown(name: str, specs: Mapping[str, ParamSpec]) -> str:
    declared = ", ".join(sorted(specs)) or "none"
    return f"params.{name}: this plan declares no such parameter (declared: {declared})"


def bind(specs: Mapping[str, ParamSpec], given: Mapping[str, Any] | None) -> dict[str, Value]:
    """Every declared parameter's value: given, else its default; ``BadInput`` naming the
    parameter for an unknown name, a missing required value or a value of the wrong type."""
    given = dict(given or {})
    for name in given:
        if name not in specs:
            raise BadInput(_unknown(name, specs))
    bound: dict[str, Value] = {}
    for name, spec in specs.items():
        value = given.get(name, spec.default)
        if value is None:
            if spec.is_required:
                about = f" ({spec.description})" if spec.description else ""
                raise BadInput(
                    f"params.{name}: required {spec.type} parameter not given{about}; "
                    f"pass --set {name}=VALUE"
                )
            bound[name] = None
            continue
        problem = _problem(spec, value)
        if problem is not None:
            raise BadInput(f"params.{name}: {problem}")
        bound[name] = value
    return bound


def check_names(specs: Mapping[str, ParamSpec]) -> Mapping[str, ParamSpec]:
    for name in specs:
        if not NAME.match(name):
            raise ValueError(f"{name!r} is not a valid parameter name (letters, digits, _)")
    return specs


def secret_params(specs: Mapping[str, ParamSpec]) -> list[str]:
    return [name for name, spec in specs.items() if spec.type == "secret-ref"]


def secret_stand_in(path: str) -> str:
    """What a ``secret-ref`` parameter reads as where no secret is fetched (validation,
    ``when`` conditions): a condition over a secret's value would disclose it, bit by
    bit, through which steps ran."""
    return f"<secret {path}>"


def env_name(name: str) -> str:
    return f"OPSC_PARAM_{name.upper()}"
