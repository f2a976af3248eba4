"""Inventory sources are admin-configured, but what they read is untrusted: an inventory
path must stay in the tenant's files root, the NetBox token goes to the source's own
origin only and is stored nowhere, and a hostile API's answers are bounded."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from opsconductor import rbac
from opsconductor.config import load_settings
from opsconductor.connectors import ansible_inventory
from opsconductor.connectors import netbox as netbox_client
from opsconductor.db import assets
from opsconductor.db import inventory_sources as rows
from opsconductor.db.connection import Database
from opsconductor.errors import BadInput, SourceError
from opsconductor.secret_store import put
from opsconductor.services import inventory_sources as service
from opsconductor.services.caller import AuthMethod, Caller
from tests.netbox_lab import NetBox, device, netbox
from tests.served import opsc

pytestmark = pytest.mark.integration

needs_ansible = pytest.mark.skipif(
    ansible_inventory.program() is None,
    reason="ansible-inventory is not installed: pip install -e '.[ansible]' (in the dev extra)",
)
ADMIN = Caller("default", "ada", (rbac.BUILTIN_ROLES["admin"],), AuthMethod.TOKEN)


async def _netbox_source(db: Database, nb: NetBox) -> None:
    await put(db, load_settings().home, "default", "nb/token", nb.token, "test")
    await service.add_source(db, ADMIN, name="nb", kind="netbox", url=nb.url, token_ref="nb/token")


async def _asset_ids(db: Database) -> list[str]:
    async with db.connection() as conn:
        return [a.asset_id for a in await assets.list_all(conn, "default")]


@pytest.mark.parametrize(
    "path",
    ["/etc", "/etc/hosts", "../default-other", "inv/../../x", "", "linked"],
)
async def test_an_inventory_path_outside_the_files_root_is_refused(
    db: Database, files_dir: Path, tmp_path: Path, path: str
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "hosts.ini").write_text("evil ansible_host=10.6.6.6\n")
    (files_dir / "linked").symlink_to(outside)
    with pytest.raises(BadInput, match="path"):
        await service.add_source(db, ADMIN, name="inv", kind="ansible", path=path)
    async with db.connection() as conn:
        assert await rows.list_all(conn, "default") == []


@needs_ansible
async def test_a_link_inside_an_inventory_to_a_worker_file_is_refused(
    db: Database, files_dir: Path, tmp_path: Path
) -> None:
    """A parse error of ansible-inventory quotes the line: a link to a key file of the
    worker would leak a line of it into the source's last error."""
    secret = tmp_path / "worker-secret"
    secret.write_text("TOP-SECRET-LINE not an inventory\n")
    inventory = files_dir / "inv"
    inventory.mkdir()
    (inventory / "hosts.ini").write_text("[web]\nweb-1\n")
    await service.add_source(db, ADMIN, name="inv", kind="ansible", path="inv")
    (inventory / "stolen").symlink_to(secret)
    with pytest.raises(SourceError, match="a link out of this tenant's files root"):
        await service.sync(db, ADMIN, "inv")
    # through a link to another folder of the root, whose link leads out
    (inventory / "stolen").unlink()
    (files_dir / "elsewhere").mkdir()
    (files_dir / "elsewhere" / "stolen").symlink_to(secret)
    (inventory / "group_vars").symlink_to(files_dir / "elsewhere")
    with pytest.raises(SourceError, match="group_vars/stolen: a link out"):
        await service.sync(db, ADMIN, "inv")
    async with db.connection() as conn:
        found = await rows.get(conn, "default", "inv")
    assert found is not None and found.last_error is not None
    assert "TOP-SECRET" not in found.last_error
    assert await _asset_ids(db) == ["localhost"]


def _constructed(files_dir: Path, compose: str) -> None:
    inventory = files_dir / "inv"
    inventory.mkdir()
    (inventory / "01-hosts.yml").write_text("all:\n  hosts:\n    h1:\n      a: 1\n")
    (inventory / "02-constructed.yml").write_text(
        f"plugin: ansible.builtin.constructed\nstrict: false\ncompose:\n  leaked: {compose}\n"
    )


@needs_ansible
async def test_a_plugin_config_is_not_run_unless_the_installation_enables_it(
    db: Database, files_dir: Path, tmp_path: Path
) -> None:
    """A plugin config is templated by Ansible: its lookups would run on the worker."""
    marker = tmp_path / "ran"
    _constructed(files_dir, f"lookup('pipe', 'touch {marker}')")
    await service.add_source(db, ADMIN, name="inv", kind="ansible", path="inv")
    with pytest.raises(SourceError, match="Plugin configuration YAML file"):
        await service.sync(db, ADMIN, "inv")
    assert not marker.exists()
    assert await _asset_ids(db) == ["localhost"]


@needs_ansible
async def test_ansible_inventory_runs_without_the_workers_environment(
    db: Database, files_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Even with a templating plugin enabled, no variable of the worker (the secret key,
    the database URL) is there for a lookup to read."""
    monkeypatch.setenv("OPSC_INVENTORY_PLUGINS", "ansible.builtin.constructed")
    monkeypatch.setenv("OPSC_SECRET_KEY", "worker-only-secret-key")
    _constructed(files_dir, "lookup('env', 'OPSC_SECRET_KEY') ~ '|' ~ lookup('env', 'HOME')")
    await service.add_source(db, ADMIN, name="inv", kind="ansible", path="inv")
    plan = await service.sync(db, ADMIN, "inv")
    [host] = plan.added
    assert "worker-only-secret-key" not in repr(host.vars)
    assert "|" in repr(host.vars["leaked"])  # the lookup ran, and found nothing of ours
    assert str(Path.home()) not in repr(host.vars["leaked"])


async def test_a_next_link_to_another_host_is_refused_and_gets_no_token(db: Database) -> None:
    with (
        netbox(NetBox(devices=[])) as elsewhere,
        netbox(NetBox(devices=[device(i, f"d{i}", f"10.0.0.{i}") for i in range(5)])) as nb,
    ):
        # same host, another port: another origin too
        nb.next_override["devices"] = f"{elsewhere.url}/api/dcim/devices/?limit=2&offset=2"
        await _netbox_source(db, nb)
        with pytest.raises(SourceError, match=r"next: .* leaves .*: refused"):
            await service.sync(db, ADMIN, "nb", dry_run=True)
    assert elsewhere.requests == []
    assert await _asset_ids(db) == ["localhost"]


async def test_the_token_is_in_no_row_log_response_or_output(
    db: Database, cli_env: dict[str, str], database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with netbox(NetBox(devices=[device(1, "d1", "10.0.0.1")])) as nb:
        token = nb.token
        stored = opsc(cli_env, "secrets", "set", "nb/token", stdin=token)
        assert stored.returncode == 0, stored.stderr
        outputs = [
            opsc(
                cli_env, "inventory", "sources", "add", "nb", "--kind", "netbox",
                "--url", nb.url, "--token-ref", "nb/token", "--every", "1h",
            ),
            opsc(cli_env, "inventory", "sync", "nb", "--dry-run"),
            opsc(cli_env, "inventory", "sync", "nb"),
        ]  # fmt: skip
        nb.token = "another"  # the next sync fails: its error is stored and printed
        outputs.append(opsc(cli_env, "inventory", "sync", "nb"))
        outputs.append(opsc(cli_env, "inventory", "sources", "list"))
    assert [o.returncode for o in outputs] == [0, 0, 0, 1, 0]
    assert "HTTP 403" in outputs[3].stderr + outputs[3].stdout
    for o in outputs:
        assert token not in o.stdout + o.stderr
    assert token not in caplog.text
    async with db.connection() as conn:
        # every text column of every table of ours, as text
        tables = await (
            await conn.execute(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = 'execution' AND table_type = 'BASE TABLE'"
            )
        ).fetchall()
        for table in tables:
            name = table["table_name"]
            cur = await conn.execute(f'SELECT t::text AS row FROM execution."{name}" t')
            for row in await cur.fetchall():
                assert token not in row["row"], name


async def test_hostile_pages_are_bounded(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    with netbox(NetBox(devices=[device(i, f"d{i}", f"10.0.0.{i}") for i in range(9)])) as nb:
        await _netbox_source(db, nb)
        # pages past the bound (9 devices at 2 a page: 5 pages)
        monkeypatch.setattr(netbox_client, "MAX_PAGES", 3)
        with pytest.raises(SourceError, match="more than 3 pages"):
            await service.sync(db, ADMIN, "nb")
        monkeypatch.undo()
        # a page that links to itself
        nb.next_override["devices"] = f"{nb.url}/api/dcim/devices/?limit=1000"
        with pytest.raises(SourceError, match="links back"):
            await service.sync(db, ADMIN, "nb")
        nb.next_override.clear()
        hostile = {
            "huge": b'{"count": 1, "next": null, "results": [{"name": "'
            + b"x" * 9_000_000
            + b'"}]}',
            "deep": b'{"count": 1, "next": null, "results": ' + b"[" * 5000 + b"]" * 5000 + b"}",
            "not json": b"<html>proxy error</html>",
            "control": json.dumps(
                {"count": 1, "next": None, "results": [{"name": "a\x1b[2Jb"}]}
            ).encode(),
            "not a list": b'{"detail": "nope"}',
        }
        for why, body in hostile.items():
            nb.override["devices"] = body
            with pytest.raises(SourceError) as caught:
                await service.sync(db, ADMIN, "nb")
            assert len(str(caught.value)) < 3000, why
    assert await _asset_ids(db) == ["localhost"]
    async with db.connection() as conn:
        found = await rows.get(conn, "default", "nb")
    assert found is not None and found.last_result is not None
    assert found.last_result.value == "failed"


async def test_a_stalling_server_cannot_hold_the_sync(db: Database) -> None:
    with netbox(NetBox(devices=[device(1, "d1", "10.0.0.1")], delay_s=3.0)) as nb:
        with pytest.raises(SourceError, match="not read within 1 s"):
            await netbox_client.list_objects(nb.url, nb.token, request_s=10.0, total_s=1.0)
        with pytest.raises(SourceError, match="ReadTimeout"):
            await netbox_client.list_objects(nb.url, nb.token, request_s=0.5, total_s=10.0)


async def test_an_empty_answer_does_not_empty_the_inventory(db: Database) -> None:
    with netbox(NetBox(devices=[device(1, "d1", "10.0.0.1")])) as nb:
        await _netbox_source(db, nb)
        await service.sync(db, ADMIN, "nb")
        nb.devices.clear()
        with pytest.raises(SourceError, match="listed no assets; refusing to remove its 1"):
            await service.sync(db, ADMIN, "nb")
    assert await _asset_ids(db) == ["d1", "localhost"]


async def test_a_url_with_credentials_or_another_scheme_is_refused(db: Database) -> None:
    for url in ("http://user:pw@nb.example", "file:///etc/passwd", "ftp://nb", "http://nb/?a=b"):
        with pytest.raises(BadInput, match="url"):
            await service.add_source(db, ADMIN, name="nb", kind="netbox", url=url)


@needs_ansible
async def test_an_executable_in_the_inventory_folder_is_never_run(
    db: Database, files_dir: Path, tmp_path: Path
) -> None:
    """Ansible runs an executable inventory file as a dynamic inventory script (its
    ``script`` plugin) on the worker: only the static readers are enabled, so it is read as
    text at most, never run."""
    marker = tmp_path / "ran"
    inventory = files_dir / "inv"
    inventory.mkdir()
    (inventory / "01-hosts.yml").write_text("all:\n  hosts:\n    h1:\n      a: 1\n")
    script = inventory / "02-dynamic.sh"
    script.write_text(f'#!/bin/sh\ntouch {marker}\necho \'{{"all": {{"hosts": ["evil"]}}}}\'\n')
    script.chmod(0o755)
    await service.add_source(db, ADMIN, name="inv", kind="ansible", path="inv")
    try:
        plan = await service.sync(db, ADMIN, "inv", dry_run=True)
    except SourceError:
        pass  # refused whole: fine too
    else:
        assert "evil" not in {host.asset_id for host in plan.added}
    assert not marker.exists()


@needs_ansible
async def test_ansible_inventory_runs_in_the_sandbox_not_as_the_worker(
    db: Database, files_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An enabled templating plugin's lookups run where ansible-inventory runs: in the
    local steps' sandbox, as its unprivileged user, with none of the worker's files, so a
    lookup can neither read a file of ours nor write one."""
    monkeypatch.setenv("OPSC_INVENTORY_PLUGINS", "ansible.builtin.constructed")
    secret = tmp_path / "worker-secret"
    secret.write_text("TOP-SECRET-LINE\n")
    marker = tmp_path / "ran"
    probe = f"cat {secret} {files_dir}/inv/01-hosts.yml 2>&1; touch {marker} 2>&1; id -u"
    _constructed(files_dir, f"lookup('pipe', {probe!r})")
    await service.add_source(db, ADMIN, name="inv", kind="ansible", path="inv")
    plan = await service.sync(db, ADMIN, "inv", dry_run=True)
    [host] = plan.added
    leaked = str(host.vars["leaked"])
    assert "TOP-SECRET" not in leaked and "No such file" in leaked
    assert "a: 1" not in leaked  # not even the tenant's own files root, only the copy
    assert not marker.exists()
    uid = int(leaked.split()[-1])
    assert uid != 0 and uid != os.geteuid()


@needs_ansible
async def test_a_file_swapped_for_a_link_after_the_walk_listed_it_is_refused(
    db: Database, files_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The walk lists a regular file; before it is copied, it becomes a link to a worker
    file: the copy judges the file it opened, not what the walk saw."""
    secret = tmp_path / "worker-secret"
    secret.write_text("TOP-SECRET-LINE not an inventory\n")
    inventory = files_dir / "inv"
    inventory.mkdir()
    (inventory / "hosts.ini").write_text("[web]\nweb-1\n")
    await service.add_source(db, ADMIN, name="inv", kind="ansible", path="inv")
    walk = os.walk

    def swapping_walk(top: str, **kwargs: bool) -> Iterator[tuple[str, list[str], list[str]]]:
        for folder, dirs, files in walk(top, **kwargs):
            if "hosts.ini" in files:  # listed as a regular file; now swapped
                (Path(folder) / "hosts.ini").unlink()
                (Path(folder) / "hosts.ini").symlink_to(secret)
            yield folder, dirs, files

    monkeypatch.setattr(os, "walk", swapping_walk)
    with pytest.raises(SourceError, match=r"inv/hosts.ini: a link out of this tenant's files"):
        await service.sync(db, ADMIN, "inv")
    monkeypatch.undo()
    async with db.connection() as conn:
        found = await rows.get(conn, "default", "inv")
    assert found is not None and found.last_error is not None
    assert "TOP-SECRET" not in found.last_error
    assert await _asset_ids(db) == ["localhost"]
