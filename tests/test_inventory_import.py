"""Inventory import: our YAML, Ansible INI and YAML; and `opsc assets import` end to end."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from opsconductor.errors import BadInput
from opsconductor.inventory import Asset
from opsconductor.inventory_import import parse_inventory
from tests.served import opsc

ANSIBLE_INI = """\
# production web tier
[web]
web1 ansible_host=10.0.0.11 ansible_port=2222
web2 ansible_host=10.0.0.12 ansible_user=ops

[db]
db1 ansible_host=10.0.1.5

[prod:children]
web
db

[prod:vars]
ansible_user=deploy
opsc_environment=prod

[tools]
runner ansible_connection=local
"""

ANSIBLE_YAML = """\
all:
  vars:
    ansible_user: admin
  children:
    web:
      hosts:
        web1: {ansible_host: 10.0.0.11, ansible_port: 2222}
        web2:
      children:
        canary:
          hosts:
            web3: {ansible_host: 10.0.0.13, ansible_user: canary}
"""

OURS = """\
assets:
  - id: web-1
    hostname: web-1.example.com
    address: 10.0.0.1
    port: 2200
    connection: ssh
    username: deploy
    credential_ref: env:WEB_KEY
    environment: staging
    os: debian
    tags: {role: web}
  - id: local-tools
    connection: local
"""


def by_id(text: str, environment: str = "dev") -> dict[str, Asset]:
    return {a.asset_id: a for a in parse_inventory(text, "inv", environment)}


def test_ansible_ini_hosts_groups_children_and_vars() -> None:
    found = by_id(ANSIBLE_INI)
    web1, web2, db1, runner = (found[h] for h in ("web1", "web2", "db1", "runner"))
    assert (web1.address, web1.port, web1.username) == ("10.0.0.11", 2222, "deploy")
    assert web2.username == "ops"  # host var beats group var
    assert web1.tags == {"web": "true", "prod": "true"}
    assert db1.tags == {"db": "true", "prod": "true"}
    assert web1.environment == "prod"
    assert runner.connection_type == "local" and runner.environment == "dev"
    assert web1.connection_type == "ssh"


def test_ansible_yaml_nested_children_inherit_vars() -> None:
    found = by_id(ANSIBLE_YAML, environment="staging")
    assert sorted(found) == ["web1", "web2", "web3"]
    web3 = found["web3"]
    assert web3.tags == {"canary": "true", "web": "true"}
    assert web3.username == "canary"
    assert found["web2"].username == "admin"
    assert found["web2"].address == "web2"
    assert found["web1"].port == 2222 and web3.environment == "staging"


def test_our_format_and_its_errors() -> None:
    found = by_id(OURS)
    web = found["web-1"]
    assert (web.hostname, web.address, web.port, web.credential_ref) == (
        "web-1.example.com",
        "10.0.0.1",
        2200,
        "env:WEB_KEY",
    )
    assert found["local-tools"].connection_type == "local"
    with pytest.raises(BadInput, match=r"inv: assets\[0\]\.colour: unknown field"):
        parse_inventory("assets:\n  - {id: a, colour: red}\n", "inv")
    with pytest.raises(BadInput, match=r"inv: assets\[0\]\.port: must be between 1 and 65535"):
        parse_inventory("assets:\n  - {id: a, port: 70000}\n", "inv")
    with pytest.raises(BadInput, match=r"inv:3: expected key=value"):
        parse_inventory("[web]\nweb1 ansible_host=1.2.3.4\nweb2 oops\n", "inv")


def test_opsc_assets_import_is_rerunnable(
    cli_env: dict[str, str], database_url: str, tmp_path: Path
) -> None:
    inventory = tmp_path / "hosts.ini"
    inventory.write_text(ANSIBLE_INI)
    first = opsc(cli_env, "assets", "import", str(inventory))
    assert first.returncode == 0, first.stderr
    assert first.stdout == "imported 4 assets (4 new, 0 updated, 0 unchanged)\n"
    inventory.write_text(ANSIBLE_INI.replace("10.0.1.5", "10.0.1.6"))
    again = opsc(cli_env, "assets", "import", str(inventory), "--update")
    assert "updated db1:\n  address: '10.0.1.5' -> '10.0.1.6'\n" in again.stdout
    assert "imported 1 assets (0 new, 1 updated, 3 unchanged)" in again.stdout
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT asset_id, address, username, tags->>'prod' FROM execution.assets"
            " WHERE tenant_id = 'default' AND asset_id <> 'localhost' ORDER BY asset_id"
        ).fetchall()
    assert rows == [
        ("db1", "10.0.1.6", "deploy", "true"),
        ("runner", "runner", None, None),
        ("web1", "10.0.0.11", "deploy", "true"),
        ("web2", "10.0.0.12", "ops", "true"),
    ]
    bad = opsc(cli_env, "assets", "import", str(tmp_path / "missing.ini"))
    assert bad.returncode == 2 and "cannot read" in bad.stderr
