"""Bounded output capture."""

from __future__ import annotations

from opsconductor.output import LIMIT, OutputBuffer, cap_text


def _feed(data: bytes, chunk: int = 4096) -> OutputBuffer:
    buf = OutputBuffer()
    for i in range(0, len(data), chunk):
        buf.feed(data[i : i + chunk])
    return buf


def test_small_output_is_kept_whole() -> None:
    assert _feed(b"hello\nworld\n").render() == "hello\nworld\n"


def test_exactly_at_the_limit_is_not_truncated() -> None:
    text = _feed(b"x" * LIMIT).render()
    assert text == "x" * LIMIT


def test_big_output_keeps_head_and_tail_under_the_cap() -> None:
    data = b"".join(f"line {i}\n".encode() for i in range(100_000))
    text = _feed(data, chunk=1000).render()
    assert len(text.encode()) <= LIMIT
    assert text.startswith("line 0\nline 1\n")
    assert text.endswith("line 99999\n")
    dropped = int(text.split("…[truncated ")[1].split(" bytes]")[0])
    assert dropped == len(data) - 6144 - 3072


def test_multibyte_text_is_not_mistaken_for_binary() -> None:
    data = "é".encode() * 20_000  # the head/tail cut may split a character
    text = _feed(data, chunk=999).render()
    assert not text.startswith("[binary") and "é" in text
    assert len(text.encode()) <= LIMIT


def test_binary_becomes_a_marker() -> None:
    text = _feed(bytes(range(256)) * 10).render()
    assert text.startswith("[binary output: 2560 bytes, sha256 ")


def test_cap_text_bounds_long_messages() -> None:
    assert cap_text("short") == "short"
    assert len(cap_text("z" * 50_000).encode()) <= LIMIT
