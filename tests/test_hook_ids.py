"""A hook id is typed on a command line (`opsc hooks deliveries JOB ID`): it never begins
with "-" (which the shell parser reads as an option; CI once drew such an id) and is long
enough not to be guessed."""

from __future__ import annotations

import pytest

from opsconductor.services.hooks import new_hook_id

pytestmark = pytest.mark.unit


def test_hook_ids_are_letters_and_digits_and_distinct() -> None:
    drawn = [new_hook_id() for _ in range(5000)]
    assert len(set(drawn)) == len(drawn)
    for hook_id in drawn:
        assert len(hook_id) == 24 and hook_id.isascii() and hook_id.isalnum(), hook_id
