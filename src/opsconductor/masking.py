"""Masking of secrets at every sink. Pure: no I/O.

One ``Masker`` per execution, compiled once: the execution's resolved secret values (also
their base64 and URL-encoded forms), the built-in pattern families and the tenant's own
patterns. Masking a text costs one cheap screening pass in C when it holds nothing (the
common case), and one masking pass when it might:

1. screening: an Aho-Corasick automaton over the *folded* text (ASCII letters lower-cased,
   digits all turned into ``0``) finds every secret form and every *trigger* (a literal each
   match of a built-in family contains once folded, e.g. ``bearer``, ``://`` or, for card
   numbers, ``0000 0000 0000 0``); tenant patterns have no known literal, so one compiled
   regex of them screens for them;
2. masking: the secret forms the screening found are replaced (longest first), then one
   combined regex of just the families it saw (named alternatives, compiled once per
   combination and cached) rewrites the text; a callback keeps the key of ``key=value``
   pairs and drops card-like numbers that fail the Luhn check.

The screening is sound: it never says "clean" for a line the combined regex would change.
"""

from __future__ import annotations

import base64
import functools
import re
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import ahocorasick

from opsconductor.errors import BadInput

MASK = "****"

#: Shorter secret values are not masked as literals: masking every "ab" would destroy the
#: output and protects nothing (such a value is guessable anyway).
MIN_SECRET_LEN = 4

#: Encoded forms shorter than this are skipped for the same reason.
_MIN_FORM_LEN = 6


@dataclass(frozen=True)
class Family:
    """A built-in pattern family: its regex, which groups to mask, how to screen for it."""

    name: str
    regex: str
    #: literals, one of which every match contains once folded (see ``fold``)
    triggers: tuple[str, ...]
    #: named groups holding the sensitive part; none means the whole match
    value_groups: tuple[str, ...] = ()
    #: a match is masked only if this says so (Luhn for card numbers)
    check: Callable[[str], bool] | None = None


def luhn_ok(number: str) -> bool:
    digits = [int(c) for c in number if c.isdigit()]
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


_KEY_NAMES = (
    r"(?:pass(?:word|wd|phrase)?|pwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key"
    r"|client[_-]?secret|credentials?|authorization)"
)
_AWS_PREFIXES = ("AKIA", "ASIA", "AGPA", "AIDA", "AROA", "AIPA", "ANPA", "ANVA", "ABIA", "ACCA")

BUILTIN: tuple[Family, ...] = (
    Family(
        "private_key",
        # A block cut short (truncated output) is masked to the end of the text.
        r"-----BEGIN[A-Z ]{0,30}PRIVATE KEY-----(?s:.*?-----END[A-Z ]{0,30}PRIVATE KEY-----|.*)",
        triggers=("private key-----",),
    ),
    Family(
        "url_password",
        r"[A-Za-z][A-Za-z0-9+.-]{0,30}://[^\s:/@]{0,256}:(?P<url_pw>[^\s/@]{1,256})@",
        triggers=("://",),
        value_groups=("url_pw",),
    ),
    Family(
        "key_value",
        # password=x, "token": "x", api_key: 'x y', Authorization: Basic x, AWS secret keys
        # (aws_secret_access_key=..., "SecretAccessKey": "...") by their names.
        # The name starts a word (or a camelCase part) and may go on after a separator or
        # an upper-case letter: db_password, secretAccessKey, password_1; not "passed".
        r"(?:(?<![A-Za-z])|(?=[A-Z]))(?i:" + _KEY_NAMES + r")"
        r"(?:[_.-][A-Za-z0-9_.-]{0,30}|[A-Z0-9][A-Za-z0-9_]{0,30})?[\"']?[ \t]*[=:][ \t]*"
        r"(?i:(?:basic|bearer|token|digest)[ \t]+)?"
        r"(?:\"(?P<kv_dq>[^\"\n]+)\"|'(?P<kv_sq>[^'\n]+)'|(?P<kv>[^\s\"'&,;]+))",
        triggers=(
            "pass",
            "pwd",
            "secret",
            "token",
            "api_key",
            "api-key",
            "apikey",
            "_key",
            "-key",
            "accesskey",
            "privatekey",
            "credential",
            "authorization",
        ),
        value_groups=("kv_dq", "kv_sq", "kv"),
    ),
    Family(
        "bearer",
        r"(?i:bearer)[ \t]+(?P<bearer_tok>[A-Za-z0-9\-._~+/]{8,}=*)",
        triggers=("bearer",),
        value_groups=("bearer_tok",),
    ),
    Family(
        "jwt",
        r"eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*",
        triggers=("eyj",),
    ),
    Family(
        "aws_access_key",
        r"(?<![A-Z0-9])(?:" + "|".join(_AWS_PREFIXES) + r")[A-Z0-9]{16}(?![A-Z0-9])",
        triggers=tuple(p.lower() for p in _AWS_PREFIXES),
    ),
    Family(
        "github_token",
        r"(?<![A-Za-z0-9])(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})",
        triggers=("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
    ),
    Family(
        "slack_token",
        r"(?<![A-Za-z0-9])(?:xox[abposr]-[A-Za-z0-9-]{10,250}|xapp-\d-[A-Za-z0-9-]{10,250})"
        r"|https://hooks\.slack\.com/services/[A-Za-z0-9_/]{10,250}",
        triggers=("xox", "xapp-", "hooks.slack.com"),
    ),
    Family(
        "api_key",
        # Vendor keys recognisable by their prefix: Stripe, OpenAI/Anthropic, Google, GitLab,
        # npm. Keys without a prefix are caught by name in key_value.
        r"(?<![A-Za-z0-9])(?:[sr]k_(?:live|test)_[A-Za-z0-9]{16,247}|sk-[A-Za-z0-9_-]{20,250}"
        r"|AIza[0-9A-Za-z_-]{35}|glpat-[A-Za-z0-9_-]{20,50}|npm_[A-Za-z0-9]{36})",
        triggers=("sk_live_", "sk_test_", "rk_live_", "rk_test_", "sk-", "aiza", "glpat-", "npm_"),
    ),
    Family(
        "card_number",
        # 13-19 digits, plain or grouped 4-4-4-4(-3) or 4-6-5 (Amex) / 4-6-4 (Diners) by
        # spaces or dashes; issuer digit 2-6 (a millisecond timestamp starts with 1); kept
        # only if the Luhn check passes.
        r"(?<![0-9])[2-6][0-9]{3}(?:[0-9]{9,15}"
        r"| [0-9]{4} [0-9]{4} [0-9]{1,4}(?: [0-9]{1,3})?"
        r"|-[0-9]{4}-[0-9]{4}-[0-9]{1,4}(?:-[0-9]{1,3})?"
        r"| [0-9]{6} [0-9]{4,5}|-[0-9]{6}-[0-9]{4,5})(?![0-9])",
        triggers=(
            "0" * 13,
            "0000 0000 0000 0",
            "0000-0000-0000-0",
            "0000 000000 0000",
            "0000-000000-0000",
        ),
        check=luhn_ok,
    ),
)


_FOLD = bytes.maketrans(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", b"abcdefghijklmnopqrstuvwxyz0000000000"
)


def fold(text: str) -> str:
    """What the screening automaton reads: ASCII letters lower-cased, every digit ``0``.

    Byte-wise on UTF-8 (fast in C), so it maps any substring of ``text`` to a substring of
    ``fold(text)``: a folded literal found in the folded text is how screening stays sound.
    """
    return text.encode("utf-8", "surrogatepass").translate(_FOLD).decode("latin-1")


def secret_forms(value: str) -> set[str]:
    """The value and the encodings under which a command may print it.

    base64 is taken at the three byte alignments, keeping only the characters that do not
    depend on the neighbouring bytes, so ``base64 <<< "prefix$SECRET"`` is caught too.
    """
    if len(value) < MIN_SECRET_LEN:
        return set()
    forms = {value, urllib.parse.quote(value, safe=""), urllib.parse.quote_plus(value)}
    raw = value.encode()
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + raw).decode()
        # Characters 0..ceil(4*shift/3) mix in the padding bytes; the tail mixes in whatever
        # follows unless the value ends on a 3-byte boundary.
        start = -(-4 * shift // 3)
        end = len(encoded) if (shift + len(raw)) % 3 == 0 else 4 * ((shift + len(raw)) // 3)
        core = encoded[start:end]
        forms.add(core)
        forms.add(core.replace("+", "-").replace("/", "_"))
    forms.add(base64.b64encode(raw).decode())
    forms.add(base64.urlsafe_b64encode(raw).decode())
    return {f for f in forms if len(f) >= _MIN_FORM_LEN or f == value}


def _group_name(prefix: str, index: int) -> str:
    return f"{prefix}{index}"


class Masker:
    """Masks secrets and sensitive patterns in text; immutable, safe to share across tasks."""

    def __init__(
        self,
        secrets: Iterable[str] = (),
        patterns: Mapping[str, str] | None = None,
        *,
        families: Sequence[Family] = BUILTIN,
    ) -> None:
        self.secrets: frozenset[str] = frozenset(s for s in secrets if len(s) >= MIN_SECRET_LEN)
        self.patterns: dict[str, str] = dict(patterns or {})
        self._families = {f.name: f for f in families}
        self._custom = {_group_name("custom", i): p for i, p in enumerate(self.patterns.values())}
        # Screening: folded secret forms and family triggers in one automaton.
        self._forms: dict[str, list[str]] = {}
        for form in {f for s in self.secrets for f in secret_forms(s)}:
            self._forms.setdefault(fold(form), []).append(form)
        self._triggered: dict[str, list[str]] = {}
        for family in families:
            for trigger in family.triggers:
                self._triggered.setdefault(fold(trigger), []).append(family.name)
        self._screen = ahocorasick.Automaton()
        for word in {*self._forms, *self._triggered}:
            self._screen.add_word(word, word)
        self._screen.make_automaton()
        # Tenant patterns have no known literal: they screen for themselves.
        self._screen_regex = (
            re.compile("|".join(f"(?:{p})" for p in self.patterns.values()))
            if self.patterns
            else None
        )
        self._unscreened = frozenset(self._custom)
        self._combined: dict[frozenset[str], re.Pattern[str]] = {}

    def with_secrets(self, values: Iterable[str]) -> Masker:
        """A masker that also masks ``values`` (or self, if it already does)."""
        new = {v for v in values if len(v) >= MIN_SECRET_LEN} - self.secrets
        if not new:
            return self
        return Masker(self.secrets | new, self.patterns, families=tuple(self._families.values()))

    def with_patterns(self, patterns: Mapping[str, str]) -> Masker:
        if not patterns:
            return self
        merged = {**self.patterns, **patterns}
        return Masker(self.secrets, merged, families=tuple(self._families.values()))

    def mask(self, text: str) -> str:
        if not text:
            return text
        words = {word for _, word in self._screen.iter(fold(text))}
        unscreened = self._screen_regex is not None and self._screen_regex.search(text)
        if not words and not unscreened:
            return text  # the common case: one C pass, nothing to do
        # Exact secret values first (str.replace, longest form first), then one pass of
        # the combined regex of just the families the screening saw.
        forms = [form for word in words for form in self._forms.get(word, ())]
        for form in sorted(forms, key=len, reverse=True):
            text = text.replace(form, MASK)
        names = {name for word in words for name in self._triggered.get(word, ())}
        if unscreened:
            names |= self._unscreened
        return self._regex(frozenset(names)).sub(self._replace, text) if names else text

    def _regex(self, names: frozenset[str]) -> re.Pattern[str]:
        """The combined regex of these families, compiled once per combination."""
        compiled = self._combined.get(names)
        if compiled is None:
            # Built-ins are ASCII-only ((?a:)), like the folding their screening relies on.
            regexes = {
                **{n: f"(?a:{f.regex})" for n, f in self._families.items()},
                **self._custom,
            }
            alternatives = [f"(?P<{n}>{regex})" for n, regex in regexes.items() if n in names]
            compiled = self._combined[names] = re.compile("|".join(alternatives))
        return compiled

    def mask_seams(self, text: str) -> str:
        """Mask the pieces of secrets cut in two by an output truncation marker.

        Capped output keeps a head and a tail; a value that straddled a cut survives as a
        prefix at the end of the head or a suffix at the start of the tail, which ``mask``
        cannot recognise. Rare and cheap: only texts that carry the marker are looked at.
        """
        if not self._forms or "…[truncated " not in text:
            return text
        return _SEAM.sub(lambda m: self._trim(m.group(1), m.group(2), m.group(3)), text)

    def _trim(self, head: str, marker: str, tail: str) -> str:
        forms = [f for group in self._forms.values() for f in group]
        for form in forms:
            for k in range(len(form) - 1, MIN_SECRET_LEN - 1, -1):
                if head.endswith(form[:k]):
                    head = head[:-k] + MASK
                    break
            for k in range(len(form) - 1, MIN_SECRET_LEN - 1, -1):
                if tail.startswith(form[-k:]):
                    tail = MASK + tail[k:]
                    break
        return head + marker + tail

    def _replace(self, match: re.Match[str]) -> str:
        whole = match.group(0)
        family = self._families.get(match.lastgroup or "")
        if family is None:  # a tenant pattern: all of it goes
            return MASK
        if family.check is not None and not family.check(whole):
            return whole
        for group in family.value_groups:
            start, end = match.span(group)
            if start >= 0:
                offset = match.start()
                return whole[: start - offset] + MASK + whole[end - offset :]
        return MASK

    def mask_data(self, data: Any) -> Any:
        """Mask every string inside JSON-like data (event payloads, API bodies)."""
        if isinstance(data, str):
            return self.mask(data)
        if isinstance(data, Mapping):
            return {k: self._mask_entry(str(k), v) for k, v in data.items()}
        if isinstance(data, list | tuple):
            return [self.mask_data(v) for v in data]
        return data

    def _mask_entry(self, key: str, value: Any) -> Any:
        # A value stored under a telling name is masked whole, whatever it looks like.
        if isinstance(value, str) and value != "" and _SENSITIVE_KEY.search(key):
            return MASK
        return self.mask_data(value)


#: Mapping keys whose values are secrets by name: ``password``, ``db_password``, ``api-key``.
_SENSITIVE_KEY = re.compile(
    r"(?i)(?:^|[_-])(?:password|passwd|passphrase|pwd|secret|token|api[_-]?key|access[_-]?key"
    r"|private[_-]?key|client[_-]?secret|credentials?|authorization)$"
)


def validate_pattern(pattern: str) -> str:
    """A tenant pattern must compile and must not match the empty string."""
    try:
        compiled = re.compile(f"(?:{pattern})")
    except re.error as exc:
        raise BadInput(f"pattern {pattern!r}: not a valid regular expression: {exc}") from None
    if compiled.groups:
        # Named groups would clash with ours in the combined regex; plain ones are harmless
        # but we keep the rule simple: use (?:...) for grouping.
        raise BadInput(f"pattern {pattern!r}: use non-capturing groups (?:...)")
    if compiled.fullmatch(""):
        raise BadInput(f"pattern {pattern!r}: matches the empty string")
    return pattern


#: The marker ``output.render`` puts where it cut, with what is left and right of it.
_SEAM = re.compile(r"(\S{0,256})(\n…\[truncated \d+ bytes\]…\n)(\S{0,256})")

#: Built-in patterns only: for sinks that have no execution at hand.
DEFAULT = Masker()


def for_patterns(patterns: Mapping[str, str]) -> Masker:
    """The masker of a tenant's custom patterns, built once per distinct set: building one
    (automaton, regexes) costs far more than a small execution's whole run."""
    return _for_patterns(tuple(sorted(patterns.items())))


@functools.lru_cache(maxsize=256)
def _for_patterns(patterns: tuple[tuple[str, str], ...]) -> Masker:
    return Masker(patterns=dict(patterns))
