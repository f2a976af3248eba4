"""NetBox's REST API -> assets. Pure: pages of JSON in, assets and warnings out.

NetBox lists devices (``/api/dcim/devices/``) and virtual machines
(``/api/virtualization/virtual-machines/``) in pages ``{count, next, previous, results}``;
``next`` is the absolute URL of the following page (None on the last). A page's ``next``
is followed only to the origin (scheme, host, port) of the source's URL: a link elsewhere
would send the token to whoever wrote it. The mapping of one device or VM:

* ``name`` -> asset id (characters outside ``A-Za-z0-9_.:-`` become ``_``) and hostname;
* ``primary_ip.address`` without its prefix length -> address (none: the name, warned);
* ``platform.slug`` -> os; ``site.slug``, ``role.slug`` (``device_role`` before NetBox
  4.0), ``status.value`` -> the tags ``site``, ``role``, ``status``; every NetBox tag ->
  a tag ``<slug>: "true"``;
* ``id`` and the object type -> the variables ``netbox_id``, ``netbox_type``.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from opsconductor import safe_parse
from opsconductor.errors import BadInput, SourceError
from opsconductor.inventory import Asset

DEVICES = "/api/dcim/devices/"
VIRTUAL_MACHINES = "/api/virtualization/virtual-machines/"
#: (path, ``netbox_type``) of every listing a sync reads, in order.
LISTINGS = ((DEVICES, "device"), (VIRTUAL_MACHINES, "virtual_machine"))
#: NetBox's own maximum page size (``MAX_PAGE_SIZE``); a server may answer with fewer.
PAGE_SIZE = 1000
#: A hostile or broken API must not hold a worker: pages per listing, bytes per page,
#: objects per sync.
MAX_PAGES = 1000
MAX_PAGE_BYTES = 8 * 1024 * 1024
MAX_OBJECTS = 100_000
_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_.:-]")
_MAX_TEXT = 255


def first_page(base_url: str, path: str) -> str:
    return f"{base_url}{path}?limit={PAGE_SIZE}"


def same_origin(base_url: str, url: str) -> bool:
    a, b = urlsplit(base_url), urlsplit(url)
    try:
        return (a.scheme, a.hostname, a.port) == (b.scheme, b.hostname, b.port)
    except ValueError:
        return False


def read_page(text: str, base_url: str, where: str) -> tuple[list[dict[str, Any]], str | None]:
    """One page's objects and the URL of the next page (None: the last), bounded."""
    try:
        data = safe_parse.load_json(text, where)
        safe_parse.check_control_chars(data)
    except BadInput as exc:  # not JSON, too deep, control characters: the source's fault
        raise SourceError(f"{where}: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("results"), list):
        raise SourceError(f"{where}: not a NetBox list (expected {{count, next, results}})")
    following = data.get("next")
    if following is not None:
        if not isinstance(following, str):
            raise SourceError(f"{where}: next: must be a URL or null")
        if not same_origin(base_url, following):
            raise SourceError(
                f"{where}: next: {following[:200]!r} leaves {base_url}: refused (the token "
                "is sent to the source's own origin only)"
            )
    items = [item for item in data["results"] if isinstance(item, dict)]
    if len(items) != len(data["results"]):
        raise SourceError(f"{where}: results: every item must be an object")
    return items, following


def _slug(value: Any) -> str | None:
    """A nested NetBox object's slug (or name); None when absent."""
    if isinstance(value, dict):
        found = value.get("slug") or value.get("name")
        return _text(found)
    return None


def _text(value: Any) -> str | None:
    if isinstance(value, str | int) and not isinstance(value, bool) and str(value):
        return str(value)[:_MAX_TEXT]
    return None


def _address(item: dict[str, Any]) -> str | None:
    for key in ("primary_ip", "primary_ip4", "primary_ip6"):
        ip = item.get(key)
        if isinstance(ip, dict) and isinstance(ip.get("address"), str):
            return ip["address"].split("/", 1)[0][:_MAX_TEXT] or None
    return None


def to_asset(
    item: dict[str, Any], netbox_type: str, environment: str, warnings: list[str]
) -> Asset | None:
    """One device or VM as an asset; None (and a warning) for one without a name."""
    name = _text(item.get("name"))
    if name is None:
        warnings.append(f"{netbox_type} id {_text(item.get('id'))}: no name: not imported")
        return None
    asset_id = _ID_UNSAFE.sub("_", name)[:128]
    if asset_id != name:
        warnings.append(f"{name}: imported with asset id {asset_id!r}")
    address = _address(item)
    if address is None:
        warnings.append(f"{name}: no primary IP: its address is its name")
    tags: dict[str, str] = {}
    for tag in item.get("tags") or []:
        slug = _slug(tag)
        if slug is not None:
            tags[slug] = "true"
    status = item.get("status")
    named = {
        "site": _slug(item.get("site")),
        "role": _slug(item.get("role")) or _slug(item.get("device_role")),
        "status": _text(status.get("value")) if isinstance(status, dict) else _text(status),
    }
    tags.update({k: v for k, v in named.items() if v is not None})
    variables: dict[str, Any] = {"netbox_type": netbox_type}
    if _text(item.get("id")) is not None:
        variables["netbox_id"] = item["id"]
    return Asset(
        asset_id=asset_id,
        hostname=name,
        address=address or name,
        environment=environment,
        connection_type="ssh",
        os=_slug(item.get("platform")),
        tags=tags,
        vars=variables,
    )


def to_assets(
    listed: list[tuple[str, dict[str, Any]]], environment: str
) -> tuple[list[Asset], list[str]]:
    """Every (``netbox_type``, object) listed, as assets, sorted by id; and the warnings."""
    warnings: list[str] = []
    found = [to_asset(item, kind, environment, warnings) for kind, item in listed]
    return sorted((a for a in found if a is not None), key=lambda a: a.asset_id), warnings
