"""Parameter values over HTTP: the ``{"plan": ..., "params": {...}}`` envelope."""

from __future__ import annotations

from typing import Any

from tests.api.support import LOCAL, Api, command_plan

URL = "/api/v1/executions"


def _plan() -> dict[str, Any]:
    plan = command_plan(('echo "v=$OPSC_PARAM_VERSION"', "read", LOCAL))
    plan["params"] = {"version": {"type": "string"}, "replicas": {"type": "int", "default": 1}}
    return plan


async def test_params_travel_in_an_envelope_and_are_checked(api: Api) -> None:
    headers = await api.login("acme", "alice", "operator")
    bare = await api.client.post(URL, json=_plan(), headers=headers)
    assert bare.status_code == 400, bare.text
    assert "params.version: required string parameter not given" in bare.text
    wrong = await api.client.post(
        URL, json={"plan": _plan(), "params": {"version": "1", "replicas": "2"}}, headers=headers
    )
    assert wrong.status_code == 400 and "params.replicas: must be an integer" in wrong.text
    checked = await api.client.post(
        f"{URL}/validate", json={"plan": _plan(), "params": {"version": "1.2"}}, headers=headers
    )
    assert checked.status_code == 200, checked.text
    found = checked.json()
    assert found["params"] == {"version": "1.2", "replicas": 1}
    assert (found["sla_class"], found["mode"]) == ("fast", "immediate")
    assert found["budget_s"] > 0 and "policy" in found["budget_why"]
    done = await api.client.post(
        URL, json={"plan": _plan(), "params": {"version": "1.2"}}, headers=headers
    )
    assert done.status_code == 201, done.text
    assert done.json()["status"] == "completed"
    steps = await api.client.get(f"{URL}/{done.json()['id']}/steps", headers=headers)
    assert "v=1.2" in steps.text
