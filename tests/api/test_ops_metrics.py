"""The dashboard and alert rules of ops/ against a real /metrics: every series they name is
served, and every label they filter or group by is one those series carry."""

from __future__ import annotations

import re

from prometheus_client.parser import text_string_to_metric_families

from opsconductor import sla
from opsconductor.db import workers
from opsconductor.db.connection import Database
from tests import ops_support as ops
from tests.api.support import Api, command_plan

LOCAL = {"hostnames": ["localhost"]}
#: Labels Prometheus adds to every series it scrapes, and the histogram bucket bound.
ADDED = {"job", "instance", "le"}
#: Families whose samples need events this test does not provoke (a worker's RBAC refusal
#: mid-run, a reaped lock, a stream client); their names are still checked.
NOT_PROVOKED = {
    "opsc_rbac_violations_total",
    "opsc_locks_reaped_total",
    "opsc_stream_events_sent_total",
}
_BY = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
_MATCHER = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")


async def _scrape(api: Api, db: Database) -> str:
    operator = await api.login("acme", "alice", "operator")
    viewer = await api.login("acme", "vic", "viewer")
    slow = await api.client.post(
        "/api/v1/executions", json=command_plan(("sleep 0.3", "read", LOCAL)), headers=operator
    )
    assert slow.status_code in (201, 202), slow.text
    waiting = await api.client.post(
        "/api/v1/executions",
        json=command_plan(("true", "read", LOCAL), name="waits", approval_level=1),
        headers=operator,
    )
    assert waiting.status_code in (201, 202), waiting.text
    refused = await api.client.post(
        "/api/v1/executions", json=command_plan(("true", "read", LOCAL)), headers=viewer
    )
    assert refused.status_code == 403
    assert await sla.sweep(db, fast_s=0.25)  # the slow one is past this budget
    async with db.connection() as conn:  # a queue entry and a dead letter, as in production
        execution_id = waiting.json()["id"]
        # Not available for an hour: the app's own worker must not claim it (and, finding
        # the execution awaiting approval, remove it) before the scrape.
        await conn.execute(
            "INSERT INTO execution.execution_queue (execution_id, priority, available_at) "
            "VALUES (%s, 5, now() + interval '1 hour')",
            (execution_id,),
        )
        await conn.execute(
            "INSERT INTO execution.execution_dlq (execution_id, failure_reason, attempt_count) "
            "VALUES (%s, 'test', 3)",
            (execution_id,),
        )
        await workers.register(conn, workers.Identity("w-1", "host-a", 4242, 4))
    r = await api.client.get("/metrics")
    assert r.status_code == 200
    return r.text


def _labels_by_series(text: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, set()).update(sample.labels)
    return found


async def test_ops_artefacts_use_only_series_and_labels_a_real_scrape_has(
    api: Api, db: Database
) -> None:
    text = await _scrape(api, db)
    board = ops.dashboard()
    exprs = ops.dashboard_exprs(board) + ops.variable_queries(board)
    exprs += [rule["expr"] for rule in ops.rules()]
    assert ops.unknown_names(exprs, ops.exposed_series(text)) == {}

    labels = _labels_by_series(text)
    used = set().union(*(ops.metric_names(expr)[0] for expr in exprs))
    # every other series has a sample to read (these may too: streams earlier in this
    # process count into a process-wide counter)
    assert used - set(labels) <= NOT_PROVOKED
    for expr in exprs:
        ours = ops.metric_names(expr)[0]
        if not ours or ours & NOT_PROVOKED:
            continue
        carried = set().union(*(labels[name] for name in ours)) | ADDED
        quoted_out = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
        named = {
            label.strip()
            for group in _BY.findall(quoted_out)
            for label in group.split(",")
            if label.strip()
        }
        named |= set(_MATCHER.findall(quoted_out))
        assert named <= carried, f"{expr}: labels {named - carried} are not on {ours}"
