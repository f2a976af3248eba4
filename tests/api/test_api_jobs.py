"""Jobs over HTTP: saved versions, runs by name with params, RBAC, approval per run."""

from __future__ import annotations

from typing import Any

import yaml

from tests.api.support import Api

URL = "/api/v1/jobs"


def _plan(message: str = "hello", approval_level: int = 0) -> dict[str, Any]:
    return {
        "name": f"noop {message}",
        "approval_level": approval_level,
        "params": {
            "version": {"type": "string"},
            "replicas": {"type": "int", "default": 1},
        },
        "steps": [{"name": "nothing", "type": "noop", "targets": {"hostnames": ["localhost"]}}],
    }


async def test_saving_versions_a_job_and_same_content_adds_nothing(api: Api) -> None:
    headers = await api.login("acme", "olga", "operator")
    first = await api.client.put(f"{URL}/deploy", json=_plan(), headers=headers)
    assert first.status_code == 201, first.text
    assert first.json()["version"]["version"] == 1
    assert first.json()["version"]["params"]["version"] == {"type": "string"}
    again = await api.client.put(
        f"{URL}/deploy",
        content=yaml.safe_dump(_plan()),
        headers={**headers, "Content-Type": "application/yaml"},
    )
    assert again.status_code == 200 and again.json()["created"] is False
    assert again.json()["version"]["version"] == 1
    edited = await api.client.put(f"{URL}/deploy", json=_plan("edited"), headers=headers)
    assert edited.status_code == 201 and edited.json()["version"]["version"] == 2
    versions = (await api.client.get(f"{URL}/deploy/versions", headers=headers)).json()
    assert [v["version"] for v in versions] == [2, 1]
    assert [v["plan_name"] for v in versions] == ["noop edited", "noop hello"]
    listed = (await api.client.get(URL, headers=headers)).json()
    assert [(j["name"], j["latest_version"]) for j in listed] == [("deploy", 2)]
    old = await api.client.get(f"{URL}/deploy", params={"version": 1}, headers=headers)
    assert old.json()["version"]["plan_name"] == "noop hello"
    missing = await api.client.get(f"{URL}/deploy", params={"version": 9}, headers=headers)
    assert missing.status_code == 404 and "no version 9" in missing.text


async def test_a_run_is_an_execution_that_records_job_and_version(api: Api) -> None:
    headers = await api.login("acme", "olga", "operator")
    await api.client.put(f"{URL}/deploy", json=_plan(), headers=headers)
    await api.client.put(f"{URL}/deploy", json=_plan("v2"), headers=headers)
    bad = await api.client.post(
        f"{URL}/deploy/runs", json={"params": {"replicas": "x"}}, headers=headers
    )
    assert bad.status_code == 400 and "params.version" in bad.text
    ran = await api.client.post(
        f"{URL}/deploy/runs", json={"params": {"version": "1.2", "replicas": 3}}, headers=headers
    )
    assert ran.status_code == 202, ran.text
    found = ran.json()
    assert (found["job_name"], found["job_version"], found["plan_name"]) == ("deploy", 2, "noop v2")
    older = await api.client.post(
        f"{URL}/deploy/runs", json={"params": {"version": "1.0"}, "version": 1}, headers=headers
    )
    assert older.json()["job_version"] == 1 and older.json()["plan_name"] == "noop hello"
    detail = (await api.client.get(f"/api/v1/executions/{found['id']}", headers=headers)).json()
    assert (detail["job_name"], detail["job_version"]) == ("deploy", 2)
    runs = (await api.client.get(f"{URL}/deploy/runs", headers=headers)).json()
    assert {r["id"] for r in runs} == {found["id"], older.json()["id"]}


async def test_approval_rules_apply_to_each_run(api: Api) -> None:
    headers = await api.login("acme", "olga", "operator")
    await api.client.put(f"{URL}/gated", json=_plan(approval_level=1), headers=headers)
    ran = await api.client.post(
        f"{URL}/gated/runs", json={"params": {"version": "1"}}, headers=headers
    )
    assert ran.json()["status"] == "pending_approval"
    second = await api.client.post(
        f"{URL}/gated/runs", json={"params": {"version": "2"}}, headers=headers
    )
    assert second.json()["status"] == "pending_approval"
    assert second.json()["id"] != ran.json()["id"]


async def test_rbac_on_jobs(api: Api) -> None:
    viewer = await api.login("acme", "vera", "viewer")
    operator = await api.login("acme", "olga", "operator")
    other = await api.login("acme", "otto", "operator")
    boss = await api.login("acme", "ada", "admin")
    refused = await api.client.put(f"{URL}/deploy", json=_plan(), headers=viewer)
    assert refused.status_code == 403 and "jobs" in refused.text
    # Saving needs the right to submit its steps on its targets: deploy on prod is not
    # an operator's.
    await api.add_asset("acme", "prod-1", "prod")
    prod = _plan()
    prod["steps"] = [
        {"name": "go", "type": "noop", "action_class": "deploy", "targets": {"assets": ["prod-1"]}}
    ]
    denied = await api.client.put(f"{URL}/prod", json=prod, headers=operator)
    assert denied.status_code == 403 and "deploy" in denied.text
    assert (
        await api.client.put(f"{URL}/deploy", json=_plan(), headers=operator)
    ).status_code == 201
    assert (await api.client.get(f"{URL}/deploy", headers=viewer)).status_code == 200
    run = await api.client.post(
        f"{URL}/deploy/runs", json={"params": {"version": "1"}}, headers=viewer
    )
    assert run.status_code == 403
    not_owner = await api.client.delete(f"{URL}/deploy", headers=other)
    assert not_owner.status_code == 403 and "creator" in not_owner.text
    assert (await api.client.delete(f"{URL}/deploy", headers=operator)).status_code == 204
    await api.client.put(f"{URL}/deploy", json=_plan(), headers=operator)
    assert (await api.client.delete(f"{URL}/deploy", headers=boss)).status_code == 204
    assert (await api.client.get(f"{URL}/deploy", headers=boss)).status_code == 404
    bad_name = await api.client.put(f"{URL}/Bad%20Name", json=_plan(), headers=boss)
    assert bad_name.status_code in (400, 404, 422)
