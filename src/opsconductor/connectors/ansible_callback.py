"""The stdout callback plugin ``ansible-playbook`` runs with for an ``ansible`` step.

Not imported by OpsConductor: its bytes are handed into the sandbox
(``connectors/ansible_run.py``) and loaded there by Ansible as ``opsc_events``. Every line it
prints is one JSON object with an ``opsc`` key (``task``, ``ok``, ``changed``, ``failed``,
``unreachable``, ``skipped``, ``stats``), so the worker can tell each host's results apart
(``ansible_events.py``) and stream them as that host's lines, while anything else Ansible
prints (warnings, errors) stays plain text.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
    name: opsc_events
    type: stdout
    short_description: one JSON object per line, per host and task, for OpsConductor
    description: Prints task results as JSON lines for OpsConductor's ansible step.
"""

#: Longest message kept per result: the step's own output is capped again by the worker.
_MAX = 4000
#: The worker reads lines of at most 4096 characters (output.MAX_LINE): a longer one would
#: be cut, no longer JSON, and its result lost. Lines are shortened below that.
_LINE = 3500


def _text(value: Any, *, tail: bool = False) -> str:
    """A message from its start, an output by its end (where errors are)."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[-_MAX:] if tail else text[:_MAX]


class CallbackModule(CallbackBase):  # type: ignore[misc]
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "stdout"
    CALLBACK_NAME = "opsc_events"

    def _emit(self, kind: str, **fields: Any) -> None:
        line = json.dumps({"opsc": kind, **fields}, default=str)
        for key, keep in (("stdout", 300), ("stderr", 300), ("msg", 600), ("task", 200)):
            if len(line) <= _LINE:
                break
            if isinstance(fields.get(key), str):  # the ends of outputs, the start of a message
                value = fields[key]
                fields[key] = value[:keep] if key in ("msg", "task") else value[-keep:]
                line = json.dumps({"opsc": kind, **fields}, default=str)
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    def _result(self, kind: str, result: Any, **extra: Any) -> None:
        res = result._result
        fields: dict[str, Any] = {
            "host": result._host.get_name(),
            "task": result._task.get_name(),
            "changed": bool(res.get("changed")),
        }
        for key in ("msg", "stdout", "stderr", "rc"):
            if res.get(key) not in (None, ""):
                fields[key] = res[key] if key == "rc" else _text(res[key], tail=key != "msg")
        if "results" in res and "msg" not in fields:  # a loop: say which items failed
            bad = [r.get("msg") for r in res["results"] if isinstance(r, dict) and r.get("failed")]
            if bad:
                fields["msg"] = _text("; ".join(str(m) for m in bad if m))
        self._emit(kind, **fields, **extra)

    def v2_playbook_on_play_start(self, play: Any) -> None:
        self._emit("play", name=play.get_name())

    def v2_playbook_on_task_start(self, task: Any, is_conditional: Any) -> None:
        self._emit("task", name=task.get_name())

    def v2_playbook_on_handler_task_start(self, task: Any) -> None:
        self._emit("task", name=task.get_name(), handler=True)

    def v2_runner_on_ok(self, result: Any) -> None:
        self._result("changed" if result._result.get("changed") else "ok", result)

    def v2_runner_on_failed(self, result: Any, ignore_errors: bool = False) -> None:
        self._result("failed", result, ignored=bool(ignore_errors))

    def v2_runner_on_unreachable(self, result: Any) -> None:
        self._result("unreachable", result)

    def v2_runner_on_skipped(self, result: Any) -> None:
        self._result("skipped", result)

    def v2_playbook_on_stats(self, stats: Any) -> None:
        for host in sorted(stats.processed):  # a line per host: many hosts, short lines
            self._emit("stats", host=host, counts=stats.summarize(host))
        self._emit("recap")
