"""What a webhook delivery is refused for before its hook is read (``hooks.precheck``), and
in which order: the cheapest and least telling check first, the signature's worth never
(that needs the secret). The order is the answer a sender gets, so it is pinned here: a
stale request with a wrong signature is told "stale timestamp", and a malformed delivery id
is refused (400) whatever the signature, as neither needs the secret to judge."""

from __future__ import annotations

import pytest

from opsconductor import hooks
from opsconductor.errors import BadInput, Unauthenticated

pytestmark = pytest.mark.unit

NOW = 1_800_000_000.0
WINDOW = 300.0
GOOD = "sha256=" + "ab" * 32  # well-formed; whether it is right is not precheck's question


def check(
    timestamp: str | None = str(int(NOW)),
    signature: str | None = GOOD,
    size: int = 10,
    delivery: str | None = "d-1",
) -> str:
    return hooks.precheck(timestamp, signature, size, delivery, now=NOW, window_s=WINDOW)


def test_a_well_formed_fresh_request_passes_with_its_digest_lowercased() -> None:
    assert check(signature="sha256=" + "AB" * 32) == "ab" * 32
    assert check(delivery=None) == "ab" * 32


def test_a_stale_request_is_told_stale_whatever_its_signature() -> None:
    old = str(int(NOW - WINDOW - 1))
    # A signature that could never verify changes nothing: staleness is judged first.
    with pytest.raises(Unauthenticated, match="stale timestamp"):
        check(timestamp=old, signature="sha256=" + "00" * 32)
    with pytest.raises(Unauthenticated, match="stale timestamp"):
        check(timestamp=str(int(NOW + WINDOW + 1)))
    # On the window's edge it is still fresh.
    assert check(timestamp=str(int(NOW - WINDOW)))


def test_a_malformed_delivery_id_is_refused_before_any_signature_check() -> None:
    for bad in ("a b", "", "x" * 201, "tab\there", "é"):
        with pytest.raises(BadInput, match=hooks.DELIVERY_HEADER):
            check(delivery=bad)


def test_the_order_size_then_headers_then_form_then_window_then_delivery() -> None:
    with pytest.raises(BadInput, match="bytes"):  # size first, even with nothing else right
        check(timestamp=None, signature=None, size=hooks.MAX_BODY + 1, delivery="a b")
    assert check(size=hooks.MAX_BODY)
    with pytest.raises(Unauthenticated, match="missing"):
        check(signature=None, timestamp="soon", delivery="a b")
    with pytest.raises(Unauthenticated, match="expected sha256="):
        check(signature="md5=abc", timestamp="soon")
    with pytest.raises(Unauthenticated, match="expected unix seconds"):
        check(timestamp="soon", delivery="a b")
    with pytest.raises(Unauthenticated, match="stale"):
        check(timestamp="1", delivery="a b")
