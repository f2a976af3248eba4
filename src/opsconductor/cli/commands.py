"""Every ``opsc`` command and command group, gathered into one typer app (``cli/__init__``
loads this for all but the commands typed in a hurry)."""

from __future__ import annotations

import typer

from opsconductor.cli import (
    ROOT,
    access,
    executions,
    hooks,
    host,
    inventory,
    jobs,
    schedules,
    secrets,
    sources,
    system,
)
from opsconductor.cli import staging as _staging  # noqa: F401  (opsc tenant stage, canary)
from opsconductor.cli.history import history_app
from opsconductor.cli.notifications import notifications_app

app = typer.Typer(**ROOT)
for commands in (executions.app, access.app, system.app):
    app.registered_commands.extend(commands.registered_commands)
app.add_typer(inventory.assets_app, name="assets")
app.add_typer(sources.inventory_app, name="inventory")
app.add_typer(inventory.hosts_app, name="known-hosts")
app.add_typer(inventory.tenant_app, name="tenant")
app.add_typer(secrets.secrets_app, name="secrets")
app.add_typer(secrets.masking_app, name="masking")
app.add_typer(access.tokens_app, name="tokens")
app.add_typer(access.roles_app, name="roles")
app.add_typer(executions.dlq_app, name="dlq")
app.add_typer(host.files_app, name="files")
app.add_typer(history_app, name="history")
app.add_typer(notifications_app, name="notifications")
app.add_typer(jobs.jobs_app, name="jobs")
app.add_typer(schedules.schedules_app, name="schedules")
app.add_typer(hooks.hooks_app, name="hooks")
