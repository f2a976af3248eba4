"""Ansible inventories imported faithfully: ranges, [all:vars], children and precedence,
old ssh_* forms, key files, become, custom vars; warnings for what is not applied; and
`opsc assets import` never replacing an asset without --update."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest

from opsconductor.errors import BadInput
from opsconductor.inventory import Asset
from opsconductor.inventory_import import read_inventory
from opsconductor.services.inventory import key_credentials
from tests.served import logged_in, opsc, serving

INI = """\
# Production inventory, as Ansible users write it
localhost ansible_connection=local

[all:vars]
ansible_user=deploy
ntp_server=ntp.example.com
env=prod

[web]
web-[1:3].prod.example.com http_port=8080
web-canary.prod.example.com ansible_ssh_host=10.0.0.50 ansible_ssh_port=2222 ansible_ssh_user=canary

[web:vars]
ansible_become=true
ansible_become_user=root
http_port=80

[db]
db[01:02] ansible_private_key_file=keys/db_ed25519
redis1 ansible_ssh_host=10.0.2.7 ansible_ssh_port=6022 \
ansible_ssh_private_key_file=/nonexistent/redis_ed25519

[db:vars]
backup=True

[cache]
mc-[a:b]:2200 max_mem=512

[prod:children]
web
db

[prod:vars]
opsc_environment=prod
ansible_user=ops
ansible_python_interpreter=/usr/bin/python3
ansible_become_pass=hunter2

[win]
winbox ansible_connection=winrm
"""

# (id, address, environment, connection, port, user, tags, vars) per asset, sorted by id
INI_TABLE: list[tuple[Any, ...]] = (
    [
        (
            "db01",
            "db01",
            "prod",
            "ssh",
            None,
            "ops",
            "db,prod",
            {
                "ntp_server": "ntp.example.com",
                "env": "prod",
                "backup": "True",
                "ansible_python_interpreter": "/usr/bin/python3",
            },
        ),
        (
            "db02",
            "db02",
            "prod",
            "ssh",
            None,
            "ops",
            "db,prod",
            {
                "ntp_server": "ntp.example.com",
                "env": "prod",
                "backup": "True",
                "ansible_python_interpreter": "/usr/bin/python3",
            },
        ),
        (
            "localhost",
            "localhost",
            "dev",
            "local",
            None,
            None,
            "",
            {"ntp_server": "ntp.example.com", "env": "prod"},
        ),
        (
            "mc-a",
            "mc-a",
            "dev",
            "ssh",
            2200,
            "deploy",
            "cache",
            {"ntp_server": "ntp.example.com", "env": "prod", "max_mem": 512},
        ),
        (
            "mc-b",
            "mc-b",
            "dev",
            "ssh",
            2200,
            "deploy",
            "cache",
            {"ntp_server": "ntp.example.com", "env": "prod", "max_mem": 512},
        ),
        (
            "redis1",
            "10.0.2.7",
            "prod",
            "ssh",
            6022,
            "ops",
            "db,prod",
            {
                "ntp_server": "ntp.example.com",
                "env": "prod",
                "backup": "True",
                "ansible_python_interpreter": "/usr/bin/python3",
            },
        ),
    ]
    + [
        (
            f"web-{n}.prod.example.com",
            f"web-{n}.prod.example.com",
            "prod",
            "ssh",
            None,
            "ops",
            "prod,web",
            {
                "ntp_server": "ntp.example.com",
                "env": "prod",
                "http_port": 8080,
                "ansible_become": "true",
                "ansible_become_user": "root",
                "ansible_python_interpreter": "/usr/bin/python3",
            },
        )
        for n in (1, 2, 3)
    ]
    + [
        # the old ansible_ssh_* forms win over ansible_* (as Ansible's ssh plugin reads them)
        (
            "web-canary.prod.example.com",
            "10.0.0.50",
            "prod",
            "ssh",
            2222,
            "canary",
            "prod,web",
            {
                "ntp_server": "ntp.example.com",
                "env": "prod",
                "http_port": "80",
                "ansible_become": "true",
                "ansible_become_user": "root",
                "ansible_python_interpreter": "/usr/bin/python3",
            },
        ),
    ]
)

SEVEN = "db01, db02, redis1, web-1.prod.example.com, web-2.prod.example.com and 2 more"
WEB = (
    "web-1.prod.example.com, web-2.prod.example.com, web-3.prod.example.com, "
    "web-canary.prod.example.com"
)
INI_WARNINGS = [
    "winbox: not imported: ansible_connection=winrm is not supported (local, ssh)",
    f"ansible_become ({WEB}): kept as asset.vars.ansible_become, not applied: steps use "
    "sudo only where the plan step says 'become: true'",
    f"ansible_become_pass ({SEVEN}): not stored (asset variables are not secret): store it "
    "as a secret and set the asset's credential_ref",
    f"ansible_become_user ({WEB}): kept as asset.vars.ansible_become_user, not applied: "
    "steps use sudo only where the plan step says 'become: true'",
    f"ansible_python_interpreter ({SEVEN}): kept as asset.vars.ansible_python_interpreter, "
    "not applied by OpsConductor's connectors",
    "env (localhost, mc-a, mc-b): kept as asset.vars.env; the asset's environment comes "
    "from opsc_environment or --environment",
]

YAML = """\
all:
  vars:
    ansible_user: admin
    dns: 10.0.0.2
  hosts:
    bastion.example.com:
      ansible_port: 2022
  children:
    app:
      vars:
        app_port: 8000
        dns: 10.1.0.2
      hosts:
        app-[01:03]:
      children:
        app_canary:
          vars: {app_port: 8001, ansible_become: true}
          hosts:
            app-03:
              ansible_ssh_user: canary
              ansible_ssh_private_key_file: keys/canary
              features: [tls, http2]
    legacy:
      hosts:
        old1: {ansible_ssh_host: 192.0.2.9, ansible_ssh_port: 2200, opsc_environment: staging}
"""

YAML_TABLE: list[tuple[Any, ...]] = [
    ("app-01", "app-01", "dev", "ssh", None, "admin", "app", {"dns": "10.1.0.2", "app_port": 8000}),
    ("app-02", "app-02", "dev", "ssh", None, "admin", "app", {"dns": "10.1.0.2", "app_port": 8000}),
    # child group beats parent group, host beats both
    (
        "app-03",
        "app-03",
        "dev",
        "ssh",
        None,
        "canary",
        "app,app_canary",
        {"dns": "10.1.0.2", "app_port": 8001, "ansible_become": True, "features": ["tls", "http2"]},
    ),
    (
        "bastion.example.com",
        "bastion.example.com",
        "dev",
        "ssh",
        2022,
        "admin",
        "",
        {"dns": "10.0.0.2"},
    ),
    ("old1", "192.0.2.9", "staging", "ssh", 2200, "admin", "legacy", {"dns": "10.0.0.2"}),
]


def table(assets: list[Asset]) -> list[tuple[Any, ...]]:
    return [
        (
            a.asset_id,
            a.address,
            a.environment,
            a.connection_type,
            a.port,
            a.username,
            ",".join(sorted(a.tags)),
            dict(a.vars),
        )
        for a in assets
    ]


def test_realistic_ini_inventory_exact_assets_and_warnings() -> None:
    parsed = read_inventory(INI, "hosts.ini")
    assert table(parsed.assets) == INI_TABLE
    assert all(a.hostname == a.asset_id for a in parsed.assets)
    assert all(a.credential_ref is None for a in parsed.assets)  # key files: see below
    assert parsed.key_files == {
        "db01": "keys/db_ed25519",
        "db02": "keys/db_ed25519",
        "redis1": "/nonexistent/redis_ed25519",
    }
    assert parsed.warnings == INI_WARNINGS
    assert not any("hunter2" in str(a.vars) for a in parsed.assets)


def test_realistic_yaml_inventory_exact_assets_and_warnings() -> None:
    parsed = read_inventory(YAML, "hosts.yml")
    assert table(parsed.assets) == YAML_TABLE
    assert parsed.key_files == {"app-03": "keys/canary"}
    assert parsed.warnings == [
        "ansible_become (app-03): kept as asset.vars.ansible_become, not applied: steps use "
        "sudo only where the plan step says 'become: true'",
    ]


def test_key_files_become_file_credentials_only_inside_the_files_root(
    tmp_path: Path,
) -> None:
    root = tmp_path / "files" / "default"
    (root / "keys").mkdir(parents=True)
    (root / "keys" / "db_ed25519").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    outside = tmp_path / "id_outside"
    outside.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    unreadable = root / "keys" / "locked"
    unreadable.mkdir()  # unreadable as a file, even to root
    text = INI.replace("/nonexistent/redis_ed25519", str(outside)) + (
        f"[locked]\nlocked1 ansible_ssh_private_key_file={unreadable}\n"
        "gone1 ansible_ssh_private_key_file=keys/missing\n"
    )
    found, warnings = key_credentials(read_inventory(text, "hosts.ini"), root)
    refs = {a.asset_id: a.credential_ref for a in found if a.credential_ref}
    assert refs == {"db01": "file:keys/db_ed25519", "db02": "file:keys/db_ed25519"}
    assert warnings[0] == (
        "gone1: key file keys/missing: unreadable (No such file or directory): not imported"
    )
    assert warnings[1] == (
        f"locked1: key file {unreadable}: unreadable (Is a directory): not imported"
    )
    assert warnings[-1] == (
        f"redis1: key file {outside}: outside this tenant's files root {root}: not "
        f"imported; copy it in with 'opsc files put {outside} NAME' and set credential_ref "
        "file:NAME (or re-import with the key file named NAME)"
    )


def test_host_patterns() -> None:
    def ids(pattern: str) -> list[str]:
        return [a.asset_id for a in read_inventory(f"[g]\n{pattern}\n", "inv").assets]

    assert ids("web-[1:3].example.com") == [f"web-{n}.example.com" for n in (1, 2, 3)]
    assert ids("node[08:10]") == ["node08", "node09", "node10"]
    assert ids("db-[a:c]") == ["db-a", "db-b", "db-c"]
    assert ids("r[0:10:5]") == ["r0", "r10", "r5"]  # sorted by id
    assert ids("rack[1:2]-u[a:b]") == ["rack1-ua", "rack1-ub", "rack2-ua", "rack2-ub"]
    with pytest.raises(BadInput, match=r"inv:2: r\[x:yz\]: range \[x:yz\] must be numbers"):
        read_inventory("[g]\nr[x:yz]\n", "inv")
    with pytest.raises(BadInput, match=r"h\[0:999\]\[0:99\] names more than 10000 hosts"):
        read_inventory("[g]\nh[0:999][0:99]\n", "inv")
    with pytest.raises(BadInput, match=r"range \[3:1\] is empty"):
        read_inventory("[g]\nr[3:1]\n", "inv")


def test_import_reports_changes_and_needs_update(
    cli_env: dict[str, str], database_url: str, tmp_path: Path
) -> None:
    inventory = tmp_path / "hosts.ini"
    inventory.write_text(INI)
    first = opsc(cli_env, "assets", "import", str(inventory))
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    for warning in INI_WARNINGS:
        assert f"warning: {warning}" in lines
    assert (
        "warning: localhost: not imported: the built-in asset 'localhost' (local, local) "
        "is kept; plans target it as is" in lines
    )
    assert any(line.startswith("warning: redis1: key file /nonexistent/") for line in lines)
    assert lines[-1] == "imported 9 assets (9 new, 0 updated, 0 unchanged)"

    changed = INI.replace("ansible_ssh_port=6022", "ansible_ssh_port=6023").replace(
        "max_mem=512", "max_mem=1024"
    )
    inventory.write_text(changed)
    again = opsc(cli_env, "assets", "import", str(inventory))
    assert again.returncode == 0, again.stderr
    out = again.stdout
    assert "would update mc-a:\n  vars.max_mem: 512 -> 1024\n" in out
    assert "would update redis1:\n  port: 6022 -> 6023\n" in out
    assert out.splitlines()[-1] == (
        "imported 0 assets (0 new, 0 updated, 6 unchanged); 3 existing assets differ: "
        "re-run with --update"
    )
    with psycopg.connect(database_url) as conn:
        port = conn.execute(
            "SELECT port FROM execution.assets WHERE tenant_id = 'default' AND asset_id = 'redis1'"
        ).fetchone()
        assert port == (6022,)  # not replaced without --update

    applied = opsc(cli_env, "assets", "import", str(inventory), "--update")
    assert applied.returncode == 0, applied.stderr
    assert "updated redis1:\n  port: 6022 -> 6023\n" in applied.stdout
    assert applied.stdout.splitlines()[-1] == ("imported 3 assets (0 new, 3 updated, 6 unchanged)")
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT asset_id, address, port, username, environment, connection_type, vars"
            " FROM execution.assets WHERE tenant_id = 'default'"
            " AND asset_id IN ('localhost', 'mc-b', 'redis1') ORDER BY asset_id"
        ).fetchall()
    assert rows == [
        ("localhost", "127.0.0.1", None, None, "local", "local", {}),
        (
            "mc-b",
            "mc-b",
            2200,
            "deploy",
            "dev",
            "ssh",
            {"ntp_server": "ntp.example.com", "env": "prod", "max_mem": 1024},
        ),
        (
            "redis1",
            "10.0.2.7",
            6023,
            "ops",
            "prod",
            "ssh",
            {
                "ntp_server": "ntp.example.com",
                "env": "prod",
                "backup": "True",
                "ansible_python_interpreter": "/usr/bin/python3",
            },
        ),
    ]


def test_imported_vars_reach_templates() -> None:
    from opsconductor.templating import asset_context, render

    canary = next(
        a for a in read_inventory(INI, "hosts.ini").assets if a.asset_id.startswith("web-can")
    )
    text = "{{ asset.vars.http_port }} {{ asset.vars.ntp_server }} {{ asset.vars.env }}"
    assert render(text, asset_context(canary), "steps[0].command") == "80 ntp.example.com prod"


def test_import_over_the_api_reports_the_same(
    cli_env: dict[str, str], database_url: str, tmp_path: Path
) -> None:
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(YAML)
    with serving(cli_env, "--workers", "0") as (url, _):
        alice = logged_in(cli_env, url, "alice", "admin", config=tmp_path / "alice")
        first = opsc(alice, "assets", "import", str(inventory))
        assert first.returncode == 0, first.stderr
        assert (
            "warning: app-03: key file keys/canary: not imported over the API (the files "
            "root is the server's): 'opsc files put' it there and set credential_ref file:NAME"
        ) in first.stdout
        assert first.stdout.splitlines()[-1] == "imported 5 assets (5 new, 0 updated, 0 unchanged)"
        inventory.write_text(YAML.replace("app_port: 8001", "app_port: 8002"))
        again = opsc(alice, "assets", "import", str(inventory))
        assert "would update app-03:\n  vars.app_port: 8001 -> 8002\n" in again.stdout
        assert again.stdout.splitlines()[-1].endswith(
            "1 existing assets differ: re-run with --update"
        )
        applied = opsc(alice, "assets", "import", str(inventory), "--update")
        assert (
            applied.stdout.splitlines()[-1] == "imported 1 assets (0 new, 1 updated, 4 unchanged)"
        )
    with psycopg.connect(database_url) as conn:
        found = conn.execute(
            "SELECT vars FROM execution.assets WHERE tenant_id = 'default' AND asset_id = 'app-03'"
        ).fetchone()
    assert found == (
        {"dns": "10.1.0.2", "app_port": 8002, "ansible_become": True, "features": ["tls", "http2"]},
    )


def test_a_reimport_keeps_what_the_file_cannot_say() -> None:
    from dataclasses import replace

    from opsconductor.inventory_import import plan_import

    parsed = read_inventory(INI, "hosts.ini").assets
    stored = {a.asset_id: a for a in parsed}
    stored["redis1"] = replace(stored["redis1"], os="debian", credential_ref="kv/ssh/redis")
    stored["mc-a"] = replace(stored["mc-a"], port=22, credential_ref="env:MC_KEY")
    plan = plan_import(stored, parsed)
    assert plan.new == []
    assert [str(c) for c in plan.changed["mc-a"][1]] == ["port: 22 -> 2200"]
    assert plan.changed["mc-a"][0].credential_ref == "env:MC_KEY"
    assert "redis1" in plan.unchanged and "localhost" in plan.unchanged
