"""A faster ``__init__`` for the wide frozen dataclasses built per execution. Pure.

A frozen dataclass's generated ``__init__`` sets each field through
``object.__setattr__`` (its ``__setattr__`` refuses): about 0.25 us a field, 8 us for an
``Execution`` of 34 fields, which a bulk submission builds for every plan (with a
``NewExecution`` of 27). ``quick_init`` replaces it with one that writes the fields into
the instance's ``__dict__`` directly: the same signature, defaults and default factories,
so the very same records (equal, same repr, still frozen to every later assignment).
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

T = TypeVar("T")


class _Factory:
    """Stands for "not given" where a field has a default factory (shown as the
    dataclass's own sentinel is)."""

    def __repr__(self) -> str:
        return "<factory>"


_NOT_GIVEN: Any = _Factory()


def quick_init(cls: type[T]) -> type[T]:
    """Decorate a ``@dataclass(frozen=True)`` (applied after it). A class this cannot
    rebuild exactly (``__post_init__``, slots, keyword-only or non-init fields) is
    refused, so a later change to the class cannot silently change its records."""
    if not dataclasses.is_dataclass(cls) or not cls.__dataclass_params__.frozen:  # type: ignore[attr-defined]
        raise TypeError(f"{cls.__name__}: quick_init is for frozen dataclasses")
    fields = dataclasses.fields(cls)
    if (
        hasattr(cls, "__post_init__")
        or "__slots__" in cls.__dict__
        or any(not f.init or f.kw_only for f in fields)
    ):
        raise TypeError(f"{cls.__name__}: quick_init cannot rebuild this __init__ exactly")
    # The generated code's own names all start with _quick_, which no field may.
    if any(f.name == "self" or f.name.startswith("_quick_") for f in fields):
        raise TypeError(f"{cls.__name__}: a field's name clashes with quick_init's")
    namespace: dict[str, Any] = {"_quick_not_given": _NOT_GIVEN}
    params, body = [], []
    for f in fields:
        name = f.name
        if f.default is not dataclasses.MISSING:
            namespace[f"_quick_default_{name}"] = f.default
            params.append(f"{name}=_quick_default_{name}")
            body.append(f"    _quick_d[{name!r}] = {name}")
        elif f.default_factory is not dataclasses.MISSING:
            namespace[f"_quick_factory_{name}"] = f.default_factory
            params.append(f"{name}=_quick_not_given")
            body.append(
                f"    _quick_d[{name!r}] = "
                f"_quick_factory_{name}() if {name} is _quick_not_given else {name}"
            )
        else:
            params.append(name)
            body.append(f"    _quick_d[{name!r}] = {name}")
    source = f"def __init__(self, {', '.join(params)}):\n    _quick_d = self.__dict__\n"
    exec(source + "\n".join(body), namespace)  # names from the class's own fields only
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    init.__doc__ = cls.__init__.__doc__
    init.__annotations__ = dict(cls.__init__.__annotations__)
    cls.__init__ = init  # type: ignore[method-assign]
    return cls
