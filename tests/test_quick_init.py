"""quick_init: the same records as the dataclass's own ``__init__``, only faster."""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field

import pytest

from opsconductor.quick_init import quick_init


@dataclass(frozen=True)
class _Plain:
    a: int
    b: str
    c: list[int] = field(default_factory=list)
    d: str | None = None


@quick_init
@dataclass(frozen=True)
class _Quick:
    a: int
    b: str
    c: list[int] = field(default_factory=list)
    d: str | None = None


def test_the_records_are_those_of_the_generated_init() -> None:
    assert str(inspect.signature(_Quick)) == str(inspect.signature(_Plain))
    for args, kwargs in [((1, "x"), {}), ((1, "x", [2]), {"d": "y"}), ((), {"b": "x", "a": 1})]:
        plain, quick = _Plain(*args, **kwargs), _Quick(*args, **kwargs)
        assert dataclasses.astuple(plain) == dataclasses.astuple(quick)
        assert repr(quick) == repr(plain).replace("_Plain", "_Quick")
        assert quick == _Quick(*args, **kwargs)
    first, second = _Quick(1, "x"), _Quick(1, "x")
    assert first.c == [] and first.c is not second.c  # the factory runs per record
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.a = 2  # type: ignore[misc]
    with pytest.raises(TypeError, match="unexpected keyword"):
        _Quick(1, "x", e=3)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="missing"):
        _Quick(1)  # type: ignore[call-arg]


def test_a_class_it_cannot_rebuild_exactly_is_refused() -> None:
    @dataclass(frozen=True)
    class Checked:
        a: int

        def __post_init__(self) -> None:
            pass

    @dataclass
    class Mutable:
        a: int

    for cls in (Checked, Mutable):
        with pytest.raises(TypeError):
            quick_init(cls)

    @dataclass(frozen=True)
    class Clashing:
        self: int

    with pytest.raises(TypeError):
        quick_init(Clashing)
