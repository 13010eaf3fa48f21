"""Service-key encryption in the application: AES-256-GCM with envelope encryption.

Each secret gets its own random 256-bit data key. The value is encrypted with the data key (a
random 96-bit nonce per write); the data key is encrypted ("wrapped") with the master key (its
own nonce). The associated data of both binds ``agent``, ``name`` and ``version``, so a stored
secret copied to another agent, name or version fails to decrypt instead of leaking. Rotating the
master key re-wraps the data keys and never touches the encrypted values.

The master key comes from ``AGENTBUS_MASTER_KEY`` (base64 of 32 bytes) or from
``storage.serviceKeys.masterKeyFile``, which is created with mode 0600 on first use. A wrong
master key is :class:`SecretDecryptionError`, never garbage. Nothing here logs or formats a
secret; :class:`SecretValue` hides decrypted values from ``repr`` and logs.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .._config import Config
from ._errors import SecretDecryptionError, ValidationError
from ._secret import SecretValue

MASTER_KEY_ENV = "AGENTBUS_MASTER_KEY"
_KEY_BYTES = 32
_NONCE_BYTES = 12


class MasterKey:
    """The key that wraps every data key. ``key_id`` names it without revealing it."""

    __slots__ = ("_key", "key_id")

    def __init__(self, key: bytes) -> None:
        if len(key) != _KEY_BYTES:
            raise ValidationError(f"a master key is {_KEY_BYTES} bytes, got {len(key)}")
        self._key = key
        # A fingerprint to tell keys apart (which key wrapped a row), not to derive anything.
        self.key_id = hashlib.sha256(b"agentbus master key id:" + key).hexdigest()[:16]

    @classmethod
    def generate(cls) -> MasterKey:
        return cls(AESGCM.generate_key(bit_length=256))

    @classmethod
    def from_base64(cls, text: str) -> MasterKey:
        try:
            return cls(base64.b64decode(text.strip(), validate=True))
        except ValueError as exc:
            raise ValidationError(f"the master key is not base64 of {_KEY_BYTES} bytes") from exc

    @classmethod
    def load(cls, config: Config | None = None, *, path: Path | None = None) -> MasterKey:
        """From ``AGENTBUS_MASTER_KEY``, else the key file (created, mode 0600, when missing)."""
        env = os.environ.get(MASTER_KEY_ENV)
        if env:
            return cls.from_base64(env)
        if path is None:
            path = (config or Config()).storage.service_keys.master_key_file
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            key = cls.generate()
            # O_EXCL: two processes starting at once must not each write a different key.
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                return cls.load(path=path)
            with os.fdopen(fd, "w") as handle:
                handle.write(key.to_base64() + "\n")
            return key
        if path.stat().st_mode & 0o077:
            raise ValidationError(
                f"master key file {path} is readable by others; run: chmod 600 {path}"
            )
        return cls.from_base64(path.read_text())

    def to_base64(self) -> str:
        return base64.b64encode(self._key).decode()

    def __repr__(self) -> str:
        return f"MasterKey(key_id={self.key_id!r})"


class SealedSecret(msgspec.Struct, frozen=True, kw_only=True):
    """What storage keeps for one secret version (all of it safe to store)."""

    key_id: str  # which master key wrapped the data key
    wrapped_key: bytes
    key_nonce: bytes
    nonce: bytes
    ciphertext: bytes


def _associated_data(agent_id: str, name: str, version: int) -> bytes:
    return msgspec.json.encode({"agent": agent_id, "name": name, "version": version, "v": 1})


def seal(master: MasterKey, *, agent_id: str, name: str, version: int, secret: str) -> SealedSecret:
    """Encrypt ``secret`` under a fresh data key wrapped by ``master``."""
    aad = _associated_data(agent_id, name, version)
    data_key = AESGCM.generate_key(bit_length=256)
    nonce, key_nonce = os.urandom(_NONCE_BYTES), os.urandom(_NONCE_BYTES)
    ciphertext = AESGCM(data_key).encrypt(nonce, secret.encode("utf-8"), aad)
    wrapped = AESGCM(master._key).encrypt(key_nonce, data_key, aad)
    return SealedSecret(
        key_id=master.key_id, wrapped_key=wrapped, key_nonce=key_nonce, nonce=nonce,
        ciphertext=ciphertext,
    )  # fmt: skip


def _data_key(master: MasterKey, sealed: SealedSecret, aad: bytes, name: str) -> bytes:
    if sealed.key_id != master.key_id:
        raise SecretDecryptionError(
            f"service key {name!r} was wrapped by master key {sealed.key_id}, not by the loaded "
            f"{master.key_id}: load the right key ({MASTER_KEY_ENV} or the key file)"
        )
    try:
        return AESGCM(master._key).decrypt(sealed.key_nonce, sealed.wrapped_key, aad)
    except (InvalidTag, ValueError):  # ValueError: a nonce of the wrong length
        raise SecretDecryptionError(
            f"service key {name!r} cannot be unwrapped: its stored data or binding was altered"
        ) from None


def unseal(
    master: MasterKey, sealed: SealedSecret, *, agent_id: str, name: str, version: int
) -> SecretValue:
    """Decrypt; raises SecretDecryptionError (never returns garbage, never shows the value)."""
    aad = _associated_data(agent_id, name, version)
    data_key = _data_key(master, sealed, aad, name)
    try:
        plaintext = AESGCM(data_key).decrypt(sealed.nonce, sealed.ciphertext, aad)
    except (InvalidTag, ValueError):  # ValueError: a nonce of the wrong length
        raise SecretDecryptionError(
            f"service key {name!r} cannot be decrypted: its ciphertext, nonce or binding was "
            "altered"
        ) from None
    return SecretValue(plaintext.decode("utf-8"))


def rewrap(
    old: MasterKey, new: MasterKey, sealed: SealedSecret, *, agent_id: str, name: str,
    version: int,
) -> SealedSecret:  # fmt: skip
    """Wrap the data key with ``new`` instead of ``old``; the ciphertext is unchanged."""
    aad = _associated_data(agent_id, name, version)
    data_key = _data_key(old, sealed, aad, name)
    key_nonce = os.urandom(_NONCE_BYTES)
    wrapped = AESGCM(new._key).encrypt(key_nonce, data_key, aad)
    return msgspec.structs.replace(
        sealed, key_id=new.key_id, wrapped_key=wrapped, key_nonce=key_nonce
    )
