"""File copies to and from SSH targets over SFTP, each checked by SHA-256 and renamed into
place, so a failed or corrupted copy never replaces the old file."""

from __future__ import annotations

import contextlib
import hashlib
import uuid
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from opsconductor.connectors.ssh import SshError

_CHUNK = 65_536


@dataclass(frozen=True)
class Copied:
    size: int
    sha256: str


def file_digest(path: Path) -> Copied:
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as source:
        while chunk := source.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return Copied(size, digest.hexdigest())


async def copy_file(
    conn: asyncssh.SSHClientConnection,
    src: Path,
    dest: str,
    mode: int | None,
    *,
    expected: str | None = None,
) -> Copied:
    """Upload to a temporary name beside ``dest``, read it back and compare SHA-256, then
    rename over ``dest``: a failed or corrupted copy never replaces the old file.

    ``expected`` (the digest checked and approved before the copy) is what the copy must
    hold, so a source edited in between is refused rather than deployed."""
    want = expected or file_digest(src).sha256
    temporary = f"{dest}.opsc-{uuid.uuid4().hex[:12]}"
    size = 0
    async with conn.start_sftp_client() as sftp:
        try:
            async with sftp.open(temporary, "xb") as remote:
                with src.open("rb") as source:
                    while chunk := source.read(_CHUNK):
                        size += len(chunk)
                        await remote.write(chunk)
            remote_digest = await _remote_sha256(sftp, temporary)
            if remote_digest != want:
                raise SshError(
                    f"{dest}: checksum mismatch after copy (expected {want}, remote "
                    f"{remote_digest}); the source may have changed since it was checked"
                )
            if mode is not None:
                await sftp.chmod(temporary, mode)
            await sftp.posix_rename(temporary, dest)
        except BaseException:
            with contextlib.suppress(Exception):
                await sftp.remove(temporary)
            raise
    return Copied(size, want)


async def _remote_sha256(sftp: asyncssh.SFTPClient, path: str) -> str:
    digest = hashlib.sha256()
    async with sftp.open(path, "rb") as remote:
        while chunk := await remote.read(_CHUNK):
            digest.update(chunk if isinstance(chunk, bytes) else chunk.encode())
    return digest.hexdigest()


async def fetch_file(
    conn: asyncssh.SSHClientConnection, src: str, dest: Path, mode: int | None
) -> Copied:
    """Download ``src`` to a temporary name beside ``dest``, compare its SHA-256 with a
    second read of the remote file, then rename over ``dest``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    temporary = dest.with_name(f"{dest.name}.opsc-{uuid.uuid4().hex[:12]}")
    try:
        async with conn.start_sftp_client() as sftp:
            async with sftp.open(src, "rb") as remote:
                with temporary.open("xb") as local:
                    while chunk := await remote.read(_CHUNK):
                        local.write(chunk if isinstance(chunk, bytes) else chunk.encode())
            remote_digest = await _remote_sha256(sftp, src)
        copied = file_digest(temporary)
        if copied.sha256 != remote_digest:
            raise SshError(
                f"{src}: checksum mismatch after fetch "
                f"(remote {remote_digest}, local {copied.sha256}); the file may be changing"
            )
        if mode is not None:
            temporary.chmod(mode)
        temporary.replace(dest)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return copied
