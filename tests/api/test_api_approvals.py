"""``GET /approvals``: the inbox of open approvals with the plan laid out, the expiry, and
the change since the last execution of the same plan name; tenant-scoped."""

from __future__ import annotations

from datetime import datetime

from tests.api.support import LOCAL, Api, command_plan


async def test_the_inbox_lists_open_approvals_with_steps_and_a_diff(api: Api) -> None:
    alice = await api.login("acme", "alice", "operator")
    bob = await api.login("acme", "bob", "approver")
    url = "/api/v1/executions"
    first = await api.client.post(
        url, json=command_plan(("echo rotate", "read", LOCAL), name="Rotate"), headers=alice
    )
    assert first.json()["status"] == "completed", first.text
    changed = command_plan(("echo rotate -v", "modify", LOCAL), name="Rotate", approval_level=1)
    waiting = (await api.client.post(url, json=changed, headers=alice)).json()
    assert waiting["status"] == "pending_approval"
    other_name = command_plan(("true", "read", LOCAL), name="Fresh", approval_level=1)
    fresh = (await api.client.post(url, json=other_name, headers=alice)).json()

    r = await api.client.get("/api/v1/approvals", headers=bob)
    assert r.status_code == 200, r.text
    items = {item["execution"]["id"]: item for item in r.json()}
    assert set(items) == {waiting["id"], fresh["id"]}
    item = items[waiting["id"]]
    assert item["approval"]["plan_hash"] == waiting["plan_hash"]
    assert datetime.fromisoformat(item["approval"]["expires_at"]) > datetime.fromisoformat(
        item["now"]
    )
    [step] = item["steps"]
    assert (step["name"], step["action_class"], step["targets"]) == (
        "step 0",
        "modify",
        ["localhost"],
    )
    assert ["command", "echo rotate -v"] in step["work"]
    assert item["previous"]["id"] == first.json()["id"]
    changes = [(d["op"], d["text"]) for d in item["diff"] if d["op"] in ("added", "removed")]
    assert ("removed", "  command: echo rotate") in changes
    assert ("added", "  command: echo rotate -v") in changes
    assert items[fresh["id"]]["previous"] is None and items[fresh["id"]]["diff"] is None

    # Decided: gone from the inbox. Another tenant sees none of it.
    ok = await api.client.post(f"{url}/{waiting['id']}/approve", json={}, headers=bob)
    assert ok.status_code == 200, ok.text
    left = (await api.client.get("/api/v1/approvals", headers=bob)).json()
    assert [i["execution"]["id"] for i in left] == [fresh["id"]]
    stranger = await api.login("globex", "eve", "admin")
    assert (await api.client.get("/api/v1/approvals", headers=stranger)).json() == []
    assert (await api.client.get("/api/v1/approvals")).status_code == 401
