"""promtool (Debian's prometheus package) checks and unit-tests the alert rules of
ops/prometheus, and parses every query of the Grafana dashboard as PromQL."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests import ops_support as ops

PROMTOOL = shutil.which("promtool")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        PROMTOOL is None,
        reason="promtool is not installed (Debian: apt-get install prometheus; .ci/run does)",
    ),
]

#: Grafana's variables, as the dashboard would expand them with "All" selected.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$job": ".+", "$tenant": ".*"}


def _promtool(*args: str | Path) -> str:
    assert PROMTOOL is not None
    done = subprocess.run(
        [PROMTOOL, *map(str, args)], capture_output=True, text=True, timeout=120, check=False
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    return out


def test_promtool_check_rules() -> None:
    out = _promtool("check", "rules", ops.ALERTS)
    assert f"SUCCESS: {len(ops.rules())} rules found" in out


def test_promtool_test_rules() -> None:
    assert "SUCCESS" in _promtool("test", "rules", ops.ALERTS_TEST)


def test_promtool_test_rules_fails_when_an_alert_misbehaves(tmp_path: Path) -> None:
    # The same tests against rules whose queue threshold is an hour: the alert the tests
    # expect never fires, and promtool must say so.
    loosened = ops.ALERTS.read_text().replace(
        "(opsc_queue_oldest_wait_seconds) > 300", "(opsc_queue_oldest_wait_seconds) > 3600"
    )
    assert loosened != ops.ALERTS.read_text()
    (tmp_path / "alerts.yml").write_text(loosened)
    shutil.copy(ops.ALERTS_TEST, tmp_path / "alerts_test.yml")
    assert PROMTOOL is not None
    done = subprocess.run(
        [PROMTOOL, "test", "rules", str(tmp_path / "alerts_test.yml")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode != 0
    assert "OpscQueueOldestWaitHigh" in done.stdout + done.stderr


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    rules = []
    for panel in ops.panels(ops.dashboard()):
        for target in panel.get("targets", []):
            expr = target["expr"]
            for name, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(name, value)
            assert "$" not in expr, f"unexpanded variable in {target['expr']}"
            record = f"dashboard:panel_{panel['id']}_{target['refId']}"
            rules.append({"record": record, "expr": expr})
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    assert f"SUCCESS: {len(rules)} rules found" in _promtool("check", "rules", path)
