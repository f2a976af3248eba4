"""What the console's job pages read: the run form of a version, jobs with their latest
run, and the approvals inbox comparing a job run with the same job's last run."""

from __future__ import annotations

from typing import Any

from tests.api.support import Api

URL = "/api/v1/jobs"


def _plan(name: str = "Deploy", approval_level: int = 0, **declared: Any) -> dict[str, Any]:
    return {
        "name": name,
        "approval_level": approval_level,
        "params": declared
        or {
            "release": {"type": "string", "default": "1.0"},
            "replicas": {"type": "int", "description": "How many"},
            "tier": {"type": "choice", "choices": ["web", "db"]},
        },
        "steps": [{"name": "nothing", "type": "noop", "targets": {"hostnames": ["localhost"]}}],
    }


async def test_the_run_form_of_a_version(api: Api) -> None:
    olga = await api.login("acme", "olga", "operator")
    vera = await api.login("acme", "vera", "viewer")
    assert (await api.client.put(f"{URL}/deploy", json=_plan(), headers=olga)).status_code == 201
    second = _plan(restart={"type": "bool", "default": True})
    assert (await api.client.put(f"{URL}/deploy", json=second, headers=olga)).status_code == 201

    form = await api.client.get(f"{URL}/deploy/form", params={"version": 1}, headers=vera)
    assert form.status_code == 200, form.text
    body = form.json()
    assert (body["job"], body["version"], body["plan_name"]) == ("deploy", 1, "Deploy")
    # Required first (what must be filled in), then the rest, each by name.
    assert [f["name"] for f in body["fields"]] == ["replicas", "tier", "release"]
    replicas, tier, release = body["fields"]
    assert (release["control"], release["required"], release["default"]) == ("text", False, "1.0")
    assert (replicas["control"], replicas["required"], replicas["default"]) == (
        "integer",
        True,
        None,
    )
    assert replicas["description"] == "How many" and replicas["pattern"] == r"^[+-]?\d{1,18}$"
    assert (tier["control"], tier["choices"], tier["required"]) == ("select", ["web", "db"], True)

    latest = (await api.client.get(f"{URL}/deploy/form", headers=vera)).json()
    assert latest["version"] == 2
    [restart] = latest["fields"]
    assert (restart["type"], restart["choices"], restart["default"]) == (
        "bool",
        ["true", "false"],
        "true",
    )
    missing = await api.client.get(f"{URL}/nope/form", headers=vera)
    assert missing.status_code == 404
    stranger = await api.login("globex", "eve", "admin")
    assert (await api.client.get(f"{URL}/deploy/form", headers=stranger)).status_code == 404
    assert (await api.client.get(f"{URL}/deploy/form")).status_code == 401


async def test_jobs_are_listed_with_their_latest_run(api: Api) -> None:
    olga = await api.login("acme", "olga", "operator")
    # Waiting for approval: the run stays as submitted (a level-0 run could be begun by the
    # app's worker between the submission and the listing, and then listed as running).
    await api.client.put(f"{URL}/deploy", json=_plan(approval_level=1), headers=olga)
    await api.client.put(f"{URL}/idle", json=_plan("Idle"), headers=olga)
    ran = await api.client.post(
        f"{URL}/deploy/runs", json={"params": {"replicas": 2, "tier": "db"}}, headers=olga
    )
    assert ran.status_code == 202, ran.text
    listed = {j["name"]: j for j in (await api.client.get(URL, headers=olga)).json()}
    assert listed["deploy"]["last_run_id"] == ran.json()["id"]
    assert listed["deploy"]["last_run_status"] == ran.json()["status"] == "pending_approval"
    assert listed["deploy"]["last_run_at"] is not None
    assert listed["idle"]["last_run_id"] is None and listed["idle"]["last_run_status"] is None


async def test_a_job_run_is_compared_with_the_last_run_of_the_same_job(api: Api) -> None:
    olga = await api.login("acme", "olga", "operator")
    bob = await api.login("acme", "bob", "approver")
    gated = _plan("Deploy", approval_level=1)
    await api.client.put(f"{URL}/deploy", json=gated, headers=olga)

    async def run(**given: Any) -> dict[str, Any]:
        made = await api.client.post(f"{URL}/deploy/runs", json={"params": given}, headers=olga)
        assert made.status_code == 202 and made.json()["status"] == "pending_approval", made.text
        result: dict[str, Any] = made.json()
        return result

    first = await run(replicas=2, tier="web")
    # An ad-hoc execution of the same plan name, newer than the job's first run: the
    # second run is still compared with the job's own last run.
    envelope = {"plan": gated, "params": {"replicas": 5, "tier": "db"}}
    adhoc = await api.client.post("/api/v1/executions", json=envelope, headers=olga)
    assert adhoc.status_code == 201, adhoc.text
    second = await run(replicas=3, tier="web")

    items = {
        i["execution"]["id"]: i
        for i in (await api.client.get("/api/v1/approvals", headers=bob)).json()
    }
    item = items[second["id"]]
    assert item["compared_with"] == "job"
    assert item["previous"]["id"] == first["id"]
    changes = {(d["op"], d["text"]) for d in item["diff"] if d["op"] != "same"}
    assert ("removed", "param replicas: 2") in changes
    assert ("added", "param replicas: 3") in changes
    # Not a job run: the last execution of the plan name, and said so.
    assert items[adhoc.json()["id"]]["compared_with"] == "plan_name"
    assert items[adhoc.json()["id"]]["previous"]["id"] == first["id"]
    # The job's first run: no earlier run of the job, nor of the plan name.
    assert items[first["id"]]["compared_with"] is None
    assert items[first["id"]]["previous"] is None
