"""Dynamic inventory sources against a real database: a NetBox-format API on loopback (5
devices and 2 VMs, 2 per page) synced with ``opsc inventory sync`` (dry run, apply, a
changed and a removed device), the schedule claimed once among several workers, and a
real ``ansible-inventory`` run."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from opsconductor import rbac
from opsconductor.connectors import ansible_inventory
from opsconductor.db import assets, audit
from opsconductor.db import inventory_sources as rows
from opsconductor.db.connection import Database
from opsconductor.errors import PermissionDenied
from opsconductor.inventory import Asset
from opsconductor.services import inventory_sources as service
from opsconductor.services.caller import AuthMethod, Caller
from tests.netbox_lab import NetBox, device, netbox, vm
from tests.served import opsc

pytestmark = pytest.mark.integration

ADMIN = Caller("default", "ada", (rbac.BUILTIN_ROLES["admin"],), AuthMethod.TOKEN)


def _devices() -> list[dict[str, Any]]:
    return [
        device(1, "leaf-1", "10.0.0.1", tags=("prod-net",)),
        device(2, "leaf-2", "10.0.0.2"),
        device(3, "spine-1", "10.0.0.3", role="spine"),
        device(4, "edge router", "10.0.0.4", role="edge", platform=None, old_role_key=True),
        device(5, "oob-1", None, status="offline"),
    ]


def _state() -> NetBox:
    return NetBox(devices=_devices(), vms=[vm(1, "app-1", "10.1.0.1"), vm(2, "app-2", "10.1.0.2")])


def _ok(result: Any) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return str(result.stdout)


FIRST_DRY_RUN = """\
warning: edge router: imported with asset id 'edge_router'
warning: oob-1: no primary IP: its address is its name
would add app-1:
  hostname: 'app-1'
  address: '10.1.0.1'
  environment: 'prod'
  connection_type: 'ssh'
  os: 'ubuntu'
  tags.inventory_source: 'nb'
  tags.role: 'app'
  tags.status: 'active'
  vars.netbox_id: 1
  vars.netbox_type: 'virtual_machine'
would add app-2:
  hostname: 'app-2'
  address: '10.1.0.2'
  environment: 'prod'
  connection_type: 'ssh'
  os: 'ubuntu'
  tags.inventory_source: 'nb'
  tags.role: 'app'
  tags.status: 'active'
  vars.netbox_id: 2
  vars.netbox_type: 'virtual_machine'
would add edge_router:
  hostname: 'edge router'
  address: '10.0.0.4'
  environment: 'prod'
  connection_type: 'ssh'
  tags.inventory_source: 'nb'
  tags.role: 'edge'
  tags.site: 'dc1'
  tags.status: 'active'
  vars.netbox_id: 4
  vars.netbox_type: 'device'
would add leaf-1:
  hostname: 'leaf-1'
  address: '10.0.0.1'
  environment: 'prod'
  connection_type: 'ssh'
  os: 'eos'
  tags.inventory_source: 'nb'
  tags.prod-net: 'true'
  tags.role: 'leaf'
  tags.site: 'dc1'
  tags.status: 'active'
  vars.netbox_id: 1
  vars.netbox_type: 'device'
would add leaf-2:
  hostname: 'leaf-2'
  address: '10.0.0.2'
  environment: 'prod'
  connection_type: 'ssh'
  os: 'eos'
  tags.inventory_source: 'nb'
  tags.role: 'leaf'
  tags.site: 'dc1'
  tags.status: 'active'
  vars.netbox_id: 2
  vars.netbox_type: 'device'
would add oob-1:
  hostname: 'oob-1'
  address: 'oob-1'
  environment: 'prod'
  connection_type: 'ssh'
  os: 'eos'
  tags.inventory_source: 'nb'
  tags.role: 'leaf'
  tags.site: 'dc1'
  tags.status: 'offline'
  vars.netbox_id: 5
  vars.netbox_type: 'device'
would add spine-1:
  hostname: 'spine-1'
  address: '10.0.0.3'
  environment: 'prod'
  connection_type: 'ssh'
  os: 'eos'
  tags.inventory_source: 'nb'
  tags.role: 'spine'
  tags.site: 'dc1'
  tags.status: 'active'
  vars.netbox_id: 3
  vars.netbox_type: 'device'
dry run: 7 added, 0 changed, 0 removed, 0 unchanged; nothing applied
"""

SECOND_DRY_RUN = """\
warning: edge router: imported with asset id 'edge_router'
warning: oob-1: no primary IP: its address is its name
would change leaf-2:
  address: '10.0.0.2' -> '10.0.0.22'
  tags.maint: None -> 'true'
  tags.status: 'active' -> 'planned'
would remove spine-1 (spine-1, 10.0.0.3)
dry run: 0 added, 1 changed, 1 removed, 5 unchanged; nothing applied
"""


async def _table(db: Database) -> list[tuple[Any, ...]]:
    async with db.connection() as conn:
        found = await rows.assets_with_owner(conn, "default")
    return [
        (a.asset_id, a.address, a.os, a.username, dict(a.tags).get("status"), owner)
        for a, owner in found.values()
    ]


async def test_netbox_sync_with_pages_a_changed_and_a_removed_device(
    db: Database, cli_env: dict[str, str]
) -> None:
    with netbox(_state()) as nb:
        _ok(opsc(cli_env, "secrets", "set", "netbox/token", stdin=nb.token))
        _ok(opsc(cli_env, "assets", "add", "hand-1", "--address", "10.9.9.9"))
        added = opsc(
            cli_env,
            "inventory", "sources", "add", "nb", "--kind", "netbox", "--url", nb.url,
            "--token-ref", "netbox/token", "--environment", "prod",
        )  # fmt: skip
        assert _ok(added).strip() == "added inventory source nb (netbox)"

        assert _ok(opsc(cli_env, "inventory", "sync", "nb", "--dry-run")) == FIRST_DRY_RUN
        # 5 devices and 2 VMs at 2 a page: 3 + 1 pages, every one with the token
        pages = [path for path, _ in nb.requests]
        assert pages == [
            "/api/dcim/devices/?limit=1000",
            "/api/dcim/devices/?limit=2&offset=2",
            "/api/dcim/devices/?limit=2&offset=4",
            "/api/virtualization/virtual-machines/?limit=1000",
        ]
        assert {auth for _, auth in nb.requests} == {f"Token {nb.token}"}
        before = await _table(db)
        assert [r[0] for r in before] == ["hand-1", "localhost"]  # a dry run changes nothing

        applied = _ok(opsc(cli_env, "inventory", "sync", "nb"))
        assert applied.endswith("7 added, 0 changed, 0 removed, 0 unchanged\n")
        assert "added leaf-1:\n" in applied
        # set by hand on a synced asset: a login NetBox does not know is kept
        async with db.connection() as conn:
            leaf = await assets.get(conn, "default", "leaf-1")
            assert leaf is not None
            await assets.update(conn, "default", Asset(**{**vars(leaf), "username": "netops"}))

        nb.devices[1] = device(2, "leaf-2", "10.0.0.22", status="planned", tags=("maint",))
        del nb.devices[2]  # spine-1 is gone from NetBox
        assert _ok(opsc(cli_env, "inventory", "sync", "nb", "--dry-run")) == SECOND_DRY_RUN
        applied = _ok(opsc(cli_env, "inventory", "sync", "nb"))
        assert applied.endswith("0 added, 1 changed, 1 removed, 5 unchanged\n")
        assert "removed spine-1 (spine-1, 10.0.0.3)\n" in applied

    assert await _table(db) == [
        ("app-1", "10.1.0.1", "ubuntu", None, "active", "nb"),
        ("app-2", "10.1.0.2", "ubuntu", None, "active", "nb"),
        ("edge_router", "10.0.0.4", None, None, "active", "nb"),
        ("hand-1", "10.9.9.9", None, None, None, None),
        ("leaf-1", "10.0.0.1", "eos", "netops", "active", "nb"),
        ("leaf-2", "10.0.0.22", "eos", None, "planned", "nb"),
        ("localhost", "127.0.0.1", None, None, None, None),
        ("oob-1", "oob-1", "eos", None, "offline", "nb"),
    ]
    listed = _ok(opsc(cli_env, "inventory", "sources", "list"))
    assert "nb" in listed and "on demand" in listed
    assert "ok added 0 changed 1 removed 1 unchanged 5" in listed
    async with db.connection() as conn:
        events = await audit.list_events(conn, "default", "inventory_synced")
        added_event = await audit.list_events(conn, "default", "inventory_source_added")
    assert [e["payload"]["removed_ids"] for e in events] == [["spine-1"], []]
    assert added_event[0]["payload"]["token_ref"] == "netbox/token"


async def test_a_hand_made_asset_with_a_source_id_is_never_taken_over(db: Database) -> None:
    async with db.connection() as conn:
        await assets.ensure_tenant(conn, "default")
        await assets.add(conn, "default", Asset("leaf-1", "leaf-1", "192.0.2.1", "dev"))
    with netbox(_state()) as nb:
        await _add_nb(db, nb)
        plan = await service.sync(db, ADMIN, "nb")
    assert "leaf-1: not synced: an asset with this id exists (made by hand or imported)" in (
        plan.warnings
    )
    async with db.connection() as conn:
        kept = await assets.get(conn, "default", "leaf-1")
    assert kept is not None and kept.address == "192.0.2.1"
    # the source's devices vanish from the API: its own go, the hand-made one stays
    with netbox(NetBox(devices=[device(9, "other", "10.0.0.9")])) as nb:
        async with db.connection() as conn:
            await conn.execute(
                "UPDATE execution.inventory_sources SET url = %s WHERE name = 'nb'", (nb.url,)
            )
        await _store_token(db, nb.token)
        plan = await service.sync(db, ADMIN, "nb")
    assert sorted(a.asset_id for a in plan.removed) == [
        "app-1", "app-2", "edge_router", "leaf-2", "oob-1", "spine-1",
    ]  # fmt: skip
    assert [a.asset_id for a in plan.added] == ["other"]
    async with db.connection() as conn:
        kept = await assets.get(conn, "default", "leaf-1")
    assert kept is not None and kept.address == "192.0.2.1"


async def _store_token(db: Database, token: str) -> None:
    from opsconductor.config import load_settings
    from opsconductor.secret_store import put

    await put(db, load_settings().home, "default", "netbox/token", token, "test")


async def _add_nb(db: Database, nb: NetBox, every: str | None = None) -> None:
    await _store_token(db, nb.token)
    await service.add_source(
        db, ADMIN, name="nb", kind="netbox", url=nb.url, token_ref="netbox/token", every=every
    )


async def test_only_tenant_admins_manage_and_sync_sources(db: Database) -> None:
    operator = Caller("default", "otto", (rbac.BUILTIN_ROLES["operator"],), AuthMethod.TOKEN)
    with pytest.raises(PermissionDenied):
        await service.add_source(db, operator, name="nb", kind="netbox", url="http://x")
    with pytest.raises(PermissionDenied):
        await service.sync(db, operator, "nb", dry_run=True)
    with pytest.raises(PermissionDenied):
        await service.list_sources(db, operator)


async def test_a_due_sync_runs_once_among_several_workers(db: Database, database_url: str) -> None:
    with netbox(_state()) as nb:
        await _add_nb(db, nb, every="15m")
        assert await service.run_due(db, "w") == 0  # not due before one interval
        async with db.connection() as conn:
            await conn.execute("UPDATE execution.inventory_sources SET next_sync_at = now()")
        pools = [Database(database_url, max_size=2) for _ in range(4)]
        for pool in pools:
            await pool.open()
        try:
            ran = await asyncio.gather(
                *(service.run_due(p, f"worker-{i}") for i, p in enumerate(pools))
            )
            assert sum(ran) == 1
            assert [p for p, _ in nb.requests].count("/api/dcim/devices/?limit=1000") == 1
            # not due again until its next time; then once more
            assert sum(await asyncio.gather(*(service.run_due(p, "w") for p in pools))) == 0
            async with db.connection() as conn:
                await conn.execute(
                    "UPDATE execution.inventory_sources SET next_sync_at = now() - interval '1s'"
                )
            nb.token = "a-rotated-token-the-store-does-not-have"  # this one fails
            ran = await asyncio.gather(*(service.run_due(p, "w") for p in pools))
            assert sum(ran) == 1
        finally:
            for pool in pools:
                await pool.close()
    async with db.connection() as conn:
        source = await rows.get(conn, "default", "nb")
        synced = await audit.list_events(conn, "default", "inventory_synced")
        lag = await (
            await conn.execute(
                "SELECT next_sync_at - now() AS lag FROM execution.inventory_sources"
            )
        ).fetchone()
    assert len(synced) == 1 and synced[0]["actor_id"].startswith("worker-")
    assert source is not None and source.last_result is not None
    assert source.last_result.value == "failed"
    assert (
        source.last_error is not None
        and "HTTP 403: the token may not read this" in source.last_error
    )
    assert source.last_counts is None  # a failed sync changed nothing
    assert lag is not None and lag["lag"].total_seconds() > 14 * 60


needs_ansible = pytest.mark.skipif(
    ansible_inventory.program() is None,
    reason="ansible-inventory is not installed: pip install -e '.[ansible]' (in the dev extra)",
)

INI = """\
[web]
web-[1:2].example.com ansible_user=deploy

[db]
db-1 ansible_host=10.2.0.1 ansible_port=2222

[prod:children]
web
db

[all:vars]
opsc_environment=prod
"""


@needs_ansible
async def test_an_ansible_source_runs_the_real_ansible_inventory(
    db: Database, files_dir: Path
) -> None:
    inventory = files_dir / "inv"
    (inventory / "group_vars").mkdir(parents=True)
    (inventory / "hosts.ini").write_text(INI)
    (inventory / "group_vars" / "web.yml").write_text("http_port: 8080\n")
    (inventory / "extra.yml").write_text(
        "all:\n  hosts:\n    cache-1:\n      ansible_host: 10.3.0.1\n      ansible_become: true\n"
    )
    await service.add_source(db, ADMIN, name="dc1", kind="ansible", path="inv")
    plan = await service.sync(db, ADMIN, "dc1", dry_run=True)
    assert [a.asset_id for a in plan.added] == [
        "cache-1", "db-1", "web-1.example.com", "web-2.example.com",
    ]  # fmt: skip
    assert any(w.startswith("ansible_become (cache-1)") for w in plan.warnings)
    await service.sync(db, ADMIN, "dc1")
    async with db.connection() as conn:
        found = await rows.assets_with_owner(conn, "default")
    web, owner = found["web-1.example.com"]
    assert (web.address, web.username, web.environment, owner) == (
        "web-1.example.com", "deploy", "prod", "dc1",
    )  # fmt: skip
    assert web.vars == {"http_port": 8080}
    assert web.tags == {"web": "true", "prod": "true", "inventory_source": "dc1"}
    db1 = found["db-1"][0]
    assert (db1.address, db1.port, db1.environment) == ("10.2.0.1", 2222, "prod")
    # [all:vars] of one file applies to the hosts of every file, as in Ansible
    assert found["cache-1"][0].environment == "prod"


async def test_running_workers_sync_a_due_source_once_each_time(db: Database) -> None:
    from opsconductor.worker import Worker, WorkerOptions

    options = WorkerOptions(concurrency=1, inventory_every_s=0.1)
    workers = [Worker(db, actor_id=f"worker-{i}", options=options) for i in range(3)]
    with netbox(_state()) as nb:
        await _add_nb(db, nb, every="1m")
        async with db.connection() as conn:
            await conn.execute("UPDATE execution.inventory_sources SET next_sync_at = now()")
        serving = [asyncio.create_task(w.serve()) for w in workers]
        try:
            for _ in range(200):
                async with db.connection() as conn:
                    source = await rows.get(conn, "default", "nb")
                if source is not None and source.last_sync_at is not None:
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.0)  # three workers looked ten times more each meanwhile
        finally:
            for w in workers:
                w.stop()
            await asyncio.gather(*serving)
    assert source is not None and source.last_result is not None
    assert source.last_result.value == "ok"
    assert [p for p, _ in nb.requests].count("/api/dcim/devices/?limit=1000") == 1
    async with db.connection() as conn:
        synced = await audit.list_events(conn, "default", "inventory_synced")
    assert len(synced) == 1 and synced[0]["payload"]["added"] == 7


def test_the_same_commands_through_a_login(cli_env: dict[str, str], tmp_path: Path) -> None:
    from tests.served import logged_in, serving

    with netbox(_state()) as nb, serving(cli_env) as (url, _):
        admin = logged_in(cli_env, url, "ada", "admin", config=tmp_path / "ada")
        _ok(opsc(admin, "secrets", "set", "netbox/token", stdin=nb.token))
        add = ["inventory", "sources", "add", "nb", "--kind", "netbox", "--url", nb.url]
        added = opsc(
            admin, *add, "--token-ref", "netbox/token", "--environment", "prod", "--every", "1h"
        )
        assert _ok(added).strip() == "added inventory source nb (netbox, every 1h)"
        assert _ok(opsc(admin, "inventory", "sync", "nb", "--dry-run")) == FIRST_DRY_RUN
        assert _ok(opsc(admin, "inventory", "sync", "nb")).endswith(
            "7 added, 0 changed, 0 removed, 0 unchanged\n"
        )
        listed = _ok(opsc(admin, "inventory", "sources", "list"))
        assert "1h" in listed and "ok added 7" in listed
        viewer = logged_in(cli_env, url, "vic", "viewer", config=tmp_path / "vic")
        denied = opsc(viewer, "inventory", "sync", "nb", "--dry-run")
        assert denied.returncode == 2 and "tenant" in denied.stderr
        _ok(opsc(admin, "inventory", "sources", "remove", "nb"))
        assert "nb" not in _ok(opsc(admin, "inventory", "sources", "list")).split()
