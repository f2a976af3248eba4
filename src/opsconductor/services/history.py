"""Pruning old history: export first (JSON Lines), delete exactly what was exported.

Who may prune: the installation's administrator (``opsc`` on the server, without a login)
for any tenant or all of them; a tenant's administrator (a role granting ``*:*`` in every
environment) for their own tenant only. The CLI runs as the installation's administrator;
the tenant rule is here for an API route.

What goes: finished executions (terminal status, see status_machine.TERMINAL) that finished
before the cut-off, with every row keyed to them (step attempts, events, approvals and their
decisions, dead letters, leftover queue entries and locks); and the tenant's inbound
webhook deliveries and fired schedule slots from before the cut-off, which do not hang off
an execution (its link becomes NULL) but would otherwise grow for ever. What stays:
unfinished executions, whatever their age; an execution a kept one retries (``retry_of``);
each schedule's latest fired slot; deliveries inside the webhook signature window (a
replay of them must still be recognised); and the tenant audit trail (``audit_events``),
which is append-only and records each prune.

Each batch is one transaction: its rows are deleted with RETURNING, written to the export
file, flushed to disk and read back; the batch commits only if the file holds exactly as
many records of each kind as were deleted. A crash between two batches leaves the file
with every committed batch (and no summary line); re-running prunes the rest.
"""

from __future__ import annotations

import json
import os
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from opsconductor import rbac, status_machine
from opsconductor.config import Settings
from opsconductor.db import audit
from opsconductor.db import history as store
from opsconductor.db.connection import Database
from opsconductor.db.history import Kind, Trail
from opsconductor.errors import BadInput, NotFound, OpsError, PermissionDenied
from opsconductor.services.caller import Caller

#: Format tag on the export's first line; bump it if the line layout changes.
EXPORT_FORMAT = "opsc-history-export/1"
BATCH = 500
_END = (datetime.max.replace(tzinfo=UTC), uuid.UUID(int=(1 << 128) - 1))
TERMINAL = sorted(str(s) for s in status_machine.TERMINAL)


class ExportMismatch(OpsError):
    """The export file does not hold what the batch deleted: the batch was rolled back."""


@dataclass
class PruneReport:
    export: Path
    #: tenant -> the cut-off used for it
    cutoffs: dict[str, datetime] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)
    by_tenant: dict[str, Counter[str]] = field(default_factory=dict)
    #: finished executions kept because a kept execution retries them
    kept_referenced: int = 0

    @property
    def executions(self) -> int:
        return self.counts[Kind.EXECUTION]


def _may_prune(who: Caller, tenant_id: str | None) -> None:
    if who.installation_admin:
        return
    if tenant_id is None or tenant_id != who.tenant_id:
        raise PermissionDenied(
            f"actor {who.actor_id!r}: pruning another tenant's history, or every tenant's, "
            "is for the installation's administrator"
        )
    if not rbac.decide(who.roles, rbac.ANY, rbac.ANY).allowed:
        raise PermissionDenied(
            f"actor {who.actor_id!r}: pruning history needs the tenant's admin role"
        )


def _line(kind: str, body: dict[str, Any]) -> str:
    return json.dumps({"kind": kind, **body}, sort_keys=True, default=str) + "\n"


class _Export:
    """The export file: created new (never overwritten), owner-only, fsynced per batch."""

    def __init__(self, path: Path) -> None:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise BadInput(f"{path}: exists; the export never overwrites a file") from None
        except OSError as exc:
            raise BadInput(f"{path}: cannot create the export file: {exc.strerror}") from None
        self.file: IO[str] = os.fdopen(fd, "w+", encoding="utf-8")

    def write(self, text: str) -> None:
        self.file.write(text)
        self.file.flush()
        os.fsync(self.file.fileno())

    def batch(self, lines: list[str], deleted: Counter[str]) -> None:
        """Write one batch, read it back, and refuse unless it holds what was deleted."""
        start = self.file.tell()
        self.write("".join(lines))
        self.file.seek(start)
        found: Counter[str] = Counter()
        for text in self.file:
            found[json.loads(text)["kind"]] += 1
        self.file.seek(0, os.SEEK_END)
        if found != deleted:
            raise ExportMismatch(
                f"export check failed: wrote {dict(found)}, deleted {dict(deleted)}; "
                "nothing of this batch was deleted"
            )

    def close(self) -> None:
        self.file.close()


async def _prune_tenant(
    db: Database, out: _Export, tenant_id: str, before: datetime, report: PruneReport
) -> None:
    cursor = _END
    while True:
        async with db.transaction() as conn:
            found = await store.next_batch(
                conn,
                tenant_id=tenant_id,
                before=before,
                terminal=TERMINAL,
                cursor=cursor,
                size=BATCH,
            )
            if not found:
                return
            cursor = (found[-1].created_at, found[-1].id)
            ids = [c.id for c in found if not c.blocked]
            report.kept_referenced += len(found) - len(ids)
            if not ids:
                continue
            rows = {kind: await store.delete(conn, kind, ids) for kind in Kind}
            if len(rows[Kind.EXECUTION]) != len(ids):
                raise ExportMismatch(
                    f"tenant {tenant_id}: {len(ids)} executions locked, "
                    f"{len(rows[Kind.EXECUTION])} deleted; nothing of this batch was deleted"
                )
            # The execution first, then what hung off it, as an auditor reads it.
            order = [Kind.EXECUTION, *(k for k in Kind if k is not Kind.EXECUTION)]
            lines = [_line(kind, {"row": row}) for kind in order for row in rows[kind]]
            deleted = Counter({str(kind): len(rows[kind]) for kind in Kind if rows[kind]})
            out.batch(lines, deleted)
        report.counts.update(deleted)
        report.by_tenant.setdefault(tenant_id, Counter()).update(deleted)


async def _prune_trail(
    db: Database, out: _Export, tenant_id: str, before: datetime, report: PruneReport
) -> None:
    """The tenant's deliveries and fired slots before ``before``, a batch per transaction,
    verified against the file like the executions' batches."""
    for kind in Trail:
        while True:
            async with db.transaction() as conn:
                rows = await store.delete_trail(conn, kind, tenant_id, before, BATCH)
                if not rows:
                    break
                deleted = Counter({str(kind): len(rows)})
                out.batch([_line(kind, {"row": row}) for row in rows], deleted)
            report.counts.update(deleted)
            report.by_tenant.setdefault(tenant_id, Counter()).update(deleted)
            if len(rows) < BATCH:
                break


async def prune(
    db: Database,
    who: Caller,
    *,
    export: Path,
    before: datetime | None = None,
    retention: bool = False,
    tenant_id: str | None = None,
    hook_window_s: float = Settings.hook_window_s,
) -> PruneReport:
    """Prune finished executions before ``before`` (or each tenant's retention window), and
    the tenant's webhook deliveries and fired schedule slots before it. ``hook_window_s``:
    the installation's webhook signature window; deliveries inside it always stay."""
    _may_prune(who, tenant_id)
    if (before is None) == (not retention):
        raise BadInput("give either a cut-off date (--before) or --retention, not both")
    if before is not None and before.tzinfo is None:
        raise BadInput("the cut-off needs a time zone")
    now = datetime.now(UTC)
    async with db.connection() as conn:
        unknown = await store.cascading_tables(conn) - store.EXPORTED_TABLES - store.UNLINKED_TABLES
        if unknown:
            raise OpsError(
                f"prune does not know how to export {', '.join(sorted(unknown))}, which "
                "deleting an execution would remove; refusing to prune"
            )
        if retention:
            windows = await store.retention_days(conn, tenant_id)
            cutoffs = {t: now - timedelta(days=d) for t, d in windows.items()}
        else:
            assert before is not None
            cutoffs = dict.fromkeys(await store.tenant_ids(conn, tenant_id), before)
    if tenant_id is not None and not retention and tenant_id not in cutoffs:
        raise NotFound(f"tenant {tenant_id!r} not found")
    report = PruneReport(export, cutoffs)
    out = _Export(export)
    try:
        header = {
            "format": EXPORT_FORMAT,
            "by": who.actor_id,
            "at": now.isoformat(),
            "cutoffs": {t: c.isoformat() for t, c in cutoffs.items()},
            "statuses": TERMINAL,
        }
        out.write(_line("export", header))
        # Never a delivery whose signed timestamp could still be accepted (a margin for
        # clock skew between API nodes): its row is what refuses its replay.
        replayable = now - timedelta(seconds=2 * hook_window_s + 60)
        for tenant, cutoff in cutoffs.items():
            await _prune_tenant(db, out, tenant, cutoff, report)
            await _prune_trail(db, out, tenant, min(cutoff, replayable), report)
        out.write(_line("summary", {"counts": dict(sorted(report.counts.items()))}))
    finally:
        out.close()
    async with db.transaction() as conn:
        for tenant, cutoff in cutoffs.items():
            await audit.record(
                conn,
                tenant,
                who.actor_id,
                "history_pruned",
                {
                    "before": cutoff.isoformat(),
                    "export": str(export),
                    "counts": dict(sorted(report.by_tenant.get(tenant, Counter()).items())),
                },
            )
    return report


async def set_retention(db: Database, who: Caller, days: int | None) -> None:
    """The caller's tenant keeps finished executions ``days`` days (None: until pruned)."""
    _may_prune(who, who.tenant_id)
    if days is not None and days < 1:
        raise BadInput("retention: at least 1 day (or 'off')")
    async with db.transaction() as conn:
        if not await store.set_retention(conn, who.tenant_id, days):
            raise NotFound(f"tenant {who.tenant_id!r} not found")
        await audit.record(
            conn, who.tenant_id, who.actor_id, "history_retention_set", {"days": days}
        )


async def retention(db: Database, who: Caller) -> int | None:
    _may_prune(who, who.tenant_id)
    async with db.connection() as conn:
        return await store.get_retention(conn, who.tenant_id)
