"""Prometheus metrics.

Two sources, chosen for multi-process correctness:

* Figures that live in the database (executions by status, step durations, queue depth and
  wait, DLQ size, lease renewals, retries, approval wait, SLA outcomes, RBAC violations) are
  read at scrape time (``db.metrics.snapshot``) and exposed by a collector built for that one
  scrape. Every API node then reports the same cluster-wide values, whichever worker did the
  work, and a restart resets nothing: Prometheus can scrape any one node.
* What only this process can see lives in ``PROCESS``: its stream clients, events sent,
  resyncs, API permission denials, lock waits of engines running here, SLA violations this
  process flagged. Each node must be scraped for these; sum them across instances.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from opsconductor.db import metrics as db_metrics

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

PROCESS = CollectorRegistry()
STREAM_CLIENTS = Gauge(
    "opsc_stream_clients",
    "Stream clients (SSE, WebSocket) connected to this process",
    registry=PROCESS,
)
STREAM_EVENTS_SENT = Counter(
    "opsc_stream_events_sent",
    "Events sent to stream clients by this process",
    ["transport"],
    registry=PROCESS,
)
STREAM_RESYNCS = Counter(
    "opsc_stream_resyncs",
    "Stream clients dropped to a resync (buffer overflow)",
    registry=PROCESS,
)
API_RBAC_DENIALS = Counter(
    "opsc_api_rbac_denials",
    "Requests this API process refused for lack of permission",
    ["resource", "action"],
    registry=PROCESS,
)
LOCK_WAIT = Histogram(
    "opsc_lock_wait_seconds",
    "Time engines in this process waited for asset locks",
    buckets=db_metrics.WAIT_BUCKETS,
    registry=PROCESS,
)
SLA_FLAGGED = Counter(
    "opsc_sla_violations_flagged",
    "SLA violations this process detected and recorded",
    registry=PROCESS,
)


@contextmanager
def stream_client() -> Iterator[None]:
    STREAM_CLIENTS.inc()
    try:
        yield
    finally:
        STREAM_CLIENTS.dec()


def _buckets(counts: dict[float, int], total: int) -> list[tuple[str, float]]:
    return [(repr(le), float(n)) for le, n in sorted(counts.items())] + [("+Inf", float(total))]


class DatabaseCollector(Collector):
    """One scrape's worth of database figures (see the module docstring)."""

    def __init__(self, found: db_metrics.Snapshot) -> None:
        self.found = found

    def collect(self) -> Iterable[Metric]:
        yield from self._executions()
        yield from self._steps()
        yield from self._queue()
        yield from self._approvals()
        yield from self._sla()
        yield from self._audit()

    def _executions(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "opsc_executions", "Executions by tenant and status", labels=["tenant", "status"]
        )
        for row in self.found.executions:
            family.add_metric([row["tenant_id"], row["status"]], row["n"])
        yield family
        yield CounterMetricFamily(
            "opsc_lease_renewals", "Queue lease renewals by workers", self.found.lease_renewals
        )
        yield GaugeMetricFamily(
            "opsc_workers_alive", "Workers with a recent heartbeat", self.found.workers_alive
        )
        yield GaugeMetricFamily(
            "opsc_workers_in_flight",
            "Executions running on live workers",
            self.found.workers_in_flight,
        )

    def _steps(self) -> Iterator[Metric]:
        durations = HistogramMetricFamily(
            "opsc_step_duration_seconds",
            "Step attempt durations by step type",
            labels=["step_type"],
        )
        retries = CounterMetricFamily(
            "opsc_step_retries", "Step attempts beyond the first", labels=["step_type"]
        )
        for row in self.found.step_totals:
            kind = row["step_type"]
            counts = self.found.step_buckets.get(kind, {})
            durations.add_metric(
                [kind], _buckets(counts, int(row["n"])), sum_value=float(row["seconds"])
            )
            retries.add_metric([kind], row["retries"])
        yield durations
        yield retries

    def _queue(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "opsc_queue_depth", "Queue entries by state", labels=["tenant", "state"]
        )
        oldest = GaugeMetricFamily(
            "opsc_queue_oldest_wait_seconds",
            "Age of the oldest unclaimed entry",
            labels=["tenant"],
        )
        for row in self.found.queue:
            depth.add_metric([row["tenant_id"], "waiting"], row["waiting"])
            depth.add_metric([row["tenant_id"], "leased"], row["leased"])
            oldest.add_metric([row["tenant_id"]], float(row["oldest_wait_s"]))
        yield depth
        yield oldest
        yield _histogram(
            "opsc_queue_wait_seconds",
            "Background executions: approval to start of run",
            self.found.queue_wait,
        )
        dlq = GaugeMetricFamily("opsc_dlq_size", "Open dead-letter entries", labels=["tenant"])
        for row in self.found.dlq:
            dlq.add_metric([row["tenant_id"]], row["n"])
        yield dlq

    def _approvals(self) -> Iterator[Metric]:
        yield _histogram(
            "opsc_approval_wait_seconds",
            "Request to decision of approvals",
            self.found.approval_wait,
        )
        yield GaugeMetricFamily(
            "opsc_approvals_pending",
            "Approvals waiting for a decision",
            self.found.approvals_pending,
        )

    def _sla(self) -> Iterator[Metric]:
        outcomes = CounterMetricFamily(
            "opsc_sla_executions",
            "Finished executions by SLA outcome",
            labels=["tenant", "sla_class", "outcome"],
        )
        met: dict[str, int] = {}
        seen: dict[str, int] = {}
        for row in self.found.sla_outcomes:
            outcomes.add_metric([row["tenant_id"], row["sla_class"], "met"], row["met"])
            outcomes.add_metric([row["tenant_id"], row["sla_class"], "violated"], row["violated"])
            met[row["sla_class"]] = met.get(row["sla_class"], 0) + int(row["met"])
            seen[row["sla_class"]] = (
                seen.get(row["sla_class"], 0) + int(row["met"]) + int(row["violated"])
            )
        yield outcomes
        compliance = GaugeMetricFamily(
            "opsc_sla_compliance_ratio",
            "Share of finished executions within their SLA budget",
            labels=["sla_class"],
        )
        for sla_class, total in sorted(seen.items()):
            compliance.add_metric([sla_class], met[sla_class] / total)
        yield compliance
        violations = CounterMetricFamily(
            "opsc_sla_violations",
            "Executions past their SLA class budget (alerts raised)",
            labels=["tenant", "sla_class"],
        )
        for row in self.found.sla_violations:
            violations.add_metric([row["tenant_id"], row["sla_class"]], row["n"])
        yield violations

    def _audit(self) -> Iterator[Metric]:
        families = {
            "rbac_violation": CounterMetricFamily(
                "opsc_rbac_violations",
                "Steps refused by the worker's RBAC check",
                labels=["tenant"],
            ),
            "lock_reaped": CounterMetricFamily(
                "opsc_locks_reaped", "Stale asset locks of dead workers reaped", labels=["tenant"]
            ),
        }
        for row in self.found.events:
            if row["event_type"] in families:
                families[row["event_type"]].add_metric([row["tenant_id"]], row["n"])
        yield from families.values()


def _histogram(name: str, text: str, found: db_metrics.Histogram | None) -> Metric:
    family = HistogramMetricFamily(name, text)
    if found is not None:
        family.add_metric([], _buckets(found.buckets, found.count), sum_value=found.total_s)
    return family


def exposition(found: db_metrics.Snapshot) -> bytes:
    """The text format: this scrape's database figures, then this process's own."""
    scrape = CollectorRegistry(auto_describe=False)
    scrape.register(DatabaseCollector(found))
    return generate_latest(scrape) + generate_latest(PROCESS)
