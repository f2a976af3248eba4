"""Bounded parsing keeps what plans legitimately use: anchors, merge keys, JSON; and the
template budget leaves ordinary templates alone."""

from __future__ import annotations

import pytest

from opsconductor.errors import PlanError
from opsconductor.safe_parse import check_control_chars, load_json, load_yaml
from opsconductor.templating import render

pytestmark = pytest.mark.unit


def test_anchors_and_merge_keys_still_work() -> None:
    data = load_yaml("base: &b {x: 1, y: 2}\nm:\n  <<: *b\n  x: 3\nl: [*b, *b]\n")
    assert data["m"] == {"x": 3, "y": 2}  # a merged key may be overridden
    assert data["l"] == [{"x": 1, "y": 2}] * 2


def test_duplicate_key_is_named_with_its_line() -> None:
    with pytest.raises(PlanError, match=r"line 3, column 1: duplicate key 'b'"):
        load_yaml("b: 1\nc: 2\nb: 3\n")
    with pytest.raises(PlanError, match="duplicate key 'b'"):
        load_json('{"b": 1, "b": 2}')


def test_tab_newline_and_carriage_return_are_text() -> None:
    assert load_yaml('s: "a\\tb\\r\\nc"\n') == {"s": "a\tb\r\nc"}
    with pytest.raises(PlanError, match=r"s\[1\]: control character U\+0007"):
        check_control_chars(load_json('{"s": ["ok", "\\u0007"]}'))


def test_depth_at_the_limit_is_fine_past_it_refused() -> None:
    assert load_json("[" * 64 + "]" * 64) is not None
    with pytest.raises(PlanError, match="nested deeper than 64"):
        load_json("[" * 65 + "]" * 65)
    assert load_json('{"s": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}')


def test_ordinary_templates_render_under_the_budget() -> None:
    text = "{% for t in asset.tags|dictsort %}{{ t[0] }}={{ t[1] ~ '!' }} {% endfor %}{{ 2 * 3 }}"
    assert render(text, {"asset": {"tags": {"a": "1", "b": "2"}}}, "f") == "a=1! b=2! 6"
    many = "{% for i in range(40000) %}{% endfor %}done"
    assert render(many, {}, "f") == "done"
