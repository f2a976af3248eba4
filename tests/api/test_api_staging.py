"""Staged enablement over the API: tenant admins change it (audited), submissions obey it
and say why they run record-only; a refused level is a 400 naming it."""

from __future__ import annotations

from opsconductor.db import audit
from tests.api.support import LOCAL, Api, command_plan

URL = "/api/v1/tenant/staging"


async def test_staging_over_the_api(api: Api) -> None:
    admin = await api.login("acme", "ada", "admin")
    operator = await api.login("acme", "otto", "operator")
    got = await api.client.get(URL, headers=operator)
    assert got.json() == {"level_modes": ["real"] * 4, "canary_percent": 100}
    denied = await api.client.patch(URL, json={"canary_percent": 10}, headers=operator)
    assert denied.status_code == 403, denied.text

    r = await api.client.patch(URL, json={"level": 0, "mode": "record-only"}, headers=admin)
    assert r.status_code == 200 and r.json()["level_modes"][0] == "record-only"
    half = await api.client.patch(URL, json={"level": 2}, headers=admin)
    assert half.status_code == 400 and "give both" in half.json()["detail"]
    bad = await api.client.patch(URL, json={"canary_percent": 150}, headers=admin)
    assert bad.status_code == 422

    plan = command_plan(("true", "read", LOCAL))
    made = await api.client.post("/api/v1/executions", json=plan, headers=admin)
    assert made.status_code == 201, made.text
    body = made.json()
    assert body["record_only"] is True
    assert body["record_only_reason"] == "record-only: level 0 not enabled for real in tenant acme"
    shown = (await api.client.get(f"/api/v1/executions/{body['id']}", headers=admin)).json()
    assert shown["record_only_reason"] == body["record_only_reason"]

    await api.client.patch(URL, json={"level": 0, "mode": "refuse"}, headers=admin)
    refused = await api.client.post("/api/v1/executions", json=plan, headers=admin)
    assert refused.status_code == 400
    assert "level 0 executions are refused in tenant acme" in refused.json()["detail"]

    async with api.db.connection() as conn:
        events = await audit.list_events(conn, "acme", "staging_changed")
    assert [e["payload"]["after"]["level_modes"][0] for e in events] == ["refuse", "record-only"]


async def test_booleans_are_not_levels_or_shares(api: Api) -> None:
    """JSON ``true`` is not level 1 (found by the schema fuzzer): 422 naming the field."""
    admin = await api.login("acme", "ada", "admin")
    for body in ({"level": True, "mode": "refuse"}, {"canary_percent": True}):
        r = await api.client.patch(URL, json=body, headers=admin)
        assert r.status_code == 422, r.text
        assert next(iter(body)) in r.json()["detail"]
    got = (await api.client.get(URL, headers=admin)).json()
    assert got == {"level_modes": ["real", "real", "real", "real"], "canary_percent": 100}
