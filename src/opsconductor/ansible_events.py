"""What one ``ansible-playbook`` run did on each host, from the JSON lines of our callback
plugin (``connectors/ansible_callback.py``). Pure.

Each result line becomes a readable line of its host's output (``changed: [web1] write
motd``); play and task headers, and whatever Ansible prints as plain text (warnings,
errors), belong to every host. At the end each host's outcome follows the play recap:
failed or unreachable tasks -> ``failed``, with the first failing task's name and message
as the error; ok or changed -> ``completed``; a host no task ran on -> ``skipped``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

#: ansible-playbook's exit codes for "ran, some hosts failed / unreachable"
_RAN = {0, 2, 4}
_TAIL_LINES = 5


@dataclass(frozen=True)
class HostOutcome:
    #: completed | failed | skipped (StepStatus values)
    status: str
    output: str
    error: str | None = None


@dataclass
class _Host:
    lines: list[str] = field(default_factory=list)
    failure: str | None = None


class Events:
    """Fed every line the controller prints; ``feed`` says which host(s) a line is for."""

    def __init__(self, hosts: Iterable[str]) -> None:
        self._hosts = {name: _Host() for name in hosts}
        self._shared: list[str] = []
        self._stats: dict[str, dict[str, int]] | None = None

    def feed(self, stream: str, text: str) -> tuple[str | None, str] | None:
        """``(host or None for every host, readable line)``, or None to show nothing."""
        event = _parse(text) if stream == "stdout" else None
        if event is None:
            self._note_shared(text)
            return None, text
        kind = event.get("opsc")
        if kind in ("stats", "recap"):  # the recap: a line per host, then its end
            self._stats = {} if self._stats is None else self._stats
            counts = event.get("counts")
            if kind == "stats" and isinstance(counts, dict):
                self._stats[str(event.get("host"))] = counts
            return None
        if kind in ("play", "task"):
            label = (
                "PLAY"
                if kind == "play"
                else ("RUNNING HANDLER" if event.get("handler") else "TASK")
            )
            line = f"{label} [{event.get('name', '')}]"
            self._note_shared(line)
            return None, line
        host = str(event.get("host", ""))
        if host not in self._hosts:
            return None  # not one of ours (a delegate's name): nothing to attribute
        line = _describe(str(kind), event)
        state = self._hosts[host]
        state.lines.append(line)
        failed = kind == "unreachable" or (kind == "failed" and not event.get("ignored"))
        if failed and state.failure is None:
            state.failure = _failure(str(kind), event)
        return host, line

    def _note_shared(self, line: str) -> None:
        self._shared.append(line)
        for state in self._hosts.values():
            state.lines.append(line)

    def text(self, host: str) -> str:
        """What the host's output shows so far."""
        return _text(self._hosts[host].lines)

    def outcome(self, host: str, exit_code: int | None) -> HostOutcome:
        """How the run ended on ``host``, once the process ended with ``exit_code``."""
        state = self._hosts[host]
        if self._stats is None or exit_code not in _RAN:
            tail = "; ".join(line for line in self._shared[-_TAIL_LINES:] if line.strip())
            why = state.failure or (
                f"ansible-playbook exited with {exit_code} before its recap"
                + (f": {tail}" if tail else "")
            )
            return HostOutcome("failed", _text(state.lines), why)
        counts = self._stats.get(host)
        if counts is None:
            note = "no task ran on this host (does the playbook's hosts: pattern include it?)"
            return HostOutcome("skipped", _text([*state.lines, note]))
        recap = " ".join(f"{k}={counts.get(k, 0)}" for k in ("ok", "changed", "failures"))
        recap += f" unreachable={counts.get('unreachable', 0)}"
        output = _text([*state.lines, f"recap: {recap}"])
        if counts.get("failures") or counts.get("unreachable"):
            return HostOutcome("failed", output, state.failure or f"recap: {recap}")
        return HostOutcome("completed", output)


def _parse(text: str) -> dict[str, Any] | None:
    if not text.startswith('{"opsc"'):
        return None
    try:
        event = json.loads(text)
    except ValueError:
        return None
    return event if isinstance(event, dict) else None


def _describe(kind: str, event: dict[str, Any]) -> str:
    line = f"{kind}: [{event.get('host')}] {event.get('task', '')}"
    if event.get("msg"):  # a failure's reason, a debug task's message
        line += f": {event['msg']}"
    if event.get("ignored"):
        line += " (ignored)"
    for key in ("stdout", "stderr"):
        value = event.get(key)
        if isinstance(value, str) and value:
            line += "\n" + value.rstrip("\n")
    return line


def _failure(kind: str, event: dict[str, Any]) -> str:
    message = event.get("msg") or event.get("stderr") or "no message"
    if kind == "unreachable":
        return f"unreachable: {message}"
    return f"task {event.get('task', '')!r} failed: {message}"


def _text(lines: list[str]) -> str:
    return "\n".join(lines)
