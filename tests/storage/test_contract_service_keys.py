"""Service keys: per-agent secrets encrypted in the application (AES-GCM envelope encryption bound
to agent, name and version), returned as SecretValue, never shown in reprs, logs, exceptions or
the database.

Tests that rotate the master key, open adapters with other keys or alter stored rows use a store
of their own (``private_store``); the rest share the module's store, isolated by agent id. Every
secret is random, so finding its bytes anywhere is never a coincidence.
"""

from __future__ import annotations

import base64
import logging
import secrets
import traceback
from collections.abc import Callable
from typing import Any

import pytest

from agentbus.storage._crypto import MasterKey
from agentbus.storage._errors import (
    NotFoundError,
    SecretDecryptionError,
    StorageError,
    ValidationError,
)
from agentbus.storage._models import ServiceKeyInfo
from agentbus.storage._secret import SecretValue

from ._stores import Raw, raw_for, sqlite_files, store
from ._support import is_utc, not_refused

pytestmark = pytest.mark.anyio

View = Callable[..., Any]


def sk(view: Any) -> Any:
    return store(view, "service_keys")


def new_secret() -> str:
    return f"sk-live-{secrets.token_hex(20)}"


def forms(secret: str) -> list[bytes]:
    """The plaintext as bytes, and its base64 and hex encodings (an encoding is no cipher)."""
    raw = secret.encode()
    return [raw, base64.b64encode(raw), raw.hex().encode()]


def leaks(secret: str, blob: bytes) -> list[str]:
    names = ["plaintext", "base64", "hex"]
    return [name for name, form in zip(names, forms(secret), strict=True) if form in blob]


def raw_of(private: Any) -> Raw:
    return Raw(sqlite_path=private.sqlite_path, owner_dsn=private.owner_dsn)


# --- the store's behaviour ------------------------------------------------------------------------


async def test_a_secret_round_trips(view: View) -> None:
    """put() stores a secret (version 1) and returns its name and metadata only; get() returns
    the same value as a SecretValue; a name never stored reads as None."""
    me = view()
    secret = new_secret()
    info = await sk(me).put("openai", secret, metadata={"scope": "chat", "owner": "ops"})
    assert isinstance(info, ServiceKeyInfo)
    assert (info.name, info.agent_id, info.version) == ("openai", me.agent_id, 1)
    assert info.metadata == {"owner": "ops", "scope": "chat"}
    assert is_utc(info.created_at)
    assert is_utc(info.updated_at)
    value = await sk(me).get("openai")
    assert isinstance(value, SecretValue)
    assert value.reveal() == secret
    assert await sk(me).get("never-stored") is None
    for text in ("pässwörd ✓ 秘密", "x", "a" * 4096):
        await sk(me).put("unicode", text)
        assert (await sk(me).get("unicode")).reveal() == text


async def test_list_keys_shows_names_and_metadata_only(view: View) -> None:
    """list_keys() returns ServiceKeyInfo rows by name — name, version, metadata, timestamps — and
    no value: no field and no repr of the list holds any secret."""
    me = view()
    stored = {name: new_secret() for name in ("zeta", "alpha", "mid")}
    for name, secret in stored.items():
        await sk(me).put(name, secret, metadata={"name": name})
    listed = await sk(me).list_keys()
    assert [k.name for k in listed] == ["alpha", "mid", "zeta"]
    assert all(isinstance(k, ServiceKeyInfo) for k in listed)
    assert [k.metadata for k in listed] == [{"name": "alpha"}, {"name": "mid"}, {"name": "zeta"}]
    shown = repr(listed) + str(listed)
    for secret in stored.values():
        assert secret not in shown


async def test_versions_increase_on_put_and_rotate(view: View) -> None:
    """Each put() of an existing name and each rotate() stores the next version, and get()
    returns the newest value; created_at stays, updated_at moves forward."""
    me = view()
    values = [new_secret() for _ in range(4)]
    first = await sk(me).put("github", values[0])
    second = await sk(me).put("github", values[1], metadata={"v": 2})
    assert second.version == 2
    assert (await sk(me).get("github")).reveal() == values[1]
    third = await sk(me).rotate("github", values[2])
    assert third.version == 3
    assert (await sk(me).get("github")).reveal() == values[2]
    fourth = await sk(me).rotate("github", values[3])
    assert fourth.version == 4
    assert (await sk(me).get("github")).reveal() == values[3]
    assert fourth.created_at == first.created_at
    assert first.updated_at <= second.updated_at <= third.updated_at <= fourth.updated_at
    (listed,) = await sk(me).list_keys()
    assert listed.version == 4


async def test_rotate_of_a_missing_name_is_not_found(view: View) -> None:
    """rotate() replaces an existing secret only: for a name never stored (or deleted) it raises
    NotFoundError, whose message does not show the new value, and stores nothing."""
    me = view()
    secret = new_secret()
    with pytest.raises(NotFoundError) as raised:
        await sk(me).rotate("missing", secret)
    assert secret not in str(raised.value)
    assert secret not in repr(raised.value)
    assert await sk(me).get("missing") is None
    await sk(me).put("gone", new_secret())
    assert await sk(me).delete("gone") is True
    with pytest.raises(NotFoundError):
        await sk(me).rotate("gone", secret)
    assert await sk(me).list_keys() == []


async def test_delete_removes_a_secret(view: View) -> None:
    """delete() removes the secret (True), then answers False; get() reads None and list_keys()
    leaves it out; put() after delete starts again."""
    me = view()
    await sk(me).put("temp", new_secret())
    await sk(me).put("kept", new_secret())
    assert await sk(me).delete("temp") is True
    assert await sk(me).get("temp") is None
    assert [k.name for k in await sk(me).list_keys()] == ["kept"]
    assert await sk(me).delete("temp") is False
    again = new_secret()
    await sk(me).put("temp", again)
    assert (await sk(me).get("temp")).reveal() == again


async def test_secrets_belong_to_their_agent(view: View) -> None:
    """Another agent storing the same name has its own secret; it cannot get, list, rotate or
    delete the first agent's."""
    a, b = view("a"), view("b")
    mine, theirs = new_secret(), new_secret()
    await sk(a).put("shared-name", mine)
    assert await sk(b).get("shared-name") is None
    assert await sk(b).list_keys() == []
    assert await sk(b).delete("shared-name") is False
    with pytest.raises(NotFoundError):
        await sk(b).rotate("shared-name", theirs)
    info = await sk(b).put("shared-name", theirs)
    assert (info.agent_id, info.version) == (b.agent_id, 1)
    assert (await sk(a).get("shared-name")).reveal() == mine
    assert (await sk(b).get("shared-name")).reveal() == theirs


async def test_invalid_service_keys_are_refused_without_showing_the_secret(view: View) -> None:
    """An empty name or non-JSON metadata is a ValidationError whose message,
    repr and traceback do not contain the secret; nothing is stored."""
    me = view()
    secret = new_secret()
    calls = {
        "empty name": lambda: sk(me).put("", secret),
        "blank name": lambda: sk(me).put("   ", secret),
        "NaN metadata": lambda: sk(me).put("name", secret, metadata={"x": float("nan")}),
    }
    for label, call in calls.items():
        with pytest.raises(ValidationError) as raised:
            await call()
        shown = str(raised.value) + repr(raised.value)
        shown += "".join(traceback.format_exception(raised.value))
        assert secret not in shown, label
    assert await sk(me).list_keys() == []


async def test_any_non_empty_text_is_a_secret(view: View) -> None:
    """A secret is any non-empty text (it is sealed, never stored as text): blank and NUL-holding
    secrets round-trip; an empty secret, one that is not text or one that is not valid Unicode
    is a ValidationError whose message shows neither the value nor its length."""
    me = view()
    for name, secret in {
        "blank": "   \t ",
        "with-nul": "abc\x00def",
        "unicode": "päss-wörd-🔑",
    }.items():
        await sk(me).put(name, secret)
        assert (await sk(me).get(name)).reveal() == secret, name
    surrogate = f"{new_secret()}\ud800"
    for label, value in {"empty": "", "bytes": b"raw", "surrogate": surrogate}.items():
        with pytest.raises(ValidationError) as raised:
            await sk(me).put(f"bad-{label}", value)
        shown = str(raised.value) + repr(raised.value)
        assert surrogate[:-1] not in shown, label
        assert str(len(surrogate)) not in shown, label
    assert {k.name for k in await sk(me).list_keys()} == {"blank", "with-nul", "unicode"}


async def test_a_malformed_name_is_refused_by_every_call(view: View) -> None:
    """A name that is empty, blank or holds NUL is a ValidationError for get, delete, put and
    rotate alike."""
    me = view()
    for bad in ("", "   ", "a\x00b"):
        problems = await not_refused(
            ValidationError,
            {
                "get": lambda bad=bad: sk(me).get(bad),
                "delete": lambda bad=bad: sk(me).delete(bad),
                "put": lambda bad=bad: sk(me).put(bad, new_secret()),
                "rotate": lambda bad=bad: sk(me).rotate(bad, new_secret()),
            },
        )
        assert problems == [], repr(bad)


async def test_get_stats_counts_service_keys(view: View) -> None:
    """get_stats().service_keys counts the agent's secrets: a put of a new name adds one,
    replacing or rotating adds none, delete takes one away; another agent's never count."""
    me, other = view("me"), view("other")
    assert (await me.memory.get_stats()).service_keys == 0
    for name in ("one", "two", "three"):
        await sk(me).put(name, new_secret())
    await sk(me).put("one", new_secret())
    await sk(me).rotate("two", new_secret())
    await sk(other).put("one", new_secret())
    assert (await me.memory.get_stats()).service_keys == 3
    assert await sk(me).delete("three") is True
    assert (await me.memory.get_stats()).service_keys == 2
    assert (await other.memory.get_stats()).service_keys == 1


# --- never shown --------------------------------------------------------------------------------


async def test_the_plaintext_never_appears_in_reprs_or_logs(
    view: View, caplog: pytest.LogCaptureFixture
) -> None:
    """With every logger captured at DEBUG, a put/get/list/rotate/delete cycle (and a failed
    rotate) logs nothing holding the secret, and no repr or str of what the calls return, of the
    store or of the view shows it."""
    caplog.set_level(logging.DEBUG)
    me = view()
    first, second = new_secret(), new_secret()
    shown: list[str] = []
    with caplog.at_level(logging.DEBUG):
        for result in (
            await sk(me).put("logged", first, metadata={"k": "v"}),
            await sk(me).get("logged"),
            await sk(me).list_keys(),
            await sk(me).rotate("logged", second),
            await sk(me).get("logged"),
        ):
            shown += [repr(result), str(result), f"{result}"]
        try:
            await sk(me).rotate("not-there", first)
        except NotFoundError as exc:
            shown += [repr(exc), str(exc)]
        assert await sk(me).delete("logged") is True
    shown += [repr(sk(me)), str(sk(me)), repr(me)]
    logged = [caplog.text]
    for record in caplog.records:
        logged += [record.getMessage(), repr(record.args), str(record.exc_text)]
        logged += [repr(value) for value in vars(record).values()]
    for secret in (first, second):
        assert secret not in "\n".join(shown)
        assert secret not in "\n".join(logged)


async def test_the_plaintext_never_reaches_the_database(
    storage: Any, backend: str, view: View, request: pytest.FixtureRequest
) -> None:
    """After storing, replacing and rotating secrets, neither the plaintext nor its base64 or hex
    form is anywhere in the database: SQLite — the bytes of the .db, -wal and -shm files;
    PostgreSQL — every column of every table (service_keys included) read as the owner role."""
    me = view()
    stored = [new_secret() for _ in range(4)]
    await sk(me).put("db-check", stored[0], metadata={"note": "metadata is not secret"})
    await sk(me).put("db-check", stored[1])
    await sk(me).rotate("db-check", stored[2])
    await sk(me).put("db-other", stored[3])
    assert (await sk(me).get("db-check")).reveal() == stored[2]
    raw = raw_for(backend, request)
    found: list[str] = []
    if backend == "sqlite":
        files = sqlite_files(raw.sqlite_path or "")
        assert files, "no database file"
        for path in files:
            blob = path.read_bytes()
            found += [f"{path.name}: {leak}" for s in stored for leak in leaks(s, blob)]
    else:
        tables = await raw.tables()
        assert "service_keys" in tables, tables
        assert await raw.all_values("service_keys"), "service_keys holds no rows"
        for table in tables:
            blob = b"\n".join(await raw.all_values(table))
            found += [f"{table}: {leak}" for s in stored for leak in leaks(s, blob)]
    assert found == []


# --- the stored data and the master key (a store of the test's own) ----------------------------


async def test_a_stored_secret_copied_to_another_binding_fails_loudly(
    private_store: Any,
) -> None:
    """Associated data binds agent and version: a stored row moved to another agent, or its
    version number changed, by raw SQL makes get() raise SecretDecryptionError (never another
    value, never None), and the message does not contain the secret."""
    adapter = await private_store.open(MasterKey.generate())
    a, b = adapter.for_agent("owner-agent"), adapter.for_agent("thief-agent")
    secret = new_secret()
    await sk(a).put("moved", secret)
    raw = raw_of(private_store)
    columns = await raw.columns("service_keys")
    assert {"agent_id", "name", "version"} <= set(columns), columns
    changed = await raw.execute(
        "UPDATE service_keys SET agent_id = ? WHERE agent_id = ? AND name = ?",
        b.agent_id, a.agent_id, "moved",
    )  # fmt: skip
    assert changed >= 1
    with pytest.raises(SecretDecryptionError) as raised:
        await sk(b).get("moved")
    assert secret not in str(raised.value)
    await raw.execute(
        "UPDATE service_keys SET agent_id = ? WHERE agent_id = ? AND name = ?",
        a.agent_id, b.agent_id, "moved",
    )  # fmt: skip
    assert (await sk(a).get("moved")).reveal() == secret
    await raw.execute(
        "UPDATE service_keys SET version = version + 1 WHERE agent_id = ? AND name = ?",
        a.agent_id, "moved",
    )  # fmt: skip
    with pytest.raises(SecretDecryptionError):
        await sk(a).get("moved")


async def test_tampered_stored_bytes_fail_loudly(private_store: Any) -> None:
    """Flipping one bit of any binary column of the stored secret (ciphertext, nonce, wrapped
    key, its nonce) makes get() raise SecretDecryptionError; restoring it reads the secret
    again."""
    adapter = await private_store.open(MasterKey.generate())
    me = adapter.for_agent("tamper-agent")
    secret = new_secret()
    await sk(me).put("tampered", secret)
    raw = raw_of(private_store)
    columns = await raw.columns("service_keys")
    binary = [name for name, kind in columns.items() if kind in ("blob", "bytea")]
    assert binary, f"no binary columns in service_keys: {columns}"
    (row,) = await raw.fetch("SELECT * FROM service_keys WHERE agent_id = ?", me.agent_id)
    for column in binary:
        original = bytes(row[column])
        assert original, column
        flipped = bytearray(original)
        flipped[len(flipped) // 2] ^= 0x01
        update = f"UPDATE service_keys SET {column} = ? WHERE agent_id = ?"
        await raw.execute(update, bytes(flipped), me.agent_id)
        with pytest.raises(SecretDecryptionError) as raised:
            await sk(me).get("tampered")
        assert secret not in str(raised.value), column
        await raw.execute(update, original, me.agent_id)
        assert (await sk(me).get("tampered")).reveal() == secret, column


async def test_a_wrong_master_key_is_a_clear_error(private_store: Any) -> None:
    """An adapter opened with another master key cannot read secrets stored under the first: get()
    raises SecretDecryptionError (never garbage or None), and the message names no secret."""
    right, wrong = MasterKey.generate(), MasterKey.generate()
    first = await private_store.open(right)
    secret = new_secret()
    await sk(first.for_agent("keyed-agent")).put("api", secret)
    other = await private_store.open(wrong)
    with pytest.raises(SecretDecryptionError) as raised:
        await sk(other.for_agent("keyed-agent")).get("api")
    assert secret not in str(raised.value)
    assert right.to_base64() not in str(raised.value)
    assert [k.name for k in await sk(other.for_agent("keyed-agent")).list_keys()] == ["api"]
    assert (await sk(first.for_agent("keyed-agent")).get("api")).reveal() == secret


async def test_master_key_rotation_keeps_every_secret_readable(private_store: Any) -> None:
    """rotate_master_key(new) re-wraps every stored secret of every agent (returning how many):
    the rotating adapter and a new adapter with the new key read every current value, an adapter
    still holding the old key gets SecretDecryptionError, and versions are unchanged."""
    old, new = MasterKey.generate(), MasterKey.generate()
    adapter = await private_store.open(old)
    expected: dict[tuple[str, str], str] = {}
    versions: dict[tuple[str, str], int] = {}
    for agent in ("rot-a", "rot-b", "rot-c"):
        for name in ("openai", "github", "smtp"):
            view = adapter.for_agent(agent)
            await sk(view).put(name, new_secret())
            expected[(agent, name)] = new_secret()
            info = await sk(view).put(name, expected[(agent, name)])  # version 2
            versions[(agent, name)] = info.version
    rewrapped = await adapter.rotate_master_key(new)
    assert isinstance(rewrapped, int)
    assert rewrapped >= len(expected)
    fresh = await private_store.open(new)
    stale = await private_store.open(old)
    for (agent, name), secret in expected.items():
        assert (await sk(adapter.for_agent(agent)).get(name)).reveal() == secret
        assert (await sk(fresh.for_agent(agent)).get(name)).reveal() == secret
        with pytest.raises(SecretDecryptionError):
            await sk(stale.for_agent(agent)).get(name)
    for agent in ("rot-a", "rot-b", "rot-c"):
        listed = {k.name: k.version for k in await sk(fresh.for_agent(agent)).list_keys()}
        assert listed == {name: versions[(agent, name)] for (a, name) in versions if a == agent}
    after = new_secret()
    await sk(fresh.for_agent("rot-a")).put("later", after)
    assert (await sk(adapter.for_agent("rot-a")).get("later")).reveal() == after


async def test_master_key_rotation_leaves_the_encrypted_values_alone(private_store: Any) -> None:
    """Rotation re-wraps data keys without re-encrypting values: the stored rows keep some binary
    column (the ciphertext) byte for byte while another (the wrapped data key) changes."""
    old, new = MasterKey.generate(), MasterKey.generate()
    adapter = await private_store.open(old)
    for agent in ("wrap-a", "wrap-b"):
        await sk(adapter.for_agent(agent)).put("k", new_secret())
    raw = raw_of(private_store)
    columns = await raw.columns("service_keys")
    binary = [name for name, kind in columns.items() if kind in ("blob", "bytea")]
    order = "SELECT * FROM service_keys ORDER BY agent_id, name"
    before = await raw.fetch(order)
    await adapter.rotate_master_key(new)
    after = await raw.fetch(order)
    assert len(before) == len(after) >= 2
    pairs = list(zip(before, after, strict=True))
    kept = [c for c in binary if all(bytes(x[c]) == bytes(y[c]) for x, y in pairs)]
    moved = [c for c in binary if all(bytes(x[c]) != bytes(y[c]) for x, y in pairs)]
    assert kept, f"every binary column changed: {binary}"
    assert moved, f"no binary column changed: {binary}"


async def test_rotating_to_the_same_master_key_keeps_secrets(private_store: Any) -> None:
    """Rotating with the key already in use is harmless: every secret stays readable (by the
    adapter and by a new one with that key)."""
    key = MasterKey.generate()
    adapter = await private_store.open(key)
    secret = new_secret()
    await sk(adapter.for_agent("same-key")).put("k", secret)
    try:
        await adapter.rotate_master_key(key)
    except StorageError:
        pass  # refusing a no-op rotation is fine too, as long as nothing is lost
    assert (await sk(adapter.for_agent("same-key")).get("k")).reveal() == secret
    again = await private_store.open(key)
    assert (await sk(again.for_agent("same-key")).get("k")).reveal() == secret
