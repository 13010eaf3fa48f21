"""Unit tests of service-key encryption (``agentbus.storage._crypto``): AES-256-GCM envelope
encryption bound to agent, name and version; re-wrapping on master-key rotation; loading the master
key from the environment or a 0600 file. No database is involved."""

from __future__ import annotations

import base64
import logging
import os
import pickle
import stat
from pathlib import Path

import msgspec
import pytest

from agentbus.storage._crypto import (
    MASTER_KEY_ENV,
    MasterKey,
    SealedSecret,
    rewrap,
    seal,
    unseal,
)
from agentbus.storage._errors import SecretDecryptionError, StorageError, ValidationError
from agentbus.storage._secret import SecretValue

SECRET = "sk-live-0f1e2d3c4b5a69788796a5b4c3d2e1f0"
BINDING = {"agent_id": "scout", "name": "openai", "version": 3}


def sealed_with(master: MasterKey, secret: str = SECRET) -> SealedSecret:
    return seal(master, secret=secret, **BINDING)


def flip(data: bytes, index: int = 0) -> bytes:
    """``data`` with one bit of byte ``index`` flipped."""
    changed = bytearray(data)
    changed[index] ^= 0x01
    return bytes(changed)


def test_seal_then_unseal_returns_the_secret() -> None:
    """A sealed secret unseals, with the same master key and binding, to the same text (non-ASCII
    included), wrapped in a SecretValue."""
    master = MasterKey.generate()
    for secret in (SECRET, "pässwörd ✓ 秘密", "x"):
        value = unseal(master, sealed_with(master, secret), **BINDING)
        assert isinstance(value, SecretValue)
        assert value.reveal() == secret


def test_sealed_secret_holds_no_plaintext_and_the_master_key_id() -> None:
    """What storage keeps (every field of the sealed secret) holds neither the plaintext nor the
    master key; it names the master key only by its id, and nonces are 96 bits."""
    master = MasterKey.generate()
    sealed = sealed_with(master)
    stored = msgspec.json.encode(sealed) + msgspec.msgpack.encode(sealed)
    for form in (
        SECRET.encode(),
        base64.b64encode(SECRET.encode()),
        SECRET.encode().hex().encode(),
    ):
        assert form not in stored
    assert master.to_base64().encode() not in stored
    assert sealed.key_id == master.key_id
    assert len(sealed.nonce) == len(sealed.key_nonce) == 12
    assert len(sealed.ciphertext) == len(SECRET.encode()) + 16  # plus the GCM tag


def test_two_encryptions_of_one_secret_differ() -> None:
    """Sealing one secret twice under one binding gives a new data key and new nonces: no field
    but the key id repeats, so equal secrets cannot be spotted in storage."""
    master = MasterKey.generate()
    first, second = sealed_with(master), sealed_with(master)
    assert first.ciphertext != second.ciphertext
    assert first.nonce != second.nonce
    assert first.key_nonce != second.key_nonce
    assert first.wrapped_key != second.wrapped_key
    assert first.key_id == second.key_id
    assert unseal(master, first, **BINDING) == unseal(master, second, **BINDING)


@pytest.mark.parametrize("field", ["ciphertext", "nonce", "wrapped_key", "key_nonce"])
@pytest.mark.parametrize("where", ["first", "last"])
def test_a_tampered_field_fails_loudly(field: str, where: str) -> None:
    """One flipped bit in the ciphertext (body or tag), the nonce, the wrapped data key or its
    nonce makes unsealing raise SecretDecryptionError, never return altered text."""
    master = MasterKey.generate()
    sealed = sealed_with(master)
    data = getattr(sealed, field)
    tampered = msgspec.structs.replace(sealed, **{field: flip(data, 0 if where == "first" else -1)})
    with pytest.raises(SecretDecryptionError) as raised:
        unseal(master, tampered, **BINDING)
    assert SECRET not in str(raised.value)


def test_truncated_or_extended_ciphertext_fails_loudly() -> None:
    """A ciphertext cut short (the tag lost) or with bytes appended is a SecretDecryptionError."""
    master = MasterKey.generate()
    sealed = sealed_with(master)
    for ciphertext in (sealed.ciphertext[:-1], sealed.ciphertext[:8], sealed.ciphertext + b"\0"):
        with pytest.raises(SecretDecryptionError):
            unseal(master, msgspec.structs.replace(sealed, ciphertext=ciphertext), **BINDING)


@pytest.mark.parametrize(
    "binding",
    [
        {"agent_id": "thief", "name": "openai", "version": 3},
        {"agent_id": "scout", "name": "github", "version": 3},
        {"agent_id": "scout", "name": "openai", "version": 2},
        {"agent_id": "scout", "name": "openai", "version": 4},
        {"agent_id": "Scout", "name": "openai", "version": 3},
    ],
    ids=["other-agent", "other-name", "older-version", "newer-version", "agent-case"],
)
def test_a_secret_moved_to_another_binding_fails_loudly(binding: dict[str, object]) -> None:
    """The associated data binds agent, name and version: a stored secret copied to another
    agent, renamed, or presented as another version raises SecretDecryptionError."""
    master = MasterKey.generate()
    sealed = sealed_with(master)
    with pytest.raises(SecretDecryptionError) as raised:
        unseal(master, sealed, **binding)  # type: ignore[arg-type]
    assert SECRET not in str(raised.value)


def test_a_wrong_master_key_is_a_clear_error() -> None:
    """Unsealing with another master key raises SecretDecryptionError naming both key ids (which
    key wrapped it, which is loaded) and the way to load the right one, never garbage."""
    right, wrong = MasterKey.generate(), MasterKey.generate()
    sealed = sealed_with(right)
    with pytest.raises(SecretDecryptionError) as raised:
        unseal(wrong, sealed, **BINDING)
    message = str(raised.value)
    assert right.key_id in message
    assert wrong.key_id in message
    assert MASTER_KEY_ENV in message
    assert SECRET not in message
    assert right.to_base64() not in message
    assert wrong.to_base64() not in message


def test_a_wrong_master_key_with_a_forged_key_id_still_fails() -> None:
    """Relabelling a sealed secret with the loaded key's id does not help: the wrapped data key
    does not authenticate under the wrong key (SecretDecryptionError)."""
    right, wrong = MasterKey.generate(), MasterKey.generate()
    forged = msgspec.structs.replace(sealed_with(right), key_id=wrong.key_id)
    with pytest.raises(SecretDecryptionError):
        unseal(wrong, forged, **BINDING)


def test_decryption_errors_are_storage_errors_without_a_cause() -> None:
    """SecretDecryptionError is a StorageError and hides the cryptography library's exception
    (no chained cause or context to print)."""
    master = MasterKey.generate()
    sealed = msgspec.structs.replace(sealed_with(master), nonce=bytes(12))
    with pytest.raises(SecretDecryptionError) as raised:
        unseal(master, sealed, **BINDING)
    assert isinstance(raised.value, StorageError)
    assert raised.value.__cause__ is None
    assert raised.value.__suppress_context__


def test_rewrap_moves_the_secret_to_the_new_master_key() -> None:
    """After re-wrapping, the new master key reads the secret and the old one no longer does
    (SecretDecryptionError); the key id follows the new key."""
    old, new = MasterKey.generate(), MasterKey.generate()
    moved = rewrap(old, new, sealed_with(old), **BINDING)
    assert unseal(new, moved, **BINDING).reveal() == SECRET
    assert moved.key_id == new.key_id
    with pytest.raises(SecretDecryptionError):
        unseal(old, moved, **BINDING)


def test_rewrap_changes_only_the_wrapping() -> None:
    """Re-wrapping leaves the encrypted value and its nonce untouched and replaces the wrapped
    data key and its nonce."""
    old, new = MasterKey.generate(), MasterKey.generate()
    sealed = sealed_with(old)
    moved = rewrap(old, new, sealed, **BINDING)
    assert moved.ciphertext == sealed.ciphertext
    assert moved.nonce == sealed.nonce
    assert moved.wrapped_key != sealed.wrapped_key
    assert moved.key_nonce != sealed.key_nonce


def test_rewrap_with_the_wrong_old_key_or_binding_fails() -> None:
    """Re-wrapping needs the key that wrapped the secret and its binding: anything else raises
    SecretDecryptionError and produces nothing."""
    old, new, other = MasterKey.generate(), MasterKey.generate(), MasterKey.generate()
    sealed = sealed_with(old)
    with pytest.raises(SecretDecryptionError):
        rewrap(other, new, sealed, **BINDING)
    with pytest.raises(SecretDecryptionError):
        rewrap(old, new, sealed, agent_id="scout", name="openai", version=4)


# --- the master key ---------------------------------------------------------------------------


def test_master_key_repr_names_it_by_id_only() -> None:
    """A master key's repr/str shows its id, never the key bytes or their base64."""
    master = MasterKey.generate()
    for shown in (repr(master), str(master), f"{master}"):
        assert master.key_id in shown
        assert master.to_base64() not in shown


def test_master_key_must_be_32_bytes_of_base64() -> None:
    """A master key of another length, or text that is not base64, is a ValidationError."""
    with pytest.raises(ValidationError):
        MasterKey(b"\x00" * 16)
    with pytest.raises(ValidationError):
        MasterKey.from_base64(base64.b64encode(b"\x00" * 31).decode())
    with pytest.raises(ValidationError):
        MasterKey.from_base64("not base64 at all!")
    key = MasterKey.generate()
    assert MasterKey.from_base64(key.to_base64() + "\n").key_id == key.key_id


def test_the_key_file_is_created_with_mode_0600(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the environment variable, the first load creates the key file (and its
    directory) with mode 0600 whatever the umask, and later loads read the same key from it."""
    monkeypatch.delenv(MASTER_KEY_ENV, raising=False)
    path = tmp_path / "dir" / "master.key"
    previous = os.umask(0)
    try:
        created = MasterKey.load(path=path)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert MasterKey.from_base64(path.read_text()).key_id == created.key_id
    assert MasterKey.load(path=path).key_id == created.key_id


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o606])
def test_a_key_file_readable_by_others_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: int
) -> None:
    """A key file that group or others may read or write is refused with a ValidationError that
    says how to fix it, and the error does not show the key."""
    monkeypatch.delenv(MASTER_KEY_ENV, raising=False)
    path = tmp_path / "master.key"
    key = MasterKey.load(path=path)
    path.chmod(mode)
    with pytest.raises(ValidationError) as raised:
        MasterKey.load(path=path)
    assert "chmod 600" in str(raised.value)
    assert key.to_base64() not in str(raised.value)


def test_the_environment_variable_wins_over_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With AGENTBUS_MASTER_KEY set, that key is used: an existing key file is ignored and a
    missing one is not created."""
    from_file = MasterKey.generate()
    existing = tmp_path / "existing.key"
    existing.write_text(from_file.to_base64() + "\n")
    existing.chmod(0o600)
    from_env = MasterKey.generate()
    monkeypatch.setenv(MASTER_KEY_ENV, from_env.to_base64())
    assert MasterKey.load(path=existing).key_id == from_env.key_id
    missing = tmp_path / "missing.key"
    assert MasterKey.load(path=missing).key_id == from_env.key_id
    assert not missing.exists()


def test_a_malformed_environment_key_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """An AGENTBUS_MASTER_KEY that is not base64 of 32 bytes is a ValidationError, not a silent
    fall back to the key file."""
    monkeypatch.setenv(MASTER_KEY_ENV, base64.b64encode(b"short").decode())
    with pytest.raises(ValidationError):
        MasterKey.load(path=Path("/nonexistent/never-created.key"))


def test_a_key_loaded_from_file_decrypts_what_it_sealed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key file round-trips the key: a secret sealed with the created key unseals with the
    key loaded again from the file."""
    monkeypatch.delenv(MASTER_KEY_ENV, raising=False)
    path = tmp_path / "master.key"
    sealed = sealed_with(MasterKey.load(path=path))
    assert unseal(MasterKey.load(path=path), sealed, **BINDING).reveal() == SECRET


# --- SecretValue ------------------------------------------------------------------------------


def test_secret_value_never_shows_itself() -> None:
    """repr, str, format, f-strings and %-formatted log messages of a SecretValue (alone or inside
    a container) print '***'; reveal() returns the value."""
    value = SecretValue(SECRET)
    logged = logging.LogRecord("t", logging.INFO, __file__, 1, "value %s", (value,), None)
    for shown in (repr(value), str(value), f"{value}", f"{value!r}", repr([value]),
                  str({"k": value}), logged.getMessage(), format(value)):  # fmt: skip
        assert SECRET not in shown
        assert "***" in shown
    assert value.reveal() == SECRET


def test_secret_value_cannot_be_pickled() -> None:
    """Pickling a SecretValue raises TypeError (it is never sent anywhere by accident), and the
    error does not show the value."""
    with pytest.raises(TypeError) as raised:
        pickle.dumps(SecretValue(SECRET))
    assert SECRET not in str(raised.value)


def test_secret_values_compare_by_value() -> None:
    """Two SecretValues of one secret are equal (and hash alike); of different secrets not."""
    assert SecretValue(SECRET) == SecretValue(SECRET)
    assert hash(SecretValue(SECRET)) == hash(SecretValue(SECRET))
    assert SecretValue(SECRET) != SecretValue(SECRET + "x")
    assert SecretValue(SECRET) != SECRET
