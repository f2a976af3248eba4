"""An imported Ansible inventory must not turn into a way to read the worker's files or to
store passwords in plain asset data."""

from __future__ import annotations

from pathlib import Path

from opsconductor.inventory_import import read_inventory
from opsconductor.services.inventory import key_credentials

INVENTORY = """\
[web]
web1 ansible_ssh_private_key_file={outside}
web2 ansible_ssh_private_key_file=../secret.key
web3 ansible_ssh_private_key_file=link.key
web4 ansible_password=s3cret ansible_become_pass='also s3cret' ansible_ssh_pass=third

[web:vars]
ansible_sudo_pass=fourth
"""


def test_key_files_outside_the_files_root_never_become_credentials(tmp_path: Path) -> None:
    root = tmp_path / "files" / "acme"
    root.mkdir(parents=True)
    secret = tmp_path / "files" / "secret.key"  # e.g. another tenant's or the store's key
    secret.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    (root / "link.key").symlink_to(secret)  # a link in the root that leads out of it
    text = INVENTORY.format(outside=secret)
    found, warnings = key_credentials(read_inventory(text, "hosts.ini"), root)
    assert [a.credential_ref for a in found] == [None, None, None, None]
    assert [w.split(":")[0] for w in warnings] == ["web1", "web2", "web3"]
    assert f"outside this tenant's files root {root}: not imported" in warnings[0]
    assert f"not imported: '{secret}' is outside this tenant's files root" in warnings[1]
    link = root / "link.key"
    assert f"'{link}' (a link to {secret}) is outside this tenant's files root" in warnings[2]


def test_inventory_passwords_are_not_kept_in_asset_vars() -> None:
    parsed = read_inventory(INVENTORY.format(outside="/k"), "hosts.ini")
    for asset in parsed.assets:
        assert not any(k.endswith(("_pass", "_password")) for k in asset.vars)
        assert "s3cret" not in repr(asset) and "fourth" not in repr(asset)
    noted = [w.split(" ")[0] for w in parsed.warnings]
    assert {"ansible_password", "ansible_become_pass", "ansible_ssh_pass"} <= set(noted)
    assert "ansible_sudo_pass" in noted
