"""Bounded capture of process output. Pure.

A step may print gigabytes; we keep only the head and the tail in memory, count the rest,
and render at most ``LIMIT`` bytes of UTF-8 with a marker saying how much was dropped.
"""

from __future__ import annotations

import hashlib

LIMIT = 10_240
_HEAD = 6_144
_TAIL = 3_072


class OutputBuffer:
    def __init__(self) -> None:
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0
        self._digest = hashlib.sha256()

    def feed(self, chunk: bytes) -> None:
        self.total += len(chunk)
        self._digest.update(chunk)
        room = _HEAD - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if chunk:
            self.tail += chunk
            del self.tail[: max(0, len(self.tail) - LIMIT)]

    @property
    def data(self) -> bytes:
        """Everything kept, for checks that need the text (only complete below the cap)."""
        return bytes(self.head + self.tail)

    def render(self) -> str:
        return render(self.data, self.total, self._digest.hexdigest())


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
    if _is_binary(data[:_HEAD]):
        return f"[binary output: {total} bytes, sha256 {sha256}]"
    if total <= LIMIT:
        return data.decode("utf-8", errors="replace")
    dropped = total - _HEAD - _TAIL
    head = data[:_HEAD].decode("utf-8", errors="ignore")
    tail = data[-_TAIL:].decode("utf-8", errors="ignore")
    return f"{head}\n…[truncated {dropped} bytes]…\n{tail}"


def cap_text(text: str) -> str:
    """Cap an already-decoded string (error messages, validation reports)."""
    raw = text.encode()
    return render(raw, len(raw), hashlib.sha256(raw).hexdigest()) if len(raw) > LIMIT else text
