"""SQLite-specific behaviour of the Storage II stores (the shared contract lives in
test_contract_*): secrets in the database file, master-key handling and rotation, the chunk
vector cache, the 0002 migration on an existing store."""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agentbus import Config, ConfigError, SQLiteConfig, StorageConfig
from agentbus._config import ServiceKeysConfig
from agentbus.storage._canonical import now_utc
from agentbus.storage._crypto import MASTER_KEY_ENV, MasterKey
from agentbus.storage._errors import MigrationError, SecretDecryptionError, ValidationError
from agentbus.storage._sqlite import SQLiteAdapter
from agentbus.storage._sqlite_codec import ts
from agentbus.storage._sqlite_db import migrations, split_statements

from ._support import as_list, unit

pytestmark = pytest.mark.anyio

DIM = 8
SECRET = "sk-live-PLAINTEXT-0123456789abcdef"


def vec(seed: int) -> list[float]:
    return as_list(unit(seed, DIM))


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "storage2.db"


@pytest.fixture
def key() -> MasterKey:
    return MasterKey.generate()


@pytest.fixture
async def adapter(db_path: Path, key: MasterKey) -> AsyncIterator[SQLiteAdapter]:
    async with SQLiteAdapter(db_path, embedding_dim=DIM, master_key=key) as opened:
        yield opened


def raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


def file_bytes(path: Path) -> bytes:
    """The database file and its WAL / shared-memory files, as stored."""
    return b"".join(
        Path(f"{path}{suffix}").read_bytes()
        for suffix in ("", "-wal", "-shm")
        if Path(f"{path}{suffix}").exists()
    )


# --- service keys: the plaintext never reaches the file -----------------------------------------


async def test_the_plaintext_is_never_in_the_database_files(
    adapter: SQLiteAdapter, db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """After put, rotate, master-key rotation and a checkpoint, neither the secret nor its
    UTF-8/UTF-16 forms occur in the .db, -wal or -shm bytes, in reprs, or in captured logs."""
    caplog.set_level(logging.DEBUG)
    keys = adapter.for_agent("vault").service_keys
    info = await keys.put("github", SECRET, metadata={"scope": "repo"})
    await keys.put("other", SECRET + "-2")
    await keys.rotate("github", SECRET + "-rotated")
    await adapter.rotate_master_key(MasterKey.generate())
    value = await keys.get("github")
    assert value is not None
    assert value.reveal() == SECRET + "-rotated"
    forms = [SECRET.encode(), SECRET.encode("utf-16-le"), SECRET[:16].encode()]
    data = file_bytes(db_path)
    assert b"service_keys" in data  # the files were read (schema text is in them)
    assert [form for form in forms if form in data] == []
    conn = raw(db_path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    assert [form for form in forms if form in file_bytes(db_path)] == []
    for shown in (repr(value), str(value), repr(info), repr(keys), repr(adapter), caplog.text):
        assert SECRET[:16] not in shown


async def test_two_puts_of_one_secret_store_different_bytes(
    adapter: SQLiteAdapter, db_path: Path
) -> None:
    """Each write has a fresh data key and nonces: the same secret under two names (or put
    twice) gives different ciphertexts, nonces and wrapped keys."""
    keys = adapter.for_agent("twice").service_keys
    await keys.put("a", SECRET)
    await keys.put("b", SECRET)
    conn = raw(db_path)
    rows = conn.execute(
        "SELECT ciphertext, nonce, wrapped_key, key_nonce FROM service_keys"
        " WHERE agent_id = 'twice' ORDER BY name"
    ).fetchall()
    conn.close()
    assert len(rows) == 2
    assert all(first != second for first, second in zip(*rows, strict=True))


async def test_a_wrong_master_key_is_a_clear_error(db_path: Path, key: MasterKey) -> None:
    """Another adapter on the same file with another master key cannot read the secret:
    SecretDecryptionError naming both key ids, never garbage and never the value."""
    async with SQLiteAdapter(db_path, embedding_dim=DIM, master_key=key) as first:
        await first.for_agent("wrong").service_keys.put("db", SECRET)
    other = MasterKey.generate()
    async with SQLiteAdapter(db_path, embedding_dim=DIM, master_key=other) as second:
        keys = second.for_agent("wrong").service_keys
        with pytest.raises(SecretDecryptionError) as raised:
            await keys.get("db")
        assert key.key_id in str(raised.value)
        assert other.key_id in str(raised.value)
        assert SECRET not in str(raised.value)
        assert [k.name for k in await keys.list_keys()] == ["db"]  # names need no key


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("ciphertext", "x'00' || substr(ciphertext, 2)"),
        ("nonce", "zeroblob(12)"),
        ("nonce", "x''"),
        ("key_nonce", "zeroblob(3)"),
        ("wrapped_key", "x'00' || substr(wrapped_key, 2)"),
        ("version", "version + 1"),
        ("agent_id", "'thief'"),
    ],
)
async def test_altered_rows_fail_loudly(
    adapter: SQLiteAdapter, db_path: Path, column: str, value: str
) -> None:
    """A row whose ciphertext, nonce or wrapped key was altered, or that was moved to another
    version or agent (the associated data), raises SecretDecryptionError."""
    await adapter.for_agent("owner").service_keys.put("api", SECRET)
    conn = raw(db_path)
    conn.execute(f"UPDATE service_keys SET {column} = {value} WHERE name = 'api'")
    conn.close()
    reader = "thief" if column == "agent_id" else "owner"
    with pytest.raises(SecretDecryptionError) as raised:
        await adapter.for_agent(reader).service_keys.get("api")
    assert SECRET not in str(raised.value)


# --- master keys -------------------------------------------------------------------------------


async def test_rotate_master_key_rewraps_every_row(db_path: Path, key: MasterKey) -> None:
    """rotate_master_key re-wraps every agent's rows in one go: the ciphertexts and nonces stay,
    key ids change, every secret reads back through the adapter and through a new adapter with
    the new key, the old key is refused, and a second call re-wraps nothing."""
    new = MasterKey.generate()
    async with SQLiteAdapter(db_path, embedding_dim=DIM, master_key=key) as adapter:
        for agent in ("r1", "r2"):
            for name in ("a", "b"):
                await adapter.for_agent(agent).service_keys.put(name, f"{agent}/{name}")
        conn = raw(db_path)
        before = conn.execute("SELECT name, ciphertext, nonce FROM service_keys").fetchall()
        assert await adapter.rotate_master_key(new) == 4
        after = conn.execute("SELECT name, ciphertext, nonce FROM service_keys").fetchall()
        key_ids = {row[0] for row in conn.execute("SELECT key_id FROM service_keys")}
        conn.close()
        assert sorted(before) == sorted(after)
        assert key_ids == {new.key_id}
        assert await adapter.rotate_master_key(new) == 0
        value = await adapter.for_agent("r2").service_keys.get("b")
        assert value is not None
        assert value.reveal() == "r2/b"
        await adapter.for_agent("r1").service_keys.put("c", "sealed with the new key")
    async with SQLiteAdapter(db_path, embedding_dim=DIM, master_key=new) as reopened:
        for agent, name in (("r1", "a"), ("r1", "c"), ("r2", "a")):
            value = await reopened.for_agent(agent).service_keys.get(name)
            assert value is not None
    async with SQLiteAdapter(db_path, embedding_dim=DIM, master_key=key) as stale:
        with pytest.raises(SecretDecryptionError):
            await stale.for_agent("r1").service_keys.get("a")


async def test_rotation_with_a_foreign_row_changes_nothing(
    adapter: SQLiteAdapter, db_path: Path
) -> None:
    """A row the current key did not wrap makes rotation fail with SecretDecryptionError and
    leaves every row as it was (one transaction)."""
    await adapter.for_agent("f1").service_keys.put("mine", SECRET)
    foreign = SQLiteAdapter(db_path, embedding_dim=DIM, master_key=MasterKey.generate())
    async with foreign:
        await foreign.for_agent("f2").service_keys.put("theirs", SECRET)
    conn = raw(db_path)
    before = conn.execute("SELECT * FROM service_keys ORDER BY name").fetchall()
    with pytest.raises(SecretDecryptionError):
        await adapter.rotate_master_key(MasterKey.generate())
    assert conn.execute("SELECT * FROM service_keys ORDER BY name").fetchall() == before
    conn.close()
    value = await adapter.for_agent("f1").service_keys.get("mine")
    assert value is not None
    assert value.reveal() == SECRET


async def test_rotate_master_key_is_adapter_maintenance(adapter: SQLiteAdapter) -> None:
    """A view cannot rotate the store's master key, and the new key must be a MasterKey."""
    with pytest.raises(ValidationError, match="not on a view"):
        await adapter.for_agent("v").rotate_master_key(MasterKey.generate())
    with pytest.raises(ConfigError, match="MasterKey"):
        await adapter.rotate_master_key("not a key")  # type: ignore[arg-type]


async def test_from_config_loads_the_key_file_lazily(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An adapter built from config creates storage.serviceKeys.masterKeyFile (mode 0600) on the
    first service-key use, not before, and a second adapter reads the same key from it."""
    monkeypatch.delenv(MASTER_KEY_ENV, raising=False)
    key_file = tmp_path / "keys" / "master.key"
    config = Config(
        storage=StorageConfig(
            sqlite=SQLiteConfig(path=tmp_path / "config.db"),
            embedding_dim=DIM,
            service_keys=ServiceKeysConfig(master_key_file=key_file),
        )
    )
    async with SQLiteAdapter.from_config(config) as first:
        await first.for_agent("cfg").memory.create_item("no key needed")
        assert not key_file.exists()
        await first.for_agent("cfg").service_keys.put("token", SECRET)
        assert key_file.stat().st_mode & 0o777 == 0o600
    async with SQLiteAdapter.from_config(config) as second:
        value = await second.for_agent("cfg").service_keys.get("token")
        assert value is not None
        assert value.reveal() == SECRET
    assert SECRET.encode() not in key_file.read_bytes()
    assert os.stat(key_file).st_size > 0


# --- knowledge: the chunk vector cache and deletion ---------------------------------------------


async def test_chunk_cache_follows_another_adapter(db_path: Path, key: MasterKey) -> None:
    """Documents ingested and deleted through a second adapter on the file reach the first
    adapter's chunk vector search (data_version + the change log, incrementally), and a grant
    made there is honoured at once."""
    async with (
        SQLiteAdapter(db_path, embedding_dim=DIM, master_key=key) as first,
        SQLiteAdapter(db_path, embedding_dim=DIM, master_key=key) as second,
    ):
        owner, reader = second.for_agent("owner"), first.for_agent("reader")
        collection = await owner.knowledge.create_collection("shared later")
        doc = await owner.knowledge.ingest_document(
            collection.id, "one", "first document", embeddings=[vec(1)]
        )
        assert await reader.knowledge.search("", embedding=vec(1), mode="vector") == []
        await owner.knowledge.grant(collection.id, "reader", "read")
        hits = await reader.knowledge.search("", embedding=vec(1), mode="vector")
        assert [h.document_id for h in hits] == [doc.id]
        other = await owner.knowledge.ingest_document(
            collection.id, "two", "second document", embeddings=[vec(2)]
        )
        hits = await reader.knowledge.search("", embedding=vec(2), mode="vector", limit=1)
        assert [h.document_id for h in hits] == [other.id]
        await owner.knowledge.delete_document(other.id)
        hits = await reader.knowledge.search("", embedding=vec(2), mode="vector")
        assert [h.document_id for h in hits] == [doc.id]
        cache = first._db.chunk_vectors
        assert cache.full_loads == 1
        assert cache.incremental_loads >= 2


async def test_a_stacked_permitted_set_follows_changes(db_path: Path, key: MasterKey) -> None:
    """A set of permitted collections searched again is scored from one stacked matrix; a chunk
    added to or removed from one of them (by another adapter), or a new grant, is seen by the
    next search all the same."""
    async with (
        SQLiteAdapter(db_path, embedding_dim=DIM, master_key=key) as first,
        SQLiteAdapter(db_path, embedding_dim=DIM, master_key=key) as second,
    ):
        owner, reader = second.for_agent("owner"), first.for_agent("reader")
        a = await owner.knowledge.create_collection("a")
        b = await owner.knowledge.create_collection("b")
        in_a = await owner.knowledge.ingest_document(a.id, "a1", "in a", embeddings=[vec(1)])
        in_b = await owner.knowledge.ingest_document(b.id, "b1", "in b", embeddings=[vec(2)])
        for collection in (a, b):
            await owner.knowledge.grant(collection.id, "reader", "read")
        cache = first._db.chunk_vectors
        for _ in range(2):
            hits = await reader.knowledge.search("", embedding=vec(2), mode="vector")
            assert [h.document_id for h in hits] == [in_b.id, in_a.id]
        assert len(cache._stacks) == 1
        added = await owner.knowledge.ingest_document(b.id, "b2", "new in b", embeddings=[vec(3)])
        hits = await reader.knowledge.search("", embedding=vec(3), mode="vector", limit=1)
        assert [h.document_id for h in hits] == [added.id]
        await owner.knowledge.delete_document(added.id)
        hits = await reader.knowledge.search("", embedding=vec(3), mode="vector")
        assert {h.document_id for h in hits} == {in_a.id, in_b.id}
        c = await owner.knowledge.create_collection("c")
        in_c = await owner.knowledge.ingest_document(c.id, "c1", "in c", embeddings=[vec(4)])
        await owner.knowledge.grant(c.id, "reader", "read")
        hits = await reader.knowledge.search("", embedding=vec(4), mode="vector", limit=1)
        assert [h.document_id for h in hits] == [in_c.id]


async def test_deleting_a_collection_cleans_every_table(
    adapter: SQLiteAdapter, db_path: Path
) -> None:
    """delete_collection removes documents, chunks (FTS5 entries included, through the cascade's
    triggers), grants and the cached vectors; vacuum prunes the chunk change log."""
    owner = adapter.for_agent("cleaner").knowledge
    collection = await owner.create_collection("temporary")
    await owner.grant(collection.id, "guest", "write")
    long_text = " ".join(f"zebrafinch sentence number {i}." for i in range(200))
    doc = await owner.ingest_document(collection.id, "long", long_text)
    assert doc.chunk_count > 1
    await owner.ingest_document(collection.id, "vec", "zebrafinch", embeddings=[vec(3)])
    assert await owner.search("zebrafinch", mode="keyword", limit=50)
    assert await owner.search("", embedding=vec(3), mode="vector")
    await owner.delete_collection(collection.id)
    conn = raw(db_path)
    try:
        for table in ("knowledge_documents", "knowledge_chunks", "knowledge_collection_grants"):
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0, table
        fts = "SELECT count(*) FROM knowledge_chunks_fts WHERE knowledge_chunks_fts MATCH ?"
        assert conn.execute(fts, ("zebrafinch",)).fetchone()[0] == 0
        conn.execute(
            "INSERT INTO knowledge_chunks_fts (knowledge_chunks_fts) VALUES ('integrity-check')"
        )
    finally:
        conn.close()
    assert await owner.search("", embedding=vec(3), mode="vector") == []
    assert len(adapter._db.chunk_vectors) == 0
    await adapter.vacuum()
    conn = raw(db_path)
    assert conn.execute("SELECT count(*) FROM knowledge_vector_changes").fetchone()[0] == 0
    conn.close()


# --- the migration ------------------------------------------------------------------------------


async def test_0002_upgrades_a_store_made_by_0001(db_path: Path, key: MasterKey) -> None:
    """A store that has only the 0001 schema (made by the previous release) gets 0002 on open,
    keeps its rows, and serves the new stores."""
    (version, name, sql), *_ = migrations()
    conn = raw(db_path)
    conn.execute(
        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
        " applied_at TEXT NOT NULL)"
    )
    conn.execute("BEGIN")
    for statement in split_statements(sql):
        conn.execute(statement)
    now = ts(now_utc())
    conn.execute("INSERT INTO schema_migrations VALUES (?, ?, ?)", (version, name, now))
    conn.execute(
        "INSERT INTO agents (id, name, status, created_at, updated_at)"
        " VALUES ('up', 'Up', 'active', ?, ?)",
        (now, now),
    )
    conn.execute("COMMIT")
    conn.close()
    async with SQLiteAdapter(db_path, embedding_dim=DIM, master_key=key) as adapter:
        conn = raw(db_path)
        versions = [row[0] for row in conn.execute("SELECT version FROM schema_migrations")]
        conn.close()
        assert versions == [v for v, _, _ in migrations()]
        assert (await adapter.agents.get_agent("up")) is not None
        me = adapter.for_agent("up")
        await me.observations.record("s1", "tool_call", "upgraded store works")
        assert [o.summary for o in await me.observations.search("upgraded")] == [
            "upgraded store works"
        ]


async def test_chunk_embeddings_keep_the_store_dimension(db_path: Path, key: MasterKey) -> None:
    """Reopening a store whose knowledge chunks hold vectors with another embedding_dim is a
    MigrationError, as for memory items."""
    async with SQLiteAdapter(db_path, embedding_dim=DIM, master_key=key) as first:
        knowledge = first.for_agent("dim").knowledge
        collection = await knowledge.create_collection("vectors")
        await knowledge.ingest_document(collection.id, "t", "text", embeddings=[vec(4)])
    with pytest.raises(MigrationError, match=f"{DIM}-dimensional"):
        await SQLiteAdapter(db_path, embedding_dim=DIM * 2, master_key=key).open()
