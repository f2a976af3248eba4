"""The master key of the built-in secret store, and AES-256-GCM sealing with it.

The key comes from ``OPSC_SECRET_KEY`` (base64 of 32 bytes) or, failing that, from
``$OPSC_HOME/secret.key``, created with mode 0600 the first time a secret is used. The
database only ever sees ciphertext; each row is bound to its tenant and path (AES-GCM
associated data), so a row copied onto another path does not decrypt.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from opsconductor.config import load_settings
from opsconductor.errors import BadInput, SecretError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_ENV = "OPSC_SECRET_KEY"
KEY_FILE = "secret.key"
#: Written first by a rotation and renamed over KEY_FILE once the database is re-sealed,
#: so a rotation that dies half-way leaves both keys on disk.
NEXT_KEY_FILE = "secret.key.next"
KEY_BYTES = 32


def associated_data(tenant_id: str, path: str) -> bytes:
    return f"opsc-secret\0{tenant_id}\0{path}".encode()


@dataclass(frozen=True)
class SecretKey:
    material: bytes = field(repr=False)

    @classmethod
    def generate(cls) -> SecretKey:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # see _aead

        return cls(AESGCM.generate_key(bit_length=8 * KEY_BYTES))

    @classmethod
    def from_text(cls, text: str, source: str) -> SecretKey:
        try:
            material = base64.b64decode(text.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise BadInput(f"{source}: not base64") from None
        if len(material) != KEY_BYTES:
            raise BadInput(f"{source}: must be base64 of {KEY_BYTES} bytes, got {len(material)}")
        return cls(material)

    def to_text(self) -> str:
        return base64.b64encode(self.material).decode()

    @property
    def key_id(self) -> str:
        return hashlib.sha256(self.material).hexdigest()[:16]

    def seal(self, plaintext: str, aad: bytes) -> tuple[bytes, bytes]:
        nonce = os.urandom(12)  # random 96-bit nonces: fine far beyond our write volume
        return nonce, _aead(self.material).encrypt(nonce, plaintext.encode(), aad)

    def open(self, nonce: bytes, ciphertext: bytes, aad: bytes) -> str:
        from cryptography.exceptions import InvalidTag

        try:
            return _aead(self.material).decrypt(nonce, ciphertext, aad).decode()
        except InvalidTag:
            raise SecretError(
                "ciphertext does not authenticate (wrong key or tampered row)"
            ) from None


@dataclass(frozen=True)
class Keyring:
    current: SecretKey
    others: tuple[SecretKey, ...] = ()
    #: where ``current`` lives on disk; None when it came from the environment
    path: Path | None = None

    def get(self, key_id: str) -> SecretKey:
        for key in (self.current, *self.others):
            if key.key_id == key_id:
                return key
        raise SecretError(
            f"no key with id {key_id} is configured; set {KEY_ENV} or restore "
            f"{KEY_FILE} to the key that sealed this secret"
        )


def _write_new(path: Path, key: SecretKey) -> None:
    """Create ``path`` with mode 0600 from the first byte on (never world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key.to_text() + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def _read(path: Path) -> SecretKey:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise BadInput(f"{path}: key file must not be accessible to group or others (chmod 600)")
    return SecretKey.from_text(path.read_text(), str(path))


def load(home: Path) -> Keyring:
    """The keyring: from the environment, else the key file (created on first use)."""
    from_env = load_settings().secret_key
    if from_env:
        return Keyring(SecretKey.from_text(from_env, KEY_ENV))
    path = home / KEY_FILE
    with contextlib.suppress(FileExistsError):
        _write_new(path, SecretKey.generate())
    current = _read(path)
    next_path = home / NEXT_KEY_FILE
    others = (_read(next_path),) if next_path.exists() else ()
    return Keyring(current, others, path)


def begin_rotation(keyring: Keyring) -> SecretKey:
    """The key to rotate to, on disk beside the current one before any row uses it."""
    if keyring.path is None:
        raise BadInput(
            f"the key comes from {KEY_ENV}, which opsc cannot change: key rotation works on "
            f"the key file ($OPSC_HOME/{KEY_FILE}) only"
        )
    next_path = keyring.path.parent / NEXT_KEY_FILE
    if next_path.exists():  # an earlier rotation died: finish it with the same key
        return _read(next_path)
    key = SecretKey.generate()
    _write_new(next_path, key)
    return key


def finish_rotation(keyring: Keyring) -> None:
    assert keyring.path is not None
    os.replace(keyring.path.parent / NEXT_KEY_FILE, keyring.path)


def _aead(material: bytes) -> AESGCM:
    """AES-GCM, imported on first use: every ``opsc`` command imports this module, few
    seal or open a secret (the cryptography package costs tens of milliseconds to load)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return AESGCM(material)
