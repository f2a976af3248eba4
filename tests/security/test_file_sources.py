"""``file`` steps read their sources and write their fetches only inside the tenant's files
root. Attack: a tenant admin's push with ``src: $OPSC_HOME/secret.key`` copied the master
key out to a host of theirs; the same through ``..`` or a symbolic link, or a fetch that
writes over a file of the control plane.

A pushed file's bytes are hashed when the plan is submitted (they are part of what is
approved), so a source outside the root is refused right there, before anything is
queued; a link swapped in after the submission is refused by the worker before the push."""

from __future__ import annotations

import os
import pwd
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from opsconductor import keyring
from opsconductor.db.connection import Database
from opsconductor.errors import BadInput
from opsconductor.status_machine import Status
from tests.helpers import add_ssh_assets
from tests.security.local_support import LOCAL, Ran, needs_sandbox
from tests.security.local_support import run as run_as


async def run(
    db: Database, tenant_id: str, step: dict[str, Any], between: Callable[[], None] | None = None
) -> Ran:
    """As a tenant admin: may deploy anywhere in the tenant."""
    return await run_as(db, tenant_id, step, role="admin", between=between)


def push(src: str, dest: str, targets: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "push",
        "type": "file",
        "action_class": "deploy",
        "targets": targets,
        "src": src,
        "dest": dest,
        "timeout_s": 30,
    }


def fetch(src: str, dest: str, targets: dict[str, Any]) -> dict[str, Any]:
    return {**push(src, dest, targets), "name": "fetch", "direction": "fetch"}


SSH = {"tags": {"role": "loot"}}


@pytest.fixture
def key_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The server's master key, where the server keeps it."""
    home = tmp_path / "home"
    monkeypatch.setenv("OPSC_HOME", str(home))
    monkeypatch.delenv("OPSC_SECRET_KEY", raising=False)
    keyring.load(home)
    return home / keyring.KEY_FILE


async def _refused_at_submission(db: Database, step: dict[str, Any], why: str) -> str:
    """The plan is refused when submitted (nothing queued, nothing run): the source cannot
    be hashed for approval. Returns the message."""
    with pytest.raises(BadInput) as refused:
        await run(db, "default", step)
    message = str(refused.value)
    assert message.startswith("steps[0].src: "), message
    assert why in message, message
    return message


def _refused(ran: Ran, field: str, why: str) -> None:
    assert ran.status is Status.FAILED, ran.text
    assert [r.status for r in ran.rows] == ["failed"]
    error = ran.rows[0].error or ""
    assert error.startswith(f"steps[0].{field}: "), error
    assert why in error, error


async def test_src_outside_the_files_root_is_refused(
    db: Database, ssh_lab: Any, key_file: Path, tmp_path: Path, files_dir: Path
) -> None:
    await add_ssh_assets(db, ssh_lab, ssh_lab.ports[:1], prefix="loot")
    loot = tmp_path / "loot"
    loot.mkdir()
    step = push(str(key_file), str(loot / "key"), SSH)
    message = await _refused_at_submission(db, step, "is outside this tenant's files root")
    assert "opsc files put" in message  # where files go instead
    assert list(loot.iterdir()) == []  # nothing reached the tenant's host


@pytest.mark.parametrize(
    "src",
    [
        "../../home/secret.key",
        "sub/../../../home/secret.key",
        "{{ '..' }}/../home/secret.key",  # a template does not get around it either
    ],
)
async def test_dot_dot_is_refused(
    db: Database, ssh_lab: Any, key_file: Path, tmp_path: Path, files_dir: Path, src: str
) -> None:
    await add_ssh_assets(db, ssh_lab, ssh_lab.ports[:1], prefix="loot")
    loot = tmp_path / "loot"
    loot.mkdir()
    await _refused_at_submission(db, push(src, str(loot / "key"), SSH), "'..' is not allowed")
    assert list(loot.iterdir()) == []


async def test_a_symlink_out_of_the_root_is_refused(
    db: Database, ssh_lab: Any, key_file: Path, tmp_path: Path, files_dir: Path
) -> None:
    await add_ssh_assets(db, ssh_lab, ssh_lab.ports[:1], prefix="loot")
    loot = tmp_path / "loot"
    loot.mkdir()
    sources = ("innocent.conf", f"{files_dir}/innocent.conf", "dir/secret.key")

    def plant() -> None:
        (files_dir / "innocent.conf").symlink_to(key_file)
        (files_dir / "dir").symlink_to(key_file.parent)

    def unplant() -> None:
        """Plain files at the same names: what the plan's submission hashes."""
        for name in ("innocent.conf", "dir"):
            if (files_dir / name).is_symlink():
                (files_dir / name).unlink()
        (files_dir / "innocent.conf").write_text("harmless\n")
        (files_dir / "dir").mkdir()
        (files_dir / "dir" / "secret.key").write_text("harmless\n")

    def swap() -> None:
        """After the submission: the plain files give way to links out of the root."""
        (files_dir / "innocent.conf").unlink()
        shutil.rmtree(files_dir / "dir")
        plant()

    plant()  # planted before the submission: refused there
    for src in sources:
        await _refused_at_submission(
            db, push(src, str(loot / "key"), SSH), f"(a link to {key_file})"
        )
    for src in sources:  # swapped in after it: the worker refuses before the push
        unplant()
        ran = await run(db, "default", push(src, str(loot / "key"), SSH), between=swap)
        _refused(ran, "src", f"(a link to {key_file})")
    assert list(loot.iterdir()) == []


async def test_a_source_inside_the_root_is_pushed(
    db: Database, ssh_lab: Any, tmp_path: Path, files_dir: Path
) -> None:
    """The control: the same plan with a file of the root works (relative or absolute, and
    through a link that stays inside)."""
    await add_ssh_assets(db, ssh_lab, ssh_lab.ports[:1], prefix="loot")
    (files_dir / "app.conf").write_text("fine\n")
    (files_dir / "current.conf").symlink_to(files_dir / "app.conf")
    out = tmp_path / "out"
    out.mkdir()
    for n, src in enumerate(("app.conf", str(files_dir / "app.conf"), "current.conf")):
        ran = await run(db, "default", push(src, str(out / f"{n}.conf"), SSH))
        assert ran.status is Status.COMPLETED, ran.text
        assert (out / f"{n}.conf").read_text() == "fine\n"


async def test_a_fetch_writes_only_inside_the_files_root(
    db: Database, ssh_lab: Any, tmp_path: Path, files_dir: Path
) -> None:
    await add_ssh_assets(db, ssh_lab, ssh_lab.ports[:1], prefix="loot")
    remote = tmp_path / "remote.log"
    remote.write_text("log line\n")
    victim = tmp_path / "victim"
    victim.mkdir()
    outside = fetch(str(remote), str(victim / "{{ asset.id }}"), SSH)
    _refused(await run(db, "default", outside), "dest", "is outside this tenant's files root")
    dotted = fetch(str(remote), "../../victim/{{ asset.id }}", SSH)
    _refused(await run(db, "default", dotted), "dest", "'..' is not allowed")
    assert list(victim.iterdir()) == []
    inside = await run(db, "default", fetch(str(remote), "logs/{{ asset.id }}.log", SSH))
    assert inside.status is Status.COMPLETED, inside.text
    assert (files_dir / "logs" / "loot-00.log").read_text() == "log line\n"


@needs_sandbox
async def test_a_local_push_lands_only_in_the_working_directory(
    db: Database, files_dir: Path, work_dir: Path, tmp_path: Path
) -> None:
    (files_dir / "app.conf").write_text("fine\n")
    victim = tmp_path / "victim.conf"
    victim.write_text("precious\n")
    _refused(
        await run(db, "default", push("app.conf", str(victim), LOCAL)),
        "dest",
        "a local target's files are written in the tenant's working directory",
    )
    _refused(
        await run(db, "default", push("app.conf", f"{work_dir}/../../victim.conf", LOCAL)),
        "dest",
        "working directory",
    )
    assert victim.read_text() == "precious\n"
    ran = await run(
        db, "default", {**push("app.conf", f"{work_dir}/app.conf", LOCAL), "mode": "0640"}
    )
    assert ran.status is Status.COMPLETED, ran.text
    landed = work_dir / "app.conf"
    assert landed.read_text() == "fine\n" and (landed.stat().st_mode & 0o777) == 0o640
    assert landed.stat().st_uid == pwd.getpwnam("opsc-run").pw_uid  # written by the sandbox
    assert sorted(os.listdir(work_dir)) == ["app.conf"]  # no temporary left


@needs_sandbox
async def test_a_link_planted_in_the_working_directory_leads_nowhere(
    db: Database, files_dir: Path, work_dir: Path, tmp_path: Path
) -> None:
    """The step's user writes the copy inside the sandbox: a link the tenant planted in its
    working directory cannot make the worker (root) overwrite a file of the host."""
    victim = tmp_path / "victim.conf"
    victim.write_text("precious\n")
    planted = await run(db, "default", plant_link(victim, work_dir / "link.conf"))
    assert planted.status is Status.COMPLETED, planted.text
    (files_dir / "app.conf").write_text("evil\n")
    ran = await run(db, "default", push("app.conf", f"{work_dir}/link.conf", LOCAL))
    assert ran.status is Status.COMPLETED, ran.text
    assert victim.read_text() == "precious\n"
    link = work_dir / "link.conf"  # the rename replaced the link itself
    assert not link.is_symlink() and link.read_text() == "evil\n"


def plant_link(victim: Path, link: Path) -> dict[str, Any]:
    return {
        "name": "plant",
        "type": "command",
        "action_class": "modify",
        "targets": LOCAL,
        "command": f"ln -sf {victim} {link}",
        "timeout_s": 30,
    }


@needs_sandbox
async def test_a_local_fetch_reads_as_the_sandbox_sees(
    db: Database, key_file: Path, files_dir: Path
) -> None:
    """A fetch from the local target reads inside the sandbox: the key is not there."""
    ran = await run(db, "default", fetch(str(key_file), "{{ asset.id }}.key", LOCAL))
    assert ran.status is Status.FAILED
    assert "such file or directory" in ran.text
    assert not (files_dir / "localhost.key").exists()
    ok = await run(db, "default", fetch("/etc/hostname", "{{ asset.id }}.hostname", LOCAL))
    assert ok.status is Status.COMPLETED, ok.text
    assert (files_dir / "localhost.hostname").read_bytes() == _read("/etc/hostname")


def _read(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


@pytest.mark.parametrize("where", ["absolute", "dotdot", "link"])
async def test_a_file_credential_outside_the_root_is_never_read(
    db: Database, password_lab: Any, key_file: Path, files_dir: Path, where: str
) -> None:
    """An SSH asset's ``credential_ref: file:…`` is read by the worker and sent to the host
    as a key or a password: a tenant admin's own SSH server would receive the master key."""
    (files_dir / "innocent").symlink_to(key_file)
    ref = {
        "absolute": f"file:{key_file}",
        "dotdot": "file:../../home/secret.key",
        "link": "file:innocent",
    }[where]
    await add_ssh_assets(db, password_lab, password_lab.ports, prefix="loot", credential_ref=ref)
    step = {
        "name": "login",
        "type": "command",
        "action_class": "read",
        "targets": SSH,
        "command": "true",
    }
    ran = await run(db, "default", step)
    assert ran.status is Status.FAILED
    error = ran.rows[0].error or ""
    assert error.startswith(f"credential_ref {ref!r}: "), error
    assert "outside this tenant's files root" in error or "'..' is not allowed" in error
    assert "auth" not in error.lower()  # refused before any login was tried
