"""The Grafana dashboard and the Prometheus alert rules under ops/: well formed, over metrics
/metrics really exposes, every alert with its runbook and its promtool tests (promtool
itself runs in tests/test_promtool.py)."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from opsconductor import metrics
from opsconductor.db import metrics as db_metrics
from tests import ops_support as ops

pytestmark = pytest.mark.unit


def _exposition() -> str:
    """What /metrics answers with nothing in the database: every family, no rows."""
    return metrics.exposition(db_metrics.Snapshot()).decode()


def test_the_name_check_catches_a_name_nobody_exposes() -> None:
    exposed = ops.exposed_series(_exposition())
    assert "opsc_step_duration_seconds_bucket" in exposed and "opsc_dlq_size" in exposed
    assert "opsc_step_retries_total" in exposed and "opsc_step_retries" not in exposed
    found = ops.unknown_names(
        [
            "rate(opsc_step_retries[5m])",  # a counter's family name, not its series
            'sum(opsc_queue_lenght{tenant="opsc_dlq_size"})',
            'rate(node_cpu_seconds_total{mode="idle"}[5m])',
            'max(opsc_dlq_size) and up{job="x"}',
        ],
        exposed,
    )
    assert found == {
        "rate(opsc_step_retries[5m])": {"opsc_step_retries"},
        'sum(opsc_queue_lenght{tenant="opsc_dlq_size"})': {"opsc_queue_lenght"},
        'rate(node_cpu_seconds_total{mode="idle"}[5m])': {"node_cpu_seconds_total"},
    }


def test_every_metric_the_dashboard_and_the_rules_use_is_exposed() -> None:
    exposed = ops.exposed_series(_exposition())
    board = ops.dashboard()
    exprs = ops.dashboard_exprs(board) + ops.variable_queries(board)
    exprs += [rule["expr"] for rule in ops.rules()]
    assert ops.unknown_names(exprs, exposed) == {}


def test_the_dashboard_shows_every_metric_family() -> None:
    used: set[str] = set()
    for expr in ops.dashboard_exprs(ops.dashboard()):
        used |= ops.metric_names(expr)[0]
    # prometheus_client writes a process counter's creation time as a gauge family of its own
    families = {
        name: kind
        for name, kind in ops.exposed_families(_exposition()).items()
        if not name.endswith("_created")
    }
    shown = {
        name
        for name, kind in families.items()
        if any(u in {name + s for s in ops._SUFFIXES[kind]} for u in used)
    }
    assert set(families) - shown == set()


def test_dashboard_structure() -> None:
    board = ops.dashboard()
    assert board["uid"] == "opsconductor" and board["title"]
    assert board["schemaVersion"] >= 36
    variables = {v["name"]: v for v in board["templating"]["list"]}
    source = variables["DS_PROMETHEUS"]
    assert (source["type"], source["query"]) == ("datasource", "prometheus")
    for name in ("job", "tenant"):
        assert variables[name]["type"] == "query"
        assert variables[name]["datasource"]["uid"] == ops.DS_UID
    assert "tenant" in ops.variable_queries(board)[1]

    panels = ops.panels(board)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    graphs = [p for p in panels if p["type"] != "row"]
    assert len(graphs) >= 20
    for panel in graphs:
        assert panel["title"], panel
        assert panel["datasource"] == {"type": "prometheus", "uid": ops.DS_UID}, panel["title"]
        targets = panel["targets"]
        assert targets, f"{panel['title']}: no query"
        assert len({t["refId"] for t in targets}) == len(targets)
        for target in targets:
            assert target["expr"].strip(), panel["title"]
            assert target["datasource"]["uid"] == ops.DS_UID
    assert not _overlaps([p["gridPos"] for p in panels])


def _overlaps(boxes: list[dict[str, int]]) -> list[tuple[int, int]]:
    cells: dict[tuple[int, int], int] = {}
    clash = []
    for i, box in enumerate(boxes):
        assert box["x"] >= 0 and box["x"] + box["w"] <= 24, box
        for x in range(box["x"], box["x"] + box["w"]):
            for y in range(box["y"], box["y"] + box["h"]):
                if (x, y) in cells:
                    clash.append((cells[(x, y)], i))
                cells[(x, y)] = i
    return clash


def test_dashboard_filters_tenant_labelled_metrics_by_the_tenant_variable() -> None:
    # A tenant picked in the variable must narrow every panel that can be narrowed.
    tenanted = {
        "opsc_executions",
        "opsc_queue_depth",
        "opsc_queue_oldest_wait_seconds",
        "opsc_dlq_size",
        "opsc_sla_executions_total",
        "opsc_sla_violations_total",
        "opsc_rbac_violations_total",
        "opsc_locks_reaped_total",
    }
    for expr in ops.dashboard_exprs(ops.dashboard()):
        for name in tenanted & ops.metric_names(expr)[0]:
            for selector in re.findall(rf"{name}\{{([^}}]*)\}}", expr):
                assert 'tenant=~"$tenant"' in selector, expr


def test_every_alert_is_described_labelled_and_has_its_runbook() -> None:
    rules = ops.rules()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names))
    for rule in rules:
        name = rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        notes = rule["annotations"]
        assert notes["summary"] and notes["description"], name
        assert notes["runbook_url"] == f"docs/runbooks/{name}.md"
        page = (ops.ROOT / notes["runbook_url"]).read_text()
        assert page.startswith(f"# {name}\n"), name
        for heading in ("## What it means", "## How to check", "## How to fix"):
            assert heading in page, f"{name}: {heading}"
    assert sorted(p.stem for p in ops.RUNBOOKS.glob("*.md")) == sorted(names)


def test_the_issue_s_alerts_are_all_there() -> None:
    exprs = {rule["alert"]: rule["expr"] for rule in ops.rules()}
    assert "opsc_queue_oldest_wait_seconds" in exprs["OpscQueueOldestWaitHigh"]
    assert "opsc_dlq_size" in exprs["OpscDeadLetterGrowing"]
    assert "opsc_workers_alive" in exprs["OpscNoLiveWorkers"]
    assert "opsc_sla_violations_total" in exprs["OpscSlaViolations"]
    assert "opsc_approvals_pending" in exprs["OpscApprovalBacklog"]
    assert exprs["OpscScrapeFailing"] == 'up{job="opsconductor"} == 0'
    assert exprs["OpscScrapeTargetMissing"] == 'absent(up{job="opsconductor"})'


def test_every_alert_has_a_firing_and_a_quiet_promtool_case() -> None:
    tests: list[dict[str, Any]] = yaml.safe_load(ops.ALERTS_TEST.read_text())["tests"]
    cases = [case for test in tests for case in test["alert_rule_test"]]
    for name in (rule["alert"] for rule in ops.rules()):
        mine = [case for case in cases if case["alertname"] == name]
        assert any(case["exp_alerts"] for case in mine), f"{name} never fires"
        assert any(not case["exp_alerts"] for case in mine), f"{name} never stays quiet"
