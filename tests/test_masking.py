"""The masker: every built-in family hits what it should and leaves near-misses alone;
secret values are masked in their encoded forms; the screening never skips a real hit."""

from __future__ import annotations

import base64
import io
import json
import random
import string
import urllib.parse

import pytest
import structlog

from opsconductor import logs
from opsconductor.errors import BadInput
from opsconductor.masking import (
    BUILTIN,
    MASK,
    Masker,
    fold,
    luhn_ok,
    secret_forms,
    validate_pattern,
)
from opsconductor.masking_forms import literals

M = Masker()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # passwords and friends in key=value, JSON, YAML and headers: the key stays
        ("password=hunter22 user=bob", f"password={MASK} user=bob"),
        ("DB_PASSWORD: s3cr3t!", f"DB_PASSWORD: {MASK}"),
        ('{"api_key": "abc def ghi"}', f'{{"api_key": "{MASK}"}}'),
        ("client_secret='x y z'", f"client_secret='{MASK}'"),
        ("Authorization: Basic dXNlcjpwYXNz", f"Authorization: Basic {MASK}"),
        (
            "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            f"aws_secret_access_key = {MASK}",
        ),
        (
            '"SecretAccessKey": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"',
            f'"SecretAccessKey": "{MASK}"',
        ),
        # URLs with credentials: only the password goes
        (
            "postgres://app:hunter22@db.internal:5432/app",
            f"postgres://app:{MASK}@db.internal:5432/app",
        ),
        (
            "git clone https://bob:tok3n@github.com/x/y",
            f"git clone https://bob:{MASK}@github.com/x/y",
        ),
        # bearer tokens
        ("Authorization: Bearer abcdefghijkl.mnop", f"Authorization: Bearer {MASK}"),
        ("curl -H 'bearer Zm9vYmFyYmF6cXV4'", f"curl -H 'bearer {MASK}'"),
        # AWS access key ids
        ("key AKIAIOSFODNN7EXAMPLE here", f"key {MASK} here"),
        ("ASIAY34FZKBOKMUTVV7A", MASK),
        # private key blocks, also cut short by truncation
        (
            "a\n-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nIBAAK\n-----END RSA PRIVATE KEY-----\nb",
            f"a\n{MASK}\nb",
        ),
        ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNz…[truncated", MASK),
        # JWTs
        (
            "t=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJlX2hlcmU ok",
            f"t={MASK} ok",
        ),
        # GitHub and Slack tokens
        ("ghp_" + "A1b2" * 9, MASK),
        ("github_pat_11ABCDEFG0123456789_abcdefghijklmnop", MASK),
        ("xoxb-123456789012-abcdefABCDEF", MASK),
        ("https://hooks.slack.com/services/T000/B000/XXXXXXXXXXXX", MASK),
        # vendor API keys
        ("sk_live_" + "a1B2c3D4e5F6g7H8", MASK),
        ("AIza" + "SyA-1234567890abcdefghijklmnopqrstu", MASK),
        ("glpat-abcdefghij0123456789", MASK),
        # card numbers passing Luhn, grouped or not
        ("card 4111 1111 1111 1111 charged", f"card {MASK} charged"),
        ("pan=5500-0000-0000-0004;", f"pan={MASK};"),
        ("378282246310005", MASK),
    ],
)
def test_builtin_families_mask_what_they_should(text: str, expected: str) -> None:
    assert M.mask(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "passed=3 failed=0",  # 'pass' inside another word is not a key name
        "token_count is high",  # no separator, no value
        "the bearer of bad news",  # too short to be a token
        "AKIAIOSFODNN7EXAMPL",  # 15 characters after the prefix
        "XAKIAIOSFODNN7EXAMPLE1",  # inside a longer word
        "commit 3f786850e387550fdab836ed7e6dc881de23001b",  # a git SHA is not an AWS key
        "ghp_tooShort",
        "eyJhbGciOiJIUzI1NiJ9 alone",  # a JWT header without payload
        "card 4111 1111 1111 1112 declined",  # fails Luhn
        "at 1764089900123 ms",  # 13-digit millisecond timestamp: issuer digit 1
        "order 2026-11-25 12:00:00 id 42",  # dates and times
        "phone +44 20 7946 0958",  # too few digits
        "https://example.com:8443/path",  # a port is not a password
        "disk-usage-report-for-all-volumes-today",  # 'sk-' inside a word
        "idempotency_key=3f786850e387550f",  # not a secret's name
    ],
)
def test_near_misses_are_left_alone(text: str) -> None:
    assert M.mask(text) == text


def test_luhn() -> None:
    assert luhn_ok("4111111111111111")
    assert luhn_ok("4111-1111-1111-1111")
    assert not luhn_ok("4111111111111112")
    assert not luhn_ok("411111111111")  # 12 digits: too short for a card


def _b64_at_offset(prefix: bytes, value: str) -> str:
    return base64.b64encode(prefix + value.encode()).decode()


def test_secret_values_are_masked_raw_and_encoded() -> None:
    secret = "Sup3r-Secret/Value+42"
    m = Masker([secret])
    encoded = [
        secret,
        base64.b64encode(secret.encode()).decode(),
        base64.urlsafe_b64encode(secret.encode()).decode(),
        urllib.parse.quote(secret, safe=""),
        urllib.parse.quote_plus(secret),
    ]
    for form in encoded:
        out = m.mask(f"before {form} after")
        assert form not in out and out.startswith("before ") and out.endswith(" after")
    # base64 of the value after 1 or 2 other bytes (``echo "x$SECRET" | base64``)
    for prefix in (b"x", b"xy", b"xyz", b"PREFIX=", b"\n"):
        blob = _b64_at_offset(prefix, secret + "\n")
        out = m.mask(blob)
        assert out != blob
        assert base64.b64encode(secret.encode()).decode()[4:-4] not in out


def test_secret_forms_skip_tiny_values() -> None:
    assert secret_forms("abc") == set()
    assert Masker(["abc"]).mask("abc abc") == "abc abc"


def test_with_secrets_extends_and_keeps_patterns() -> None:
    m = Masker(patterns={"ticket": r"TCK-\d{6}"}).with_secrets(["first-secret"])
    m2 = m.with_secrets(["second-secret"])
    assert m2.mask("first-secret second-secret TCK-123456 password=x") == (
        f"{MASK} {MASK} {MASK} password={MASK}"
    )
    assert m.with_secrets(["first-secret"]) is m


def test_tenant_patterns_and_their_validation() -> None:
    m = Masker(patterns={"employee": r"EMP\d{5}", "case-insensitive": r"(?i:project-zeus)"})
    assert m.mask("EMP12345 on Project-Zeus") == f"{MASK} on {MASK}"
    assert m.mask("EMP1234 on project-apollo") == "EMP1234 on project-apollo"
    assert validate_pattern(r"EMP\d{5}") == r"EMP\d{5}"
    for bad in ("(", "a*", "(EMP)\\d"):
        with pytest.raises(BadInput):
            validate_pattern(bad)


def test_mask_data_masks_nested_strings_and_values_of_telling_keys() -> None:
    m = Masker(["the-secret-value"])
    data = {
        "error": "exit 1: the-secret-value",
        "password": "plain",
        "db_password": "also plain",
        "passed": "kept",
        "nested": [{"cmd": "curl -H 'Authorization: Bearer abcdefghijkl'"}],
        "count": 3,
    }
    assert m.mask_data(data) == {
        "error": f"exit 1: {MASK}",
        "password": MASK,
        "db_password": MASK,
        "passed": "kept",
        "nested": [{"cmd": f"curl -H 'Authorization: Bearer {MASK}'"}],
        "count": 3,
    }


def test_screening_never_skips_a_line_the_full_regex_would_change() -> None:
    """Soundness: the screened ``mask`` equals an unscreened pass of every family."""
    rng = random.Random(7)
    secrets = ["".join(rng.choice(string.ascii_letters) for _ in range(16)) for _ in range(5)]
    secrets.append('p4"ss\\wo/rd+&%=x{{ 6*7 }}é')
    m = Masker(secrets)
    samples = [
        "password=x",
        "PassWord: y",
        "AKIAIOSFODNN7EXAMPLE",
        "4111 1111 1111 1111",
        "Bearer abcdefghijkl",
        "https://u:p@h",
        *secrets,
        *(base64.b64encode(s.encode()).decode() for s in secrets),
        *(json.dumps(s) for s in secrets),
        *(urllib.parse.quote(s) for s in secrets),
    ]
    words = ["ok", "value", "=", ":", " ", "2026-11-25", "x" * 5, "ID", "é€"]
    for _ in range(2000):
        parts = [rng.choice(words + samples if rng.random() < 0.2 else words) for _ in range(8)]
        text = "".join(parts)
        assert m.mask(text) == _reference_mask(m, text), text


def _reference_mask(m: Masker, text: str) -> str:
    """Unscreened: every occurrence of every literal, every match of every family."""
    spans = []
    for literal in {f for s in m.secrets for f in literals(s)}:
        at = text.find(literal)
        while at >= 0:
            spans.append((at, at + len(literal)))
            at = text.find(literal, at + 1)
    every = frozenset(f.name for f in BUILTIN)
    for match in m._regex(every).finditer(text):
        span = m._match_span(match)
        if span is not None:
            spans.append(span)
    merged: list[list[int]] = []
    for start, end in sorted(spans):
        if merged and start < merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    out, pos = [], 0
    for start, end in merged:
        out += [text[pos:start], MASK]
        pos = end
    return "".join([*out, text[pos:]])


def test_structlog_processor_masks_every_log_line() -> None:
    sink = io.StringIO()
    logs.configure("INFO")
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=sink))
    cell = logs.MaskerCell(Masker(["log-secret-123"]))
    with logs.masking_with(cell):
        structlog.get_logger("t").info("ran", stdout="value log-secret-123", password="p")
    structlog.get_logger("t").info("outside", url="https://u:pw123@h/x")
    first, second = (json.loads(line) for line in sink.getvalue().splitlines())
    assert first["stdout"] == f"value {MASK}" and first["password"] == MASK
    assert second["url"] == f"https://u:{MASK}@h/x"
    structlog.reset_defaults()


def test_pieces_of_a_secret_cut_by_truncation_are_masked() -> None:
    from opsconductor.output import render

    secret = "Cut-In-Two-Secret-Value-99"
    data = b"a" * 6_130 + secret.encode() + b"b" * 8_000 + secret.encode() + b"c" * 3_060
    text = render(data, len(data), "0" * 64)
    assert "[truncated" in text and secret not in text
    assert secret[:10] in text and secret[-10:] in text  # the cut pieces are there...
    masked = Masker([secret]).mask_seams(Masker([secret]).mask(text))
    assert secret[:10] not in masked and secret[-10:] not in masked  # ...and then are not
    assert masked.count(MASK) == 2


def test_fold_keeps_substrings_substrings() -> None:
    """The screening's soundness rests on this: fold(part) is inside fold(whole)."""
    rng = random.Random(3)
    alphabet = string.ascii_letters + string.digits + " -=:/é€ΣK\u212a"
    for _ in range(500):
        whole = "".join(rng.choice(alphabet) for _ in range(40))
        i, j = sorted(rng.sample(range(41), 2))
        assert fold(whole[i:j]) in fold(whole)
    assert fold("Password 4111") == "password 0000"
