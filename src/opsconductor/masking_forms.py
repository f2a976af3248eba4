"""The forms under which a secret value may be printed, for the masker. Pure.

A step rarely prints a secret as it was stored: it trims it, quotes it in JSON, shows its
Python ``repr``, URL-encodes it or pipes it through ``base64``. Every such form is a literal
the masker looks for. Out of scope (documented): hex, reversed or case-changed values, a
value split across lines by the step itself, and encodings of encodings other than
JSON inside JSON.
"""

from __future__ import annotations

import base64
import json
import re
import urllib.parse

#: Shorter secret values are not masked as literals: masking every "ab" would destroy the
#: output and protects nothing (such a value is guessable anyway).
MIN_SECRET_LEN = 4

#: Encoded forms shorter than this are skipped for the same reason.
MIN_FORM_LEN = 6

#: Wrapped base64 (``base64`` wraps at 76 columns, PEM at 64, ``-w 8`` at 8) shows the
#: encoding of a value in line-sized pieces at offsets that depend on what came before it,
#: so every run of this many characters of the encoding is masked wherever it appears.
#: 8 characters carry 48 bits: specific enough that innocent text never matches by chance,
#: short enough for ``base64 -w 8``. Pieces shorter than this (the ragged ends of a wrapped
#: value, or lines narrower than 8) are not masked.
B64_CHUNK = 8

FOLD_TABLE = bytes.maketrans(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", b"abcdefghijklmnopqrstuvwxyz0000000000"
)

#: Characters JavaScript's ``encodeURIComponent`` leaves alone besides Python's own.
_JS_SAFE = "!'()*"
_PERCENT = re.compile(r"%[0-9A-F]{2}")


def fold_bytes(raw: bytes) -> bytes:
    """What the screening automaton reads: ASCII letters lower-cased, every digit ``0``.

    Byte-wise on UTF-8 (fast in C) and length-preserving, so a match in the folded bytes is
    at the same offsets in the raw bytes, and every substring maps to a substring.
    """
    return raw.translate(FOLD_TABLE)


def fold(text: str) -> str:
    """``fold_bytes`` of a text's UTF-8, as a string (one char per byte)."""
    return fold_bytes(text.encode("utf-8", "surrogatepass")).decode("latin-1")


def _lower_hex(text: str) -> str:
    return _PERCENT.sub(lambda m: m.group(0).lower(), text)


def _url_forms(value: str) -> set[str]:
    quoted = {
        urllib.parse.quote(value),  # keeps "/"
        urllib.parse.quote(value, safe=""),
        urllib.parse.quote(value, safe=_JS_SAFE),  # encodeURIComponent
        urllib.parse.quote_plus(value),
        urllib.parse.quote_plus(value, safe="/"),
    }
    return quoted | {_lower_hex(q) for q in quoted}


def _json_forms(value: str) -> set[str]:
    escaped = {json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]}
    escaped |= {e.replace("/", "\\/") for e in escaped}  # encoders that escape "/" (PHP)
    # JSON inside a JSON string: an API echoing the raw body it got (httpbin's "data")
    escaped |= {json.dumps(e)[1:-1] for e in escaped}
    return escaped


def _repr_forms(value: str) -> set[str]:
    return {repr(value)[1:-1], ascii(value)[1:-1], repr(value.encode())[2:-1]}


def base64_cores(value: str) -> set[str]:
    """The characters of the value's base64 that do not depend on its neighbours, at each
    of the three byte alignments, in the standard and URL-safe alphabets: what any base64
    of a text holding the value shows, wherever the value sits in it."""
    raw = value.encode()
    cores: set[str] = set()
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + raw).decode()
        # Character i encodes bits 6i..6i+5: those before the value's first bit (the
        # padding bytes) or past its last one (whatever follows it) are not the value's.
        start = -(-8 * shift // 6)
        end = (shift + len(raw)) * 8 // 6
        core = encoded[start:end]
        cores.add(core)
        cores.add(core.replace("+", "-").replace("/", "_"))
    return cores


def _variants(value: str) -> set[str]:
    """The value as stored, and trimmed: a value read from a CRLF file or sent with a
    trailing newline is printed without it."""
    stripped = value.strip()
    return {value, stripped} if len(stripped) >= MIN_SECRET_LEN else {value}


def secret_forms(value: str) -> set[str]:
    """Whole literal forms of ``value``: as is, trimmed, JSON-escaped (also twice), Python
    ``repr`` of the str and of its UTF-8 bytes, URL-encoded in the usual variants (upper-
    and lower-case hex) and base64 (standard and URL-safe, padded, and its alignment cores)."""
    if len(value) < MIN_SECRET_LEN:
        return set()
    forms: set[str] = set()
    for variant in _variants(value):
        raw = variant.encode()
        forms |= {variant, base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()}
        forms |= _json_forms(variant) | _repr_forms(variant) | _url_forms(variant)
        forms |= base64_cores(variant)
    return {f for f in forms if len(f) >= MIN_FORM_LEN or f in (value, value.strip())}


def base64_chunks(value: str) -> set[str]:
    """Every ``B64_CHUNK``-character run of the value's base64 cores (see ``B64_CHUNK``)."""
    if len(value) < MIN_SECRET_LEN:
        return set()
    return {
        core[i : i + B64_CHUNK]
        for variant in _variants(value)
        for core in base64_cores(variant)
        for i in range(len(core) - B64_CHUNK + 1)
    }


def literals(value: str) -> set[str]:
    """Everything the masker looks for on behalf of one secret value."""
    return secret_forms(value) | base64_chunks(value)
