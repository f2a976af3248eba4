"""A job's run form: its params declarations as form fields, and the checks the console
makes before sending, kept in step with what ``params`` accepts."""

from __future__ import annotations

import re

import pytest

from opsconductor import params
from opsconductor.errors import BadInput
from opsconductor.params import ParamSpec
from opsconductor.run_form import INT_PATTERN, SECRET_PATH_PATTERN, Control, fields

DECLARED = {
    "release": {"type": "string", "default": "1.0", "description": "Release tag"},
    "replicas": {"type": "int"},
    "tier": {"type": "choice", "choices": ["web", "db"], "default": "web"},
    "restart": {"type": "bool", "default": False},
    "verbose": {"type": "bool", "required": False},
    "db_password": {"type": "secret-ref", "default": "kv/db/password"},
    "note": {"type": "string", "required": False},
}


def test_one_field_per_param_required_first_then_by_name_drawn_by_type() -> None:
    found = {f.name: f for f in fields(DECLARED)}
    assert list(found) == [
        "replicas",
        "db_password",
        "note",
        "release",
        "restart",
        "tier",
        "verbose",
    ]
    assert [found[n].control for n in DECLARED] == [
        Control.TEXT,
        Control.INTEGER,
        Control.SELECT,
        Control.SELECT,
        Control.SELECT,
        Control.SECRET_PATH,
        Control.TEXT,
    ]
    release = found["release"]
    assert (release.required, release.default, release.description) == (False, "1.0", "Release tag")
    assert release.max_length == params.MAX_STRING and release.pattern is None
    replicas = found["replicas"]
    assert (replicas.required, replicas.default, replicas.pattern) == (True, None, INT_PATTERN)
    assert replicas.hint == "an integer of at most 18 digits"
    assert found["tier"].choices == ("web", "db") and found["tier"].hint == "one of web, db"
    # A bool is a select of "true"/"false", its default said the same way.
    assert (found["restart"].choices, found["restart"].default) == (("true", "false"), "false")
    assert (found["verbose"].required, found["verbose"].default) == (False, None)
    secret = found["db_password"]
    assert (secret.pattern, secret.default) == (SECRET_PATH_PATTERN, "kv/db/password")
    assert "path of a secret" in secret.hint
    assert (found["note"].required, found["note"].default) == (False, None)


def test_no_params_no_fields() -> None:
    assert fields({}) == []


def test_a_declaration_that_does_not_read_names_the_param() -> None:
    with pytest.raises(ValueError, match=r"^params\.tier: "):
        fields({"tier": {"type": "choice"}})


@pytest.mark.parametrize(
    "text",
    ["0", "7", "-3", "+12", "123456789012345678", "1234567890123456789", "1.5", "1e3", "",
     " 7", "seven", "0x10", "--1"],
)  # fmt: skip
def test_the_integer_pattern_accepts_exactly_what_set_does(text: str) -> None:
    """The form checks text with the pattern; ``--set`` with ``params.from_text``: the
    same text passes both or neither (surrounding spaces are trimmed by the form)."""
    spec = ParamSpec(type="int")
    try:
        params.from_text(spec, text)
        accepted = text == text.strip()
    except BadInput:
        accepted = False
    assert bool(re.match(INT_PATTERN, text)) is accepted


@pytest.mark.parametrize("path", ["kv/db/password", "a", "kv/with space", "", "x" * 501])
def test_the_secret_path_pattern_is_what_bind_accepts(path: str) -> None:
    spec = {"p": ParamSpec(type="secret-ref")}
    try:
        params.bind(spec, {"p": path})
        accepted = True
    except BadInput:
        accepted = False
    assert bool(re.match(SECRET_PATH_PATTERN, path)) is accepted
