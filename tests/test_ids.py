"""ids: the same kind of ids as ``uuid.uuid4()``, drawn many at a time."""

from __future__ import annotations

import uuid

from opsconductor import ids


def test_the_ids_are_random_version_4_uuids() -> None:
    many = ids.uuid4s(1000)
    hexes = ids.uuid4_hexes(1000)
    assert len(set(many)) == 1000 and len(set(hexes)) == 1000
    for value in many:
        assert value.version == 4 and value.variant == uuid.RFC_4122
        assert uuid.UUID(str(value)) == value
    for text in hexes:
        assert len(text) == 32 and uuid.UUID(text).version == 4
        assert uuid.UUID(text).hex == text
    assert ids.uuid4s(0) == [] and ids.uuid4_hexes(0) == []
