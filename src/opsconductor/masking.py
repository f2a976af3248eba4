"""Masking of secrets at every sink. Pure: no I/O.

One ``Masker`` per execution: the execution's resolved secret values in every form a step
may print them in (``masking_forms``: trimmed, JSON, ``repr``, URL-encoded, base64 and its
wrapped chunks), the built-in pattern families and the tenant's own patterns. Masking a
text costs one screening pass in native code when it holds nothing (the common case), and
one masking pass when it might:

1. screening: one Aho-Corasick DFA (``ahocorasick_rs``) over the *folded* UTF-8 (ASCII
   letters lower-cased, digits all turned into ``0``) finds every secret literal and every
   *trigger* (a literal each match of a built-in family contains once folded, e.g.
   ``bearer``, ``://`` or, for card numbers, ``0000 0000 0000 0``); tenant patterns have no
   known literal, so one compiled regex of them screens for them;
2. masking: the literal hits that are exact and the matches of the families the screening
   saw (one combined regex of just those, compiled once per combination, searched only
   near their triggers) become spans; overlapping spans are masked as one, in one pass. The
   key of ``key=value`` pairs stays, card-like numbers that fail the Luhn check stay.

The screening is sound: it never says "clean" for a line the combined regex would change.
Spans are positions in the text, so a masker can also mask a piece of a text as masked in
the whole (``mask_cut``): how capped output is masked across its cuts.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import ahocorasick_rs

from opsconductor import linear_regex
from opsconductor.errors import BadInput
from opsconductor.masking_forms import (
    FOLD_TABLE,
    MIN_SECRET_LEN,
    fold,
    fold_bytes,
    literals,
    secret_forms,
)
from opsconductor.output import MARKER_START, Capped

__all__ = ["BUILTIN", "MASK", "MIN_SECRET_LEN", "Family", "Masker", "fold", "secret_forms"]

MASK = "****"


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
    #: how far before the start of one of its triggers a match may start at most: the
    #: regex is searched from there (see ``Masker._search_near``); -1 if unbounded
    reach: int = 0


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
        reach=len("-----BEGIN") + 30,
    ),
    Family(
        "url_password",
        r"[A-Za-z][A-Za-z0-9+.-]{0,30}://[^\s:/@]{0,256}:(?P<url_pw>[^\s/@]{1,256})@",
        triggers=("://",),
        value_groups=("url_pw",),
        reach=31,
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
        reach=len("private_"),  # every name holds a trigger: "_key" of private_key is last
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
        reach=len("https://"),
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


#: A span of text to replace with ``MASK``: (start, end), end excluded.
Span = tuple[int, int]


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
        # Screening: every folded literal (secret forms, base64 chunks) and family trigger in
        # one automaton; per automaton word, the exact literals folding to it and the
        # families it triggers.
        exact: dict[bytes, set[bytes]] = {}
        for literal in {f for s in self.secrets for f in literals(s)}:
            raw = literal.encode("utf-8", "surrogatepass")
            exact.setdefault(fold_bytes(raw), set()).add(raw)
        triggered: dict[bytes, list[str]] = {}
        for family in families:
            for trigger in family.triggers:
                triggered.setdefault(fold_bytes(trigger.encode()), []).append(family.name)
        words = sorted({*exact, *triggered})
        self._exact: list[frozenset[bytes] | None] = [
            frozenset(exact[w]) if w in exact else None for w in words
        ]
        self._triggers: list[tuple[str, ...]] = [tuple(triggered.get(w, ())) for w in words]
        self._words = words
        self._searcher: Callable[[bytes, bool], list[tuple[int, int, int]]] | None = None
        self._forms = sorted(
            (f for s in self.secrets for f in secret_forms(s)), key=len, reverse=True
        )
        # Tenant patterns have no known literal: they screen and match for themselves, in
        # RE2 (linear time): a tenant's regex must never stall a sink with backtracking.
        self._screen_regex = (
            linear_regex.compiled("|".join(f"(?:{p})" for p in self.patterns.values()))
            if self.patterns
            else None
        )
        #: tenant patterns may start anywhere (-1: search the whole text)
        self._reach = {f.name: f.reach for f in families}
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

    def _find(self, folded: bytes, overlapping: bool) -> list[tuple[int, int, int]]:
        """Every (word, start, end) in the folded text; the automaton is built on first use:
        the engine derives a masker per secret it resolves, and only the last one masks."""
        if self._searcher is None:
            # A DFA: the fastest to search (a clean 200-byte line in well under a
            # microsecond), 5-10 times slower to build than an NFA (10 ms for 20 secrets).
            self._searcher = ahocorasick_rs.BytesAhoCorasick(
                self._words, implementation=ahocorasick_rs.Implementation.DFA
            ).find_matches_as_indexes
        return self._searcher(folded, overlapping)

    def mask(self, text: str) -> str:
        if not text:
            return text
        raw = text.encode("utf-8", "surrogatepass")
        hits = (self._searcher or self._find)(raw.translate(FOLD_TABLE), True)
        if not hits and (self._screen_regex is None or not self._screen_regex.search(text)):
            return text  # the common case: one DFA pass in native code, nothing to do
        return _apply(text, self._spans(text, raw, hits), 0, len(text))

    def _spans(self, text: str, raw: bytes, hits: list[tuple[int, int, int]]) -> list[Span]:
        """Where ``text`` holds something to mask: the screening's literal hits that are
        exact, and the matches of the families (and tenant patterns) it saw."""
        spans: list[Span] = []
        starts: list[int] = []
        names: set[str] = set()
        exact, triggers = self._exact, self._triggers
        for index, start, end in hits:
            literal = exact[index]
            if literal is not None and raw[start:end] in literal:
                spans.append((start, end))
            if triggers[index]:
                names.update(triggers[index])
                starts.append(start)
        ascii_only = len(raw) == len(text)
        if spans and not ascii_only:  # offsets are in UTF-8 bytes: to characters
            spans = [(_chars(raw, s), _chars(raw, e)) for s, e in spans]
        if self._screen_regex is not None:
            spans.extend(m.span() for m in self._screen_regex.finditer(text) if m.end() > m.start())
        if names:
            regex = self._regex(frozenset(names))
            reach = max(self._reach.get(n, -1) for n in names) if ascii_only else -1
            matches = (
                self._search_near(regex, text, sorted(starts), reach)
                if reach >= 0
                else regex.finditer(text)
            )
            for match in matches:
                span = self._match_span(match)
                if span is not None:
                    spans.append(span)
        return spans

    @staticmethod
    def _search_near(
        regex: re.Pattern[str], text: str, starts: list[int], reach: int
    ) -> Iterator[re.Match[str]]:
        """What ``regex.finditer(text)`` yields, searching only near the triggers: every
        match holds a trigger that starts at most ``reach`` characters after the match, so
        no match starts before ``trigger - reach`` of the first trigger not yet passed.
        A built-in regex has no literal prefix for ``re`` to skip ahead with: scanning a whole
        line costs ten times more than this."""
        pos, i, n = 0, 0, len(starts)
        while i < n:
            match = regex.search(text, max(pos, starts[i] - reach))
            if match is None:
                return
            yield match
            pos = match.end() if match.end() > match.start() else match.end() + 1
            while i < n and starts[i] < pos:
                i += 1

    def _all_spans(self, text: str) -> list[Span]:
        raw = text.encode("utf-8", "surrogatepass")
        return self._spans(text, raw, self._find(raw.translate(FOLD_TABLE), True))

    def _regex(self, names: frozenset[str]) -> re.Pattern[str]:
        """The combined regex of these families, compiled once per combination."""
        compiled = self._combined.get(names)
        if compiled is None:
            # Built-ins are ASCII-only ((?a:)), like the folding their screening relies on.
            regexes = {n: f"(?a:{f.regex})" for n, f in self._families.items()}
            alternatives = [f"(?P<{n}>{regex})" for n, regex in regexes.items() if n in names]
            compiled = self._combined[names] = re.compile("|".join(alternatives))
        return compiled

    def _match_span(self, match: re.Match[str]) -> Span | None:
        family = self._families.get(match.lastgroup or "")
        if family is None:  # a tenant pattern: all of it goes
            return match.span()
        if family.check is not None and not family.check(match.group(0)):
            return None
        for group in family.value_groups:
            start, end = match.span(group)
            if start >= 0:
                return start, end
        return match.span()

    # --- Cut text -------------------------------------------------------------------------
    # Capped output keeps a head and a tail of what a step printed. A secret or a
    # ``password=value`` pair that straddles a cut would survive in pieces (``…ord=hunter2``)
    # that no pattern recognises, so the pieces are masked *before* the cut: ``output.Capped``
    # carries some text beyond each cut, the masker finds its spans in all of it, and a span
    # that crosses the cut is masked whole.

    def mask_cut(self, text: str, start: int, end: int) -> str:
        """The masked ``text[start:end]``, as masked in the whole of ``text``."""
        spans = self._all_spans(text)
        if start > 0:
            spans.extend(_orphan_key_end(text))
        return _apply(text, spans, start, end)

    def mask_output(self, text: str) -> str:
        """Mask step output (or any text ``output`` capped): each kept piece is masked
        with what lay beyond its cut (see ``output.Capped``)."""
        if isinstance(text, Capped) and text.pieces is not None:
            head, head_keep, tail, tail_keep = text.pieces
            return (
                self.mask_cut(head, 0, head_keep)
                + text.marker
                + self.mask_cut(tail, len(tail) - tail_keep, len(tail))
            )
        return self.mask_seams(self.mask(text))

    def mask_seams(self, text: str) -> str:
        """For text cut by ``output`` that lost what lay beyond its cuts (a plain ``str``
        now): mask the prefix of a secret form that ends the head and the suffix that
        starts the tail (4 characters or more). Patterns cut in two are not recognised:
        ``mask_output`` of the ``Capped`` text is what sinks use."""
        if MARKER_START not in text:
            return text
        return _SEAM.sub(lambda m: self._trim(m.group(1), m.group(2), m.group(3)), text)

    def _trim(self, head: str, marker: str, tail: str) -> str:
        for form in self._forms:
            for k in range(len(form) - 1, MIN_SECRET_LEN - 1, -1):
                if head.endswith(form[:k]):
                    head = head[:-k] + MASK
                    break
            for k in range(len(form) - 1, MIN_SECRET_LEN - 1, -1):
                if tail.startswith(form[-k:]):
                    tail = MASK + tail[k:]
                    break
        return head + marker + tail

    def mask_data(self, data: Any) -> Any:
        """Mask every string inside JSON-like data (event payloads, API bodies)."""
        if type(data) in _UNMASKED:  # before the isinstance chain (Mapping's is slow)
            return data
        if isinstance(data, str):
            return self.mask(data)
        if type(data) is dict or isinstance(data, Mapping):
            return {k: self._mask_entry(str(k), v) for k, v in data.items()}
        if isinstance(data, list | tuple):
            return [self.mask_data(v) for v in data]
        return data

    def _mask_entry(self, key: str, value: Any) -> Any:
        # A value stored under a telling name is masked whole, whatever it looks like.
        if isinstance(value, str) and value != "" and _SENSITIVE_KEY.search(key):
            return MASK
        return self.mask_data(value)


#: Types that hold no text: nothing in them to mask (exact types: no subclass is here).
_UNMASKED = frozenset({int, float, bool, type(None)})


def _chars(raw: bytes, offset: int) -> int:
    """The character offset of a UTF-8 byte offset (literals start and end on characters)."""
    return len(raw[:offset].decode("utf-8", "surrogatepass"))


def _apply(text: str, spans: list[Span], start: int, end: int) -> str:
    """``text[start:end]`` with every span replaced by ``MASK``; overlapping spans are
    masked as one, and a span that crosses ``start`` or ``end`` is masked whole."""
    pieces: list[str] = []
    pos = start
    run_start, run_end = 0, 0  # the run of overlapping spans being gathered
    for s, e in sorted(spans):
        if s < run_end:
            if e > run_end:
                run_end = e
            continue
        if run_end > pos and run_start < end:  # close the run
            if run_start > pos:
                pieces.append(text[pos:run_start])
            pieces.append(MASK)
            pos = run_end
        if s != e:
            run_start, run_end = s, e
    if run_end > pos and run_start < end:
        if run_start > pos:
            pieces.append(text[pos:run_start])
        pieces.append(MASK)
        pos = run_end
    if pos < end:
        pieces.append(text[pos:end])
    return "".join(pieces)


_KEY_END = re.compile(r"-----END[A-Z ]{0,30}PRIVATE KEY-----")
_KEY_BEGIN = re.compile(r"-----BEGIN[A-Z ]{0,30}PRIVATE KEY-----")


def _orphan_key_end(text: str) -> list[Span]:
    """A private key block whose start was cut off: from the text's start to its end."""
    end = _KEY_END.search(text) if "PRIVATE KEY-----" in text else None
    if end is None or _KEY_BEGIN.search(text, 0, end.start()):
        return []
    return [(0, end.end())]


#: Mapping keys whose values are secrets by name: ``password``, ``db_password``, ``api-key``.
_SENSITIVE_KEY = re.compile(
    r"(?i)(?:^|[_-])(?:password|passwd|passphrase|pwd|secret|token|api[_-]?key|access[_-]?key"
    r"|private[_-]?key|client[_-]?secret|credentials?|authorization)$"
)


def validate_pattern(pattern: str) -> str:
    """A tenant pattern must compile (in RE2: no backreferences or lookaround, and matching
    in linear time) and must not match the empty string."""
    problem = linear_regex.compile_error(f"(?:{pattern})")
    if problem is not None:
        raise BadInput(
            f"pattern {pattern!r}: not a valid regular expression for RE2 (no backreferences "
            f"or lookaround): {problem}"
        )
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
_SEAM = re.compile(r"(\S{0,256})(" + re.escape(MARKER_START) + r"\d+ bytes\]…\n)(\S{0,256})")

#: Built-in patterns only: for sinks that have no execution at hand.
DEFAULT = Masker()


def for_patterns(patterns: Mapping[str, str]) -> Masker:
    """The masker of a tenant's custom patterns, built once per distinct set: building one
    (automaton, regexes) costs far more than a small execution's whole run."""
    return _for_patterns(tuple(sorted(patterns.items())))


@functools.lru_cache(maxsize=256)
def _for_patterns(patterns: tuple[tuple[str, str], ...]) -> Masker:
    return Masker(patterns=dict(patterns))
