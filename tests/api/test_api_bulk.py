"""POST /executions/bulk: many plans (objects or YAML texts) stored and queued at once; a
bad plan refuses the request, naming it."""

from __future__ import annotations

from typing import Any

from tests.api.support import Api

URL = "/api/v1/executions"


async def test_bulk_over_http(api: Api) -> None:
    headers = await api.login("acme", "alice", "operator")
    plans: list[Any] = [
        {
            "name": "one",
            "steps": [{"name": "s", "type": "noop", "targets": {"hostnames": ["localhost"]}}],
        },
        "name: two\nsteps:\n  - {name: s, type: noop, targets: {hostnames: [localhost]}}\n",
    ]
    r = await api.client.post(f"{URL}/bulk", json={"plans": plans}, headers=headers)
    assert r.status_code == 202, r.text
    body = r.json()
    assert (body["created"], body["duplicates"]) == (2, 0)
    assert [i["execution"]["status"] for i in body["items"]] == ["queued", "queued"]
    assert [i["execution"]["plan_name"] for i in body["items"]] == ["one", "two"]

    bad = [plans[0], {"name": "x", "steps": [{"name": "s", "type": "nope"}]}]
    r = await api.client.post(f"{URL}/bulk", json={"plans": bad}, headers=headers)
    assert r.status_code == 422, r.text
    assert r.json()["detail"].startswith("plans[1].steps[0]"), r.json()
    for body_sent in ({"plans": []}, {"plan": plans}, [plans]):
        r = await api.client.post(f"{URL}/bulk", json=body_sent, headers=headers)
        assert r.status_code == 400, r.text
        assert "plans" in r.json()["detail"]
    # More than MAX_BULK plans: refused before any is parsed, naming the limit.
    many = {"plans": ["name: p\nsteps: []\n"] * 1001}
    r = await api.client.post(f"{URL}/bulk", json=many, headers=headers)
    assert r.status_code == 400, r.text
    assert "at most 1000" in r.json()["detail"]
