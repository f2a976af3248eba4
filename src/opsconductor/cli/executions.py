"""Commands on executions, gathered for ``cli/__init__``: running plans (``running``),
reading executions (``watching``), deciding on them and the dead-letter queue
(``deciding``). Each works on the database as the local administrator, or through the REST
API after ``opsc login``."""

from __future__ import annotations

import typer

from opsconductor.cli import deciding, rerunning, running, watching
from opsconductor.cli.deciding import dlq_app

app = typer.Typer()
for commands in (running.app, rerunning.app, watching.app, deciding.app):
    app.registered_commands.extend(commands.registered_commands)

__all__ = ["app", "dlq_app"]
