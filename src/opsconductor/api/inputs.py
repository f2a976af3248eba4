"""Text that PostgreSQL cannot store is refused at the door, with the path of the field.

PostgreSQL text and jsonb cannot hold NUL characters, and lone UTF-16 surrogates (valid in
JSON escapes, invalid in UTF-8) cannot be encoded at all; without this check such input
would reach the driver and come back as a database error instead of a 4xx naming the field.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

from opsconductor.errors import BadInput


def _bad(text: str) -> bool:
    if "\x00" in text:
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def first_bad_text(value: Any, path: str = "") -> str | None:
    """Path of the first string (key or value) PostgreSQL could not store, or None."""
    if isinstance(value, str):
        return path or "value" if _bad(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            here = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and _bad(key):
                return f"{path or 'body'} (a key)"
            found = first_bad_text(item, here)
            if found:
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = first_bad_text(item, f"{path}[{index}]")
            if found:
                return found
    return None


def check_text(value: Any, where: str = "") -> None:
    found = first_bad_text(value, where)
    if found is not None:
        raise BadInput(f"{found}: text must not contain NUL characters or invalid Unicode")


class CleanInput(BaseModel):
    """Base of request bodies: unknown fields and unstorable text are refused."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    @model_validator(mode="before")
    @classmethod
    def _storable(cls, data: Any) -> Any:
        found = first_bad_text(data)
        if found is not None:
            raise ValueError(f"{found}: text must not contain NUL characters or invalid Unicode")
        return data
