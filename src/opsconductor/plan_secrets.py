"""Secret references in a plan: the ``{secret: "path"}`` form, finding them in a step, and
filling their fetched values in for the connector. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar, cast

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")


class SecretRef(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    """``{secret: "path"}``: a value fetched just in time by the worker, never stored.

    The plan, its snapshot and its hash hold the reference only. Paths: ``kv/web/token``
    (the built-in encrypted store), ``env:NAME`` (the worker's environment),
    ``vault:mount/path#field`` (HashiCorp Vault KV v2; ``#field`` defaults to ``value``).
    """

    secret: str = Field(min_length=1, max_length=500, pattern=r"^\S+$")


#: A field that may hold a literal or a secret reference.
StrOrSecret = str | SecretRef


class SecretText(str):
    """A secret's value standing in a step field once ``fill_secrets`` put it there.

    Marked so that it is never parsed as a template (``templating.render`` returns it as
    is): a value holding ``{{ ... }}`` is data, and rendering it would run it and could print
    what it computes, unmasked."""


#: Field types that never hold a reference (exact types: a subclass is walked as before).
_NO_REFS = frozenset({str, int, float, bool, type(None)})


def secret_refs(value: Any) -> list[SecretRef]:
    """Every secret reference inside a step (or any part of a plan), in field order."""
    if type(value) in _NO_REFS:  # most fields: before the (slow, model) isinstance checks
        return []
    if isinstance(value, SecretRef):
        return [value]
    if isinstance(value, BaseModel):
        return [r for name in _fields(type(value)) for r in secret_refs(getattr(value, name))]
    if isinstance(value, dict):
        return [r for v in value.values() for r in secret_refs(v)]
    if isinstance(value, list | tuple):
        return [r for v in value for r in secret_refs(v)]
    return []


#: Field names by model class: pydantic's ``model_fields`` is a property that costs more
#: than the walk it feeds.
_FIELDS: dict[type[BaseModel], tuple[str, ...]] = {}


def _fields(cls: type[BaseModel]) -> tuple[str, ...]:
    names = _FIELDS.get(cls)
    if names is None:
        names = _FIELDS[cls] = tuple(cls.model_fields)
    return names


def fill_secrets(value: T, values: Mapping[str, str]) -> T:
    """A copy of ``value`` (a step, or part of one) with every secret reference replaced by
    its resolved value from ``values`` (path -> value). Models are copied, not validated
    again: the result exists only in memory, for the connector, while the step runs."""
    if not values:  # nothing resolved: the step holds no reference (a walk per run saved)
        return value
    filled: Any
    if isinstance(value, SecretRef):
        filled = SecretText(values[value.secret])
    elif isinstance(value, BaseModel):
        changes = {
            name: fill_secrets(getattr(value, name), values)
            for name in _fields(type(value))
            if secret_refs(getattr(value, name))
        }
        filled = value.model_copy(update=changes) if changes else value
    elif isinstance(value, dict):
        filled = {k: fill_secrets(v, values) for k, v in value.items()}
    elif isinstance(value, list | tuple):
        filled = type(value)(fill_secrets(v, values) for v in value)
    else:
        filled = value
    return cast(T, filled)
