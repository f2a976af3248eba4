"""ansible-inventory gets no network unless the installation enabled an inventory plugin
(cloud plugins call their API): code that runs while a tenant's inventory is read cannot
reach a server of the worker's network, on loopback or on another address of the host,
even when the tenant's local steps are allowed the network.

The static readers run none of the tenant's code, so the first tests run a tenant's script
in place of ``ansible-inventory`` (``program`` pointed at it): the very sandbox a sync
runs, standing in for whatever a plugin or a lookup would run there. The last ones run the
real program with a templating plugin's lookup."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from opsconductor import rbac
from opsconductor.connectors import ansible_inventory
from opsconductor.db import assets, connectors
from opsconductor.db import inventory_sources as rows
from opsconductor.db.connection import Database
from opsconductor.errors import SourceError
from opsconductor.services import inventory_sources as service
from opsconductor.services.caller import AuthMethod, Caller
from tests.security.local_support import needs_sandbox

pytestmark = [pytest.mark.integration, needs_sandbox]

needs_ansible = pytest.mark.skipif(
    ansible_inventory.program() is None,
    reason="ansible-inventory is not installed: pip install -e '.[ansible]' (in the dev extra)",
)
ADMIN = Caller("default", "ada", (rbac.BUILTIN_ROLES["admin"],), AuthMethod.TOKEN)
PLUGIN = "ansible.builtin.constructed"


def _addresses() -> list[str]:
    """Loopback, and the host's address on its default route when it has one."""
    found = ["127.0.0.1"]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("198.51.100.1", 9))  # a route lookup: UDP sends nothing here
        except OSError:
            return found
        address = str(probe.getsockname()[0])
    return found if address.startswith("127.") else [*found, address]


@contextmanager
def _servers() -> Iterator[dict[str, socket.socket]]:
    """A listening TCP socket on each address. Nothing accepts: a connection that arrives
    waits in the backlog, so whether one came is read after the sync, without waiting."""
    with ExitStack() as stack:
        servers = {}
        for address in _addresses():
            server = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            server.bind((address, 0))
            server.listen(8)
            servers[address] = server
        yield servers


def _arrived(server: socket.socket) -> int:
    server.setblocking(False)
    count = 0
    while True:
        try:
            conn, _ = server.accept()
        except BlockingIOError:
            return count
        conn.close()
        count += 1


def _targets(servers: dict[str, socket.socket]) -> list[tuple[str, int]]:
    return [(address, int(s.getsockname()[1])) for address, s in servers.items()]


async def _tenant_network(db: Database, granted: bool) -> None:
    async with db.transaction() as conn:
        await assets.ensure_tenant(conn, "default")
        await connectors.set_local_execution(conn, "default", "test", on=granted, network=granted)


async def _last_error(db: Database) -> str:
    async with db.connection() as conn:
        found = await rows.get(conn, "default", "inv")
    assert found is not None and found.last_result is not None
    assert found.last_result.value == "failed" and found.last_error is not None
    return found.last_error


def _probe(files_dir: Path, targets: list[tuple[str, int]]) -> None:
    """A tenant's script that tries every server, says what happened, and fails."""
    inventory = files_dir / "inv"
    inventory.mkdir()
    (inventory / "probe.py").write_text(
        "import socket, sys\n"
        f"for address, port in {targets!r}:\n"
        "    try:\n"
        "        socket.create_connection((address, port), timeout=10).close()\n"
        "        print(f'{address}: connected', file=sys.stderr)\n"
        "    except OSError as exc:\n"
        "        print(f'{address}: {exc}', file=sys.stderr)\n"
        "sys.exit(3)\n"
    )


@pytest.mark.parametrize("tenant_network", [False, True], ids=["tenant-offline", "tenant-online"])
async def test_code_run_by_a_sync_without_plugins_reaches_no_server(
    db: Database, files_dir: Path, monkeypatch: pytest.MonkeyPatch, tenant_network: bool
) -> None:
    monkeypatch.delenv("OPSC_INVENTORY_PLUGINS", raising=False)
    monkeypatch.setattr(
        ansible_inventory, "program", lambda: f"{ansible_inventory.INVENTORY}/probe.py"
    )
    await _tenant_network(db, tenant_network)
    with _servers() as servers:
        _probe(files_dir, _targets(servers))
        await service.add_source(db, ADMIN, name="inv", kind="ansible", path="inv")
        with pytest.raises(SourceError, match=r"failed \(exit 3\)"):
            await service.sync(db, ADMIN, "inv")
        assert {address: _arrived(s) for address, s in servers.items()} == dict.fromkeys(servers, 0)
    error = await _last_error(db)
    assert "connected" not in error
    assert "127.0.0.1: [Errno 111] Connection refused" in error  # its own empty loopback
    for address in servers.keys() - {"127.0.0.1"}:
        assert f"{address}: [Errno 101] Network is unreachable" in error


async def test_with_a_plugin_enabled_the_same_code_reaches_them(
    db: Database, files_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The control: the probe does reach the servers when the sandbox has the network."""
    monkeypatch.setenv("OPSC_INVENTORY_PLUGINS", PLUGIN)
    monkeypatch.setattr(
        ansible_inventory, "program", lambda: f"{ansible_inventory.INVENTORY}/probe.py"
    )
    with _servers() as servers:
        _probe(files_dir, _targets(servers))
        await service.add_source(db, ADMIN, name="inv", kind="ansible", path="inv")
        with pytest.raises(SourceError, match=r"failed \(exit 3\)"):
            await service.sync(db, ADMIN, "inv")
        assert {address: _arrived(s) for address, s in servers.items()} == dict.fromkeys(servers, 1)
    error = await _last_error(db)
    for address in servers:
        assert f"{address}: connected" in error


def _constructed(files_dir: Path, targets: list[tuple[str, int]]) -> None:
    """A plugin config whose lookup tries every server (bash's /dev/tcp)."""
    tries = "; ".join(
        f"(echo > /dev/tcp/{address}/{port}) 2>/dev/null && echo {address}=connected "
        f"|| echo {address}=unreachable"
        for address, port in targets
    )
    inventory = files_dir / "inv"
    inventory.mkdir()
    (inventory / "01-hosts.yml").write_text("all:\n  hosts:\n    h1:\n      a: 1\n")
    (inventory / "02-constructed.yml").write_text(
        f"plugin: {PLUGIN}\nstrict: false\ncompose:\n"
        f"  reached: >-\n    lookup('pipe', \"bash -c '{tries}'\")\n"
    )


@needs_ansible
async def test_a_lookup_without_its_plugin_enabled_reaches_no_server(
    db: Database, files_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPSC_INVENTORY_PLUGINS", raising=False)
    with _servers() as servers:
        _constructed(files_dir, _targets(servers))
        await service.add_source(db, ADMIN, name="inv", kind="ansible", path="inv")
        with pytest.raises(SourceError, match="Plugin configuration YAML file"):
            await service.sync(db, ADMIN, "inv")
        assert {address: _arrived(s) for address, s in servers.items()} == dict.fromkeys(servers, 0)
    assert "Plugin configuration YAML file" in await _last_error(db)


@needs_ansible
async def test_a_lookup_of_an_enabled_plugin_has_the_network(
    db: Database, files_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The documented exception (cloud plugins call their API), and the control of the
    test above: the same lookup, its plugin enabled, reaches the servers."""
    monkeypatch.setenv("OPSC_INVENTORY_PLUGINS", PLUGIN)
    with _servers() as servers:
        _constructed(files_dir, _targets(servers))
        await service.add_source(db, ADMIN, name="inv", kind="ansible", path="inv")
        plan = await service.sync(db, ADMIN, "inv", dry_run=True)
        assert {address: _arrived(s) for address, s in servers.items()} == dict.fromkeys(servers, 1)
    [host] = plan.added
    assert str(host.vars["reached"]).split() == [f"{a}=connected" for a in servers]
