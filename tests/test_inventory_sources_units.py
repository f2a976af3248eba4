"""The pure parts of inventory sources: schedules, URLs, the NetBox mapping and pages,
``ansible-inventory --list`` output, and what a sync would change."""

from __future__ import annotations

import json

import pytest

from opsconductor.errors import BadInput, SourceError
from opsconductor.inventory import Asset
from opsconductor.inventory_ansible_list import read_list
from opsconductor.inventory_netbox import read_page, same_origin, to_assets
from opsconductor.inventory_sources import (
    SourceKind,
    check_url,
    format_every,
    parse_every,
    plan_sync,
)
from tests.netbox_lab import device, vm

pytestmark = pytest.mark.unit


def test_every_is_a_number_and_a_unit_within_a_minute_and_a_week() -> None:
    assert [parse_every(t) for t in ("15m", "1h", "90s", "7d")] == [900, 3600, 90, 604800]
    assert [format_every(s) for s in (900, 3600, 90, 604800, None)] == [
        "15m",
        "1h",
        "90s",
        "7d",
        "",
    ]
    for bad in ("5s", "8d", "15", "m", "1.5h", "-1h", "1w"):
        with pytest.raises(BadInput, match="every:"):
            parse_every(bad)


def test_a_netbox_url_is_http_without_credentials() -> None:
    assert check_url("https://nb.example.com/netbox/") == "https://nb.example.com/netbox"
    for bad in ("nb.example.com", "https://u:p@nb", "gopher://nb", "https://nb/#x", "http://nb:x"):
        with pytest.raises(BadInput, match="url"):
            check_url(bad)


def test_next_links_stay_on_the_origin() -> None:
    base = "https://nb.example.com"
    assert same_origin(base, "https://nb.example.com/api/dcim/devices/?offset=2")
    assert not same_origin(base, "http://nb.example.com/api/dcim/devices/")
    assert not same_origin(base, "https://nb.example.com:8443/api/")
    assert not same_origin(base, "https://nb.example.com.evil.net/api/")
    page = {"count": 3, "next": "https://evil.example/api/dcim/devices/?offset=2", "results": []}
    with pytest.raises(SourceError, match=r"leaves https://nb\.example\.com: refused"):
        read_page(json.dumps(page), base, "GET")
    page["next"] = None
    assert read_page(json.dumps(page), base, "GET") == ([], None)


def test_devices_and_vms_map_to_assets() -> None:
    listed = [
        ("device", device(7, "core 1", "10.0.0.7", role="core", tags=("pci", "bgp"))),
        ("device", device(8, "old-1", None, old_role_key=True, platform=None)),
        ("device", {"id": 9, "name": None}),
        ("virtual_machine", vm(3, "app-3", "10.1.0.3")),
    ]
    found, warnings = to_assets(listed, "prod")
    assert found == [
        Asset(
            "app-3", "app-3", "10.1.0.3", "prod", "ssh", os="ubuntu",
            tags={"role": "app", "status": "active"},
            vars={"netbox_type": "virtual_machine", "netbox_id": 3},
        ),
        Asset(
            "core_1", "core 1", "10.0.0.7", "prod", "ssh", os="eos",
            tags={"pci": "true", "bgp": "true", "site": "dc1", "role": "core", "status": "active"},
            vars={"netbox_type": "device", "netbox_id": 7},
        ),
        Asset(
            "old-1", "old-1", "old-1", "prod", "ssh",
            tags={"site": "dc1", "role": "leaf", "status": "active"},
            vars={"netbox_type": "device", "netbox_id": 8},
        ),
    ]  # fmt: skip
    assert warnings == [
        "core 1: imported with asset id 'core_1'",
        "old-1: no primary IP: its address is its name",
        "device id 9: no name: not imported",
    ]


def test_ansible_inventory_list_output_maps_like_an_inventory_file() -> None:
    output = {
        "_meta": {
            "hostvars": {
                "web-1": {
                    "ansible_host": "10.0.0.1",
                    "ansible_user": "deploy",
                    "tier": {"__ansible_unsafe": "web"},
                    "db_password": {"__ansible_vault": "$ANSIBLE_VAULT;1.1;AES256\n3132"},
                },
                "lonely": {},
            }
        },
        "all": {"children": ["ungrouped", "web"]},
        "web": {"hosts": ["web-1"]},
    }
    parsed = read_list(json.dumps(output), "dev", "dc1")
    assert parsed.assets == [
        Asset("lonely", "lonely", "lonely", "dev", "ssh"),
        Asset(
            "web-1", "web-1", "10.0.0.1", "dev", "ssh", username="deploy",
            tags={"web": "true"}, vars={"tier": "web"},
        ),
    ]  # fmt: skip
    assert parsed.warnings == [
        "web-1.db_password: encrypted with ansible-vault: not stored (asset vars are not secret)"
    ]
    for bad in ("[]", '{"web": {"hosts": "web-1"}}', '{"_meta": {"hostvars": []}}', "{"):
        with pytest.raises(SourceError):
            read_list(bad, "dev", "dc1")


def _a(asset_id: str, address: str, **extra: object) -> Asset:
    return Asset(asset_id, asset_id, address, "prod", "ssh", **extra)  # type: ignore[arg-type]


def test_a_sync_touches_only_its_own_assets() -> None:
    mine = {"inventory_source": "nb"}
    existing = {
        "a": (_a("a", "10.0.0.1", tags=mine), "nb"),
        "b": (_a("b", "10.0.0.2", tags=mine, username="ops"), "nb"),
        "gone": (_a("gone", "10.0.0.3", tags=mine), "nb"),
        "hand": (_a("hand", "10.0.0.4"), None),
        "theirs": (_a("theirs", "10.0.0.5"), "other"),
        "named": (Asset("named", "taken-name", "10.0.0.6", "prod"), None),
    }
    found = [
        _a("a", "10.0.0.1"),
        _a("b", "10.0.0.22"),
        _a("hand", "10.9.0.4"),
        _a("theirs", "10.9.0.5"),
        Asset("new", "taken-name", "10.0.0.7", "prod", "ssh"),
        _a("fresh", "10.0.0.8"),
        _a("fresh", "10.0.0.9"),
    ]
    plan = plan_sync("nb", SourceKind.NETBOX, existing, found)
    assert plan.unchanged == ["a"]
    [(b, changes)] = plan.changed.values()
    assert b.username == "ops"  # set by hand, not known to NetBox: kept
    assert [str(c) for c in changes] == ["address: '10.0.0.2' -> '10.0.0.22'"]
    assert [a.asset_id for a in plan.removed] == ["gone"]
    assert [(a.asset_id, a.address, a.tags) for a in plan.added] == [
        ("fresh", "10.0.0.8", {"inventory_source": "nb"})
    ]
    assert plan.warnings == [
        "hand: not synced: an asset with this id exists (made by hand or imported)",
        "theirs: not synced: an asset with this id exists (source 'other''s)",
        "new: not synced: asset 'named' has its hostname",
        "fresh: listed twice by the source: the first kept",
    ]
    with pytest.raises(SourceError, match="listed no assets; refusing to remove its 3"):
        plan_sync("nb", SourceKind.NETBOX, existing, [])
