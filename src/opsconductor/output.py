"""Bounded capture of process output. Pure.

A step may print gigabytes; we keep only the head and the tail in memory, count the rest,
and render at most ``LIMIT`` bytes of UTF-8 with a marker saying how much was dropped.
The rendering also carries ``MARGIN`` bytes beyond each cut (``Capped``): masking runs at
the sink, after the cut, and needs to see what a secret cut in two looked like whole.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

LIMIT = 10_240
_HEAD = 6_144
_TAIL = 3_072
#: What is kept beyond each cut for the masker only (never stored): a ``password=value``
#: pair, a secret's encoding or a private key block straddling a cut is masked whole if it
#: spans less than this.
MARGIN = 4_096

#: How the truncation marker starts: ``\n…[truncated 123 bytes]…\n``.
MARKER_START = "\n…[truncated "


class Capped(str):
    """Rendered output (a plain string: head, marker, tail) that also knows the text
    around its cuts: ``pieces`` = (head and what followed it, how many characters of that
    are the head, tail and what preceded it, how many characters of that are the tail).

    Only a masker reads ``pieces`` (``Masker.mask_output``); any string operation turns a
    ``Capped`` into a plain ``str`` and the margins are gone.
    """

    pieces: tuple[str, int, str, int] | None = None
    marker: str = ""

    @classmethod
    def cut(cls, head: str, head_keep: int, marker: str, tail: str, tail_keep: int) -> Capped:
        text = cls(head[:head_keep] + marker + tail[len(tail) - tail_keep :])
        text.pieces = (head, head_keep, tail, tail_keep)
        text.marker = marker
        return text


#: Called with each whole line of a running step's output (without its newline).
LineSink = Callable[[str], None]
#: A longer line is shown cut, as a ``Capped`` holding ``MARGIN`` more for the masker.
MAX_LINE = 4_096
#: Shown where a long line is cut, in the live view.
LINE_CUT = "…[line cut]"


class LineSplitter:
    """Whole lines of a byte stream as they complete, decoded, for live output: a piece
    of a line is never passed on, so the masker sees every secret printed on one line
    whole, however the bytes were chunked (``engine/live.py``). A line longer than
    ``MAX_LINE`` is passed on once, cut, as a ``Capped`` (with ``MARGIN`` more text for the
    masker, so a secret across the cut is masked whole), and the rest of it is dropped."""

    def __init__(self, sink: LineSink) -> None:
        self.sink = sink
        self._pending = bytearray()
        self._dropping = False

    def feed(self, chunk: bytes) -> None:
        self._pending += chunk
        while True:
            end = self._pending.find(b"\n")
            if end < 0:
                if len(self._pending) >= MAX_LINE + MARGIN:
                    if not self._dropping:
                        self._cut(bytes(self._pending))
                    self._dropping = True
                    self._pending.clear()
                return
            line = bytes(self._pending[:end])
            del self._pending[: end + 1]
            if self._dropping:
                self._dropping = False
            elif len(line) > MAX_LINE:
                self._cut(line)
            else:
                self.sink(_text(line))

    def close(self) -> None:
        """The stream ended: pass on its unterminated last line."""
        if self._pending:
            line, self._pending = bytes(self._pending), bytearray()
            if self._dropping:
                return
            if len(line) > MAX_LINE:
                self._cut(line)
            else:
                self.sink(_text(line))

    def _cut(self, line: bytes) -> None:
        text = _text(line[: MAX_LINE + MARGIN])
        keep = len(line[:MAX_LINE].decode("utf-8", errors="ignore"))
        self.sink(Capped.cut(text, keep, LINE_CUT, "", 0))


def _text(line: bytes) -> str:
    return line.removesuffix(b"\r").decode("utf-8", errors="replace")


class OutputBuffer:
    def __init__(self, lines: LineSink | None = None) -> None:
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0
        self._digest = hashlib.sha256()
        #: whole lines, as they come, for a live view (None: nobody watches)
        self.lines = LineSplitter(lines) if lines is not None else None

    def close(self) -> None:
        """The stream ended (or was cut off): the live view gets its last line."""
        if self.lines is not None:
            self.lines.close()

    def feed(self, chunk: bytes) -> None:
        if self.lines is not None:
            self.lines.feed(chunk)
        self.total += len(chunk)
        self._digest.update(chunk)
        room = _HEAD + MARGIN - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if chunk:
            self.tail += chunk
            del self.tail[: max(0, len(self.tail) - _TAIL - MARGIN)]

    @property
    def data(self) -> bytes:
        """Everything kept, for checks that need the text (only complete below the cap)."""
        return bytes(self.head + self.tail)

    def render(self) -> str:
        sha256 = self._digest.hexdigest()
        if self.total == len(self.head) + len(self.tail):  # nothing dropped: contiguous
            return render(self.data, self.total, sha256)
        return _render_cut(bytes(self.head), bytes(self.tail), self.total, sha256)


#: Called with a stream's name (``stdout``, ``stderr``) and one whole line of it.
OutputSink = Callable[[str, str], None]


def buffers(sink: OutputSink | None) -> tuple[OutputBuffer, OutputBuffer]:
    """The stdout and stderr buffers of one process, passing lines on to ``sink`` if given."""
    if sink is None:
        return OutputBuffer(), OutputBuffer()
    return (
        OutputBuffer(lambda line: sink("stdout", line)),
        OutputBuffer(lambda line: sink("stderr", line)),
    )


def _is_binary(data: bytes) -> bool:
    if b"\x00" in data:
        return True
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut at the head/tail seam is not binary.
        return exc.start < len(data) - 4
    return False


def render(data: bytes, total: int, sha256: str) -> str:
    """``data`` is everything printed when ``total == len(data)``; a ``Capped`` if cut."""
    if _is_binary(data[:_HEAD]):
        return f"[binary output: {total} bytes, sha256 {sha256}]"
    if total <= LIMIT:
        return data.decode("utf-8", errors="replace")
    return _render_cut(data[: _HEAD + MARGIN], data[-(_TAIL + MARGIN) :], total, sha256)


def _render_cut(head: bytes, tail: bytes, total: int, sha256: str) -> str:
    if _is_binary(head[:_HEAD]):
        return f"[binary output: {total} bytes, sha256 {sha256}]"
    dropped = total - _HEAD - _TAIL
    # A character cut at the edges is dropped (errors="ignore"); the kept part's length in
    # characters is that of its own decoding, a prefix (suffix) of the whole piece's.
    head_text = head.decode("utf-8", errors="ignore")
    tail_text = tail.decode("utf-8", errors="ignore")
    head_keep = len(head[:_HEAD].decode("utf-8", errors="ignore"))
    tail_keep = len(tail[-_TAIL:].decode("utf-8", errors="ignore"))
    marker = f"{MARKER_START}{dropped} bytes]…\n"
    return Capped.cut(head_text, head_keep, marker, tail_text, tail_keep)


def cap_text(text: str) -> str:
    """Cap an already-decoded string (error messages, validation reports)."""
    raw = text.encode()
    return render(raw, len(raw), hashlib.sha256(raw).hexdigest()) if len(raw) > LIMIT else text
