"""A job's run form: its ``params`` declarations as form fields. Pure.

The console draws one control per declared parameter from these fields and checks a value
the way ``params.bind`` will (``pattern``, ``choices``, ``max_length``, ``required``),
so a typo is caught before anything is sent; the server checks again on every run. A
``secret-ref`` parameter holds the *path* of a secret, never the secret: its field is a
text field for the path, and its value is fetched by the worker and never shown.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import ValidationError

from opsconductor.params import MAX_STRING, ParamSpec, ParamType, Value

#: What ``params.from_text`` accepts for an integer (kept in step with it).
INT_PATTERN = r"^[+-]?\d{1,18}$"
#: What a secret path may be (``params._SECRET_PATH``).
SECRET_PATH_PATTERN = r"^\S{1,500}$"


class Control(StrEnum):
    """The control a field is drawn as."""

    TEXT = "text"
    #: text typed as an integer: a number input would round 18 digits and hide bad input
    INTEGER = "integer"
    #: one of ``choices`` (a ``choice``, or a ``bool`` as "true"/"false")
    SELECT = "select"
    SECRET_PATH = "secret_path"


@dataclass(frozen=True)
class FormField:
    name: str
    type: ParamType
    control: Control
    required: bool
    #: shown pre-filled (a bool's as "true"/"false"); None: the field starts empty
    default: Value
    description: str | None
    #: the options of a select
    choices: tuple[str, ...]
    max_length: int | None
    #: a JavaScript-compatible regular expression the text must match
    pattern: str | None
    #: what a value must be, said to the user when it is not
    hint: str


def _hint(spec: ParamSpec) -> str:
    if spec.type == "int":
        return "an integer of at most 18 digits"
    if spec.type == "bool":
        return "true or false"
    if spec.type == "choice":
        return "one of " + ", ".join(spec.choices or [])
    if spec.type == "secret-ref":
        return "the path of a secret, such as kv/db/password (no spaces)"
    return f"text of at most {MAX_STRING} characters"


def field(name: str, spec: ParamSpec) -> FormField:
    control = {
        "int": Control.INTEGER,
        "bool": Control.SELECT,
        "choice": Control.SELECT,
        "secret-ref": Control.SECRET_PATH,
    }.get(spec.type, Control.TEXT)
    choices: tuple[str, ...] = ()
    if spec.type == "choice":
        choices = tuple(spec.choices or ())
    elif spec.type == "bool":
        choices = ("true", "false")
    default = spec.default
    if isinstance(default, bool):
        default = "true" if default else "false"
    pattern = {"int": INT_PATTERN, "secret-ref": SECRET_PATH_PATTERN}.get(spec.type)
    return FormField(
        name=name,
        type=spec.type,
        control=control,
        required=spec.is_required,
        default=default,
        description=spec.description,
        choices=choices,
        max_length=MAX_STRING if spec.type in ("string", "secret-ref") else None,
        pattern=pattern,
        hint=_hint(spec),
    )


def fields(declared: Mapping[str, Any]) -> list[FormField]:
    """One field per declared parameter: the required ones first, each group by name (a
    saved plan is stored as JSONB, which keeps no key order). ``declared`` is a saved
    version's ``params`` (checked when it was saved); a declaration that no longer reads
    is a ``ValueError`` naming it rather than a field that would mislead."""
    found = []
    for name, raw in declared.items():
        try:
            spec = ParamSpec.model_validate(raw)
        except ValidationError as exc:
            raise ValueError(f"params.{name}: {exc.errors()[0]['msg']}") from None
        found.append(field(name, spec))
    return sorted(found, key=lambda f: (not f.required, f.name))
