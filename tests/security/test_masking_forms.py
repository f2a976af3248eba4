"""The masker against the forms a step prints a secret in, computed here independently
(json, repr, urllib, base64 and textwrap, as a program would print them), with values
holding every character that changes under some encoding: ``" \\ / + & % =``, ``{{ }}``,
spaces, non-ASCII. Pure: the fast tier. The same values through every real sink:
tests/security/test_masking_sinks.py."""

from __future__ import annotations

import base64
import json
import random
import re
import string
import textwrap
import urllib.parse
from collections.abc import Callable

import pytest

from opsconductor.masking import MASK, Masker
from opsconductor.output import MARGIN, Capped, render
from opsconductor.plan import SecretRef, SecretText, fill_secrets
from opsconductor.templating import render as render_template

NASTY = 'p4"ss\\wo/rd+&%=x{{ 6*7 }}Q'
VALUES = [
    NASTY,
    'api"key/+&%=={{ asset.hostname }}',
    "s p a c e s & amp=%41%2F",
    "ünïcødé-Päss/+=€",
    "plainAlnumSecret0123456789",
]


def _lower_hex(quoted: str) -> str:
    return re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), quoted)


#: (name, how a program prints the value)
FORMS: list[tuple[str, Callable[[str], str]]] = [
    ("as is", lambda v: v),
    ("json", lambda v: json.dumps(v)),
    ("json, unicode kept", lambda v: json.dumps(v, ensure_ascii=False)),
    ("json in json", lambda v: json.dumps(json.dumps({"token": v}))),
    ("json with escaped slashes", lambda v: json.dumps(v).replace("/", "\\/")),
    ("repr", repr),
    ("repr in an error", lambda v: f"$.seen.X-Token is {v!r}, expected 'x'"),
    ("repr of a dict", lambda v: repr({"X-Token": v})),
    ("bytes repr", lambda v: repr(v.encode())),
    ("ascii()", ascii),
    ("quote", lambda v: urllib.parse.quote(v)),
    ("quote, lower-case hex", lambda v: _lower_hex(urllib.parse.quote(v))),
    ("quote safe=''", lambda v: urllib.parse.quote(v, safe="")),
    ("quote_plus", lambda v: urllib.parse.quote_plus(v)),
    ("urlencode", lambda v: urllib.parse.urlencode({"password_x": v, "a": 1})),
    ("encodeURIComponent", lambda v: urllib.parse.quote(v, safe="!'()*~")),
    ("base64", lambda v: base64.b64encode(v.encode()).decode()),
    ("base64 unpadded", lambda v: base64.b64encode(v.encode()).decode().rstrip("=")),
    ("base64 url-safe", lambda v: base64.urlsafe_b64encode(v.encode()).decode()),
    ("base64 of echo", lambda v: base64.b64encode(v.encode() + b"\n").decode()),
]


@pytest.mark.parametrize("value", VALUES)
@pytest.mark.parametrize(("name", "form"), FORMS, ids=[n for n, _ in FORMS])
def test_each_form_is_masked(value: str, name: str, form: Callable[[str], str]) -> None:
    masker = Masker([value])
    printed = form(value)
    line = f"before {printed} after"
    masked = masker.mask(line)
    assert MASK in masked, (name, line)
    assert masked.startswith("before ") and masked.endswith(" after"), masked
    for piece in _pieces(value):
        assert piece not in masked, (name, piece, masked)


def _pieces(value: str) -> list[str]:
    """Runs of the value that must not survive (the value cut in 3)."""
    third = max(4, len(value) // 3)
    return [value[i : i + third] for i in range(0, len(value) - third + 1, third)]


@pytest.mark.parametrize("value", VALUES)
@pytest.mark.parametrize("prefix_len", [0, 1, 2, 5, 40])
def test_base64_of_a_value_inside_a_larger_blob_at_every_alignment(
    value: str, prefix_len: int
) -> None:
    blob = b"x" * prefix_len + value.encode() + b"\n{more}"
    encoded = base64.b64encode(blob).decode()
    masked = Masker([value]).mask(encoded)
    for a, b in _secret_runs(encoded, prefix_len, len(value.encode()), 0, len(encoded)):
        if b - a >= 8:
            assert encoded[a:b] not in masked, (encoded[a:b], masked)


def _secret_runs(encoded: str, start: int, length: int, lo: int, hi: int) -> list[tuple[int, int]]:
    """Character ranges of ``encoded[lo:hi]`` that depend on the secret's bytes only
    (bytes ``start .. start+length`` of the blob): character i encodes bits 6i .. 6i+5."""
    inside = [start * 8 <= 6 * i and 6 * i + 5 < (start + length) * 8 for i in range(len(encoded))]
    runs, i = [], lo
    while i < hi:
        if inside[i]:
            j = i
            while j < hi and inside[j]:
                j += 1
            runs.append((i, j))
            i = j
        else:
            i += 1
    return runs


@pytest.mark.parametrize("value", VALUES)
@pytest.mark.parametrize("width", [76, 64, 8, 9, 13])
@pytest.mark.parametrize("prefix_len", [0, 1, 2, 7, 100])
def test_wrapped_base64_each_line_chunk_is_masked(value: str, width: int, prefix_len: int) -> None:
    """``base64 -w W`` of a blob holding the value: every full line chunk of the value's
    encoding (8 characters or more) is masked, whatever the width and offset."""
    blob = bytes(32 + i % 90 for i in range(prefix_len)) + value.encode() + b"-trailer\n"
    encoded = base64.b64encode(blob).decode()
    lines = textwrap.wrap(encoded, width)
    masked = Masker([value]).mask("\n".join(lines)).split("\n")
    assert len(masked) == len(lines)
    checked = 0
    for n, (line, out) in enumerate(zip(lines, masked, strict=True)):
        lo = n * width
        for a, b in _secret_runs(encoded, prefix_len, len(value.encode()), lo, lo + len(line)):
            if b - a >= 8:
                checked += 1
                assert encoded[a:b] not in out, (width, prefix_len, encoded[a:b], out)
    assert checked or width < 8 or len(value) < 8


def test_short_chunks_of_an_encoding_do_not_mask_innocent_text() -> None:
    """Only runs of 8 or more characters of an encoding count: words that happen to equal
    a shorter piece of it are left alone, and so are ordinary log lines."""
    value = "Hello"  # base64 "SGVsbG8=": "SGVs" and "bG8" are too short to mask
    masker = Masker([value, *VALUES])
    assert masker.mask("SGVs and bG8 and SGVsb") == "SGVs and bG8 and SGVsb"
    rng = random.Random(11)
    for _ in range(300):
        words = ["".join(rng.choice(string.ascii_letters) for _ in range(8)) for _ in range(20)]
        line = " ".join(words)
        assert masker.mask(line) == line


@pytest.mark.parametrize("ending", ["\n", "\r\n", "\r", "  ", "\t\n"])
def test_a_value_stored_with_surrounding_whitespace_is_masked_without_it(ending: str) -> None:
    stored = "  " + NASTY + ending if ending == "  " else NASTY + ending
    masker = Masker([stored])
    for printed in (NASTY, json.dumps(NASTY)[1:-1], base64.b64encode(NASTY.encode()).decode()):
        assert masker.mask(f"got {printed}.") == f"got {MASK}."


def test_offsets_stay_right_after_non_ascii_text() -> None:
    masker = Masker([NASTY])
    line = f"€€ ünï {NASTY} çà {json.dumps(NASTY)[1:-1]} 😀 password=hunter22 é"
    assert masker.mask(line) == f"€€ ünï {MASK} çà {MASK} 😀 password={MASK} é"


# --- Truncation seams --------------------------------------------------------------------


def _capped(data: bytes) -> str:
    text = render(data, len(data), "0" * 64)
    assert isinstance(text, Capped) and "…[truncated " in text
    return text


def _tail_start(data: bytes) -> int:
    return len(data) - 3072


@pytest.mark.parametrize("cut_at", range(0, len("password=hunter2xyz") + 1))
def test_a_pair_cut_by_the_tail_cut_is_masked(cut_at: int) -> None:
    """``password=hunter2xyz`` straddling where the kept tail starts: the tail must not
    start with ``ord=hunter2xyz`` (or any piece of the value) unmasked."""
    pair = b"password=hunter2xyz"
    filler = b"a" * 19_999 + b"\n"
    data = filler + pair + b" " + b"b" * (3072 - len(pair) - 1 + cut_at)
    text = _capped(data)
    kept = text.split("bytes]…\n", 1)[1]
    assert kept.endswith("b" * 100)
    masked = Masker().mask_output(text)
    tail = masked.split("bytes]…\n", 1)[1]
    for k in range(4, len("hunter2xyz") + 1):
        assert "hunter2xyz"[-k:] not in tail, (cut_at, tail[:40])


@pytest.mark.parametrize("cut_at", [1, 5, 12, len(NASTY) - 4])
def test_a_secret_cut_by_either_cut_is_masked(cut_at: int) -> None:
    secret = NASTY.encode()
    head = b"h" * (6144 - cut_at) + secret + b" " * 5000
    tail_part = b" " * 5000 + secret + b"t" * (3072 - len(secret) + cut_at)
    data = head + b"m" * 20_000 + tail_part
    text = _capped(data)
    masked = Masker([NASTY]).mask_output(text)
    assert masked.count(MASK) == 2, masked[6000:6200]
    for piece in (NASTY[:4], NASTY[-4:], NASTY[:cut_at], NASTY[cut_at:]):
        if len(piece) >= 4:
            assert piece not in masked


@pytest.mark.parametrize("lines", [80, 200])
def test_a_private_key_cut_by_the_tail_cut_is_masked(lines: int) -> None:
    """The kept tail starts inside a key block: its BEGIN line is in the margin (80 lines)
    or dropped with the middle (200 lines); either way no line of the key is kept."""
    row = "MIIEvgIBADANBgkqhkiG9w0BAQEFAASCBKgwggSkAgEAAoIBAQC"
    body = "\n".join(f"{row}{i:03d}" for i in range(lines))
    key = f"-----BEGIN PRIVATE KEY-----\n{body}\n-----END PRIVATE KEY-----\n"
    data = b"x" * 20_000 + key.encode() + b"y" * 1000
    assert len(key) + 1000 > 3072 and (len(key) + 1000 > 3072 + MARGIN) == (lines == 200)
    masked = Masker().mask_output(_capped(data))
    assert row not in masked
    assert masked.endswith("\n" + "y" * 1000)


def test_text_that_lost_its_margins_is_still_masked_at_the_seams() -> None:
    secret = "Cut-In-Two-Secret-Value-99"
    data = b"a" * 6_130 + secret.encode() + b"b" * 8_000 + secret.encode() + b"c" * 3_060
    plain = str(_capped(data)) + ""  # a plain str: no margins
    masked = Masker([secret]).mask_output(plain)
    assert secret[:10] not in masked and secret[-10:] not in masked


# --- Templates ---------------------------------------------------------------------------


def test_a_secret_value_is_never_rendered_as_a_template() -> None:
    step = {"headers": {"X-Token": SecretRef(secret="kv/t")}, "url": "{{ 6*7 }}"}
    filled = fill_secrets(step, {"kv/t": "t{{ 6*7 }}{% for x in 'ab' %}{{ x }}{% endfor %}"})
    header = filled["headers"]["X-Token"]
    assert isinstance(header, SecretText)
    assert render_template(header, {}, "h") == "t{{ 6*7 }}{% for x in 'ab' %}{{ x }}{% endfor %}"
    assert render_template(filled["url"], {}, "u") == "42"  # the plan's own templates run
