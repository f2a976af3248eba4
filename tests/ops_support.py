"""The operations artefacts under ops/ (Grafana dashboard, Prometheus rules) as the tests read
them: the PromQL expressions they hold, the metric names those use, and the series names an
exposition of /metrics declares."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "ops" / "grafana" / "opsconductor.json"
ALERTS = ROOT / "ops" / "prometheus" / "alerts.yml"
ALERTS_TEST = ROOT / "ops" / "prometheus" / "alerts_test.yml"
RUNBOOKS = ROOT / "docs" / "runbooks"
DS_UID = "${DS_PROMETHEUS}"

#: Series Prometheus writes itself for every target, not ours to expose.
PROMETHEUS_OWN = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})

#: The series names each metric type's samples take in the text format.
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "unknown": ("",),
}

_OURS = re.compile(r"\bopsc_[A-Za-z0-9_]+")
_SELECTOR = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*\{")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')


def dashboard() -> dict[str, Any]:
    found: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return found


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, rows' nested panels included."""
    out = []
    for panel in board["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def variable_queries(board: dict[str, Any]) -> list[str]:
    found = []
    for var in board["templating"]["list"]:
        query = var.get("query")
        if var["type"] == "query":
            found.append(query["query"] if isinstance(query, dict) else query)
    return found


def dashboard_exprs(board: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in panels(board) for t in p.get("targets", [])]


def rules() -> list[dict[str, Any]]:
    loaded = yaml.safe_load(ALERTS.read_text())
    return [rule for group in loaded["groups"] for rule in group["rules"]]


def metric_names(expr: str) -> tuple[set[str], set[str]]:
    """(our opsc_* names, every name written as a selector `name{...}`) in a PromQL
    expression; label values in quotes are left out."""
    bare = _STRING.sub('""', expr)
    return set(_OURS.findall(bare)), set(_SELECTOR.findall(bare)) - {"by", "without", "on"}


def exposed_families(text: str) -> dict[str, str]:
    """Family name -> type, for every family an exposition declares (with or without a
    sample: an empty dead-letter queue still declares opsc_dlq_size)."""
    return {family.name: family.type for family in text_string_to_metric_families(text)}


def exposed_series(text: str) -> set[str]:
    """Every series name the exposition's families can have samples under."""
    return {
        name + suffix for name, kind in exposed_families(text).items() for suffix in _SUFFIXES[kind]
    }


def unknown_names(exprs: list[str], exposed: set[str]) -> dict[str, set[str]]:
    """Expression -> the names it uses that nothing exposes."""
    unknown = {}
    for expr in exprs:
        ours, selected = metric_names(expr)
        missing = (ours - exposed) | (selected - exposed - PROMETHEUS_OWN)
        if missing:
            unknown[expr] = missing
    return unknown
