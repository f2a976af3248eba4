"""Jobs: saved, versioned plans run by name. Pure: names, content identity, records.

A job's version is an immutable plan document (``plan.plan_document``, its ``params``
declarations included). Saving the same content again adds nothing; different content
adds the next version. A run is an ordinary execution that records the job and version.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Self

from opsconductor.errors import BadInput
from opsconductor.records import row_values

#: Job (and schedule) names: short, lower case, safe in a URL path and a shell.
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")


def check_name(name: str, what: str = "job") -> str:
    if not _NAME.match(name):
        raise BadInput(
            f"{what} name {name!r}: use 1-63 lower-case letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def content_hash(document: Mapping[str, Any]) -> str:
    """Identity of a version's content: SHA-256 of its canonical JSON."""
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Job:
    """One ``execution.jobs`` row."""

    tenant_id: str
    name: str
    latest_version: int
    created_by: str
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Self:
        return cls(**row_values(cls, row, "jobs"))


@dataclass(frozen=True)
class JobVersion:
    """One ``execution.job_versions`` row: the plan document as saved."""

    tenant_id: str
    job_name: str
    version: int
    plan: dict[str, Any]
    content_hash: str
    created_by: str
    created_at: datetime

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Self:
        return cls(**row_values(cls, row, "job_versions"))

    @property
    def plan_name(self) -> str:
        return str(self.plan.get("name", ""))

    @property
    def params(self) -> dict[str, Any]:
        """The declared parameters, as written in the plan."""
        declared = self.plan.get("params") or {}
        return dict(declared) if isinstance(declared, dict) else {}


@dataclass(frozen=True)
class JobSummary:
    """A job as listed: its latest plan's name, its schedules and its latest run."""

    job: Job
    plan_name: str
    schedules: int
    last_run_id: uuid.UUID | None
    last_run_status: str | None
    last_run_at: datetime | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Self:
        return cls(
            job=Job.from_row(row),
            plan_name=row["plan_name"] or "",
            schedules=int(row["schedules"]),
            last_run_id=row["last_run_id"],
            last_run_status=row["last_run_status"],
            last_run_at=row["last_run_at"],
        )
