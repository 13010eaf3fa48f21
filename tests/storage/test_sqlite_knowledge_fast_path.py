"""SQLite knowledge vector search answered on the event loop from the chunk vector cache
(``search_now``): used once the cache is fresh and knows the reader's permitted collections, and
never stale — a revoke, a grant, a visibility change or a deleted document, by this adapter,
another adapter on the same file or raw SQL, is honoured by the very next search; hybrid and
keyword search use the permitted ids read once."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from agentbus.storage import _sqlite_chunk_vectors as chunk_vectors
from agentbus.storage._models import KnowledgeCollection
from agentbus.storage._sqlite import SQLiteAdapter
from agentbus.storage._sqlite_chunk_vectors import ChunkVectorCache
from agentbus.storage._sqlite_knowledge import SQLiteKnowledgeStore
from agentbus.storage._sqlite_knowledge_search import in_ids

from ._support import as_list, unit

pytestmark = pytest.mark.anyio

DIM = 8


def vec(seed: int) -> list[float]:
    return as_list(unit(seed, DIM))


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "knowledge.db"


@pytest.fixture
async def adapter(db_path: Path) -> AsyncIterator[SQLiteAdapter]:
    async with SQLiteAdapter(db_path, embedding_dim=DIM) as opened:
        yield opened


def cache_of(adapter: SQLiteAdapter) -> ChunkVectorCache:
    return adapter._db.chunk_vectors


def raw_sql(path: Path, sql: str, *params: object) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute(sql, params)
    finally:
        conn.close()


async def shared(adapter: SQLiteAdapter, seeds: range) -> tuple[KnowledgeCollection, list[str]]:
    """A collection of ``owner`` with one embedded document per seed, readable by ``reader``."""
    owner = adapter.for_agent("owner").knowledge
    collection = await owner.create_collection("manuals")
    docs = []
    for seed in seeds:
        doc = await owner.ingest_document(
            collection.id, f"doc {seed}", f"chunk text {seed}", embeddings=[vec(seed)]
        )
        docs.append(doc.id)
    await owner.grant(collection.id, "reader", "read")
    return collection, docs


async def vector_docs(store: SQLiteKnowledgeStore, seed: int, limit: int = 10) -> list[str]:
    hits = await store.search("", embedding=vec(seed), mode="vector", limit=limit)
    return [hit.document_id for hit in hits]


async def test_a_repeated_vector_search_is_answered_from_the_cache(
    adapter: SQLiteAdapter,
) -> None:
    """The first search reads the grants and loads the cache in a worker thread; the same search
    again is answered from memory with the same hits (text and title included)."""
    collection, docs = await shared(adapter, range(6))
    reader = adapter.for_agent("reader").knowledge
    cache = cache_of(adapter)
    first = await reader.search("", embedding=vec(2), mode="vector", limit=3)
    assert cache.served_now == 0
    second = await reader.search("", embedding=vec(2), mode="vector", limit=3)
    assert cache.served_now == 1
    assert second == first
    top = second[0]
    assert (top.document_id, top.collection_id, top.title, top.text, top.chunk_index) == (
        docs[2], collection.id, "doc 2", "chunk text 2", 0,
    )  # fmt: skip
    assert (top.vector_rank, top.keyword_rank) == (1, None)
    assert top.score == pytest.approx(1.0, abs=1e-6)
    # ``collection_ids`` narrows the cached permitted set on the fast path too.
    other = "0190f000-0000-7000-8000-000000000000"
    assert await reader.search("", embedding=vec(2), mode="vector", collection_ids=[other]) == []
    narrowed = await reader.search(
        "", embedding=vec(2), mode="vector", limit=3, collection_ids=[other, collection.id]
    )
    assert narrowed == first
    assert cache.served_now == 3


async def test_an_agent_whose_grants_were_not_read_takes_the_thread_path(
    adapter: SQLiteAdapter,
) -> None:
    """A fresh cache does not answer for an agent whose permitted collections it has not read
    since the last commit: that search reads them (in a worker thread) and the next is fast."""
    await shared(adapter, range(3))
    reader = adapter.for_agent("reader").knowledge
    stranger = adapter.for_agent("stranger").knowledge
    await vector_docs(reader, 1)
    await vector_docs(reader, 1)
    cache = cache_of(adapter)
    assert cache.served_now == 1
    assert await vector_docs(stranger, 1) == []
    assert cache.served_now == 1
    assert await vector_docs(stranger, 1) == []
    assert cache.served_now == 2


async def test_a_revoke_by_this_adapter_removes_every_hit_at_once(adapter: SQLiteAdapter) -> None:
    collection, _ = await shared(adapter, range(4))
    reader = adapter.for_agent("reader").knowledge
    for _ in range(2):
        assert len(await vector_docs(reader, 0)) == 4
    assert cache_of(adapter).served_now == 1
    await adapter.for_agent("owner").knowledge.revoke(collection.id, "reader")
    for mode in ("vector", "hybrid", "vector"):
        assert await reader.search("chunk text", embedding=vec(0), mode=mode) == []
    assert await reader.search("chunk text", mode="keyword") == []
    assert cache_of(adapter).served_now == 2  # the last vector search: fresh again, still empty


async def test_a_revoke_by_another_adapter_removes_every_hit_at_once(
    adapter: SQLiteAdapter, db_path: Path
) -> None:
    collection, _ = await shared(adapter, range(4))
    reader = adapter.for_agent("reader").knowledge
    for _ in range(2):
        assert len(await vector_docs(reader, 0)) == 4
    served = cache_of(adapter).served_now
    assert served == 1
    async with SQLiteAdapter(db_path, embedding_dim=DIM) as other:
        await other.for_agent("owner").knowledge.revoke(collection.id, "reader")
    assert await vector_docs(reader, 0) == []
    assert cache_of(adapter).served_now == served  # the thread path read the grants again
    assert await reader.search("chunk", embedding=vec(0), mode="hybrid") == []


async def test_grant_changes_by_raw_sql_are_honoured_by_the_next_search(
    adapter: SQLiteAdapter, db_path: Path
) -> None:
    """Deleting the grant row, adding it back, and making the collection public then private
    again — each straight in the file — changes the very next vector search."""
    collection, docs = await shared(adapter, range(3))
    reader = adapter.for_agent("reader").knowledge
    for _ in range(2):
        assert len(await vector_docs(reader, 1)) == 3
    raw_sql(db_path, "DELETE FROM knowledge_collection_grants WHERE agent_id = 'reader'")
    assert await vector_docs(reader, 1) == []
    assert await vector_docs(reader, 1) == []
    raw_sql(
        db_path,
        "INSERT INTO knowledge_collection_grants (collection_id, agent_id, permission,"
        " granted_by, granted_at) VALUES (?, 'reader', 'read', 'owner', '2024-01-01T00:00:00Z')",
        collection.id,
    )
    assert len(await vector_docs(reader, 1)) == 3
    guest = adapter.for_agent("guest").knowledge
    assert await vector_docs(guest, 1) == []
    assert await vector_docs(guest, 1) == []
    served = cache_of(adapter).served_now
    raw_sql(db_path, "UPDATE knowledge_collections SET visibility = 'public' WHERE id = ?",
            collection.id)  # fmt: skip
    assert (await vector_docs(guest, 1))[0] == docs[1]
    raw_sql(db_path, "UPDATE knowledge_collections SET visibility = 'private' WHERE id = ?",
            collection.id)  # fmt: skip
    assert await vector_docs(guest, 1) == []
    assert await vector_docs(guest, 1) == []
    assert cache_of(adapter).served_now == served + 1  # only the last one was fast


async def test_documents_deleted_or_changed_elsewhere_are_seen_by_the_next_search(
    adapter: SQLiteAdapter, db_path: Path
) -> None:
    """A document deleted through another adapter disappears; a chunk's text and a document's
    title changed by raw SQL (never done by agentbus, caught by the 0006 triggers) are shown
    as they are now."""
    _, docs = await shared(adapter, range(3))
    reader = adapter.for_agent("reader").knowledge
    for _ in range(2):
        assert await vector_docs(reader, 2, limit=1) == docs[2:]
    async with SQLiteAdapter(db_path, embedding_dim=DIM) as other:
        await other.for_agent("owner").knowledge.delete_document(docs[2])
    assert docs[2] not in await vector_docs(reader, 2)
    for _ in range(2):
        hit = (await reader.search("", embedding=vec(1), mode="vector", limit=1))[0]
        assert (hit.title, hit.text) == ("doc 1", "chunk text 1")
    raw_sql(db_path, "UPDATE knowledge_chunks SET text = 'edited text' WHERE document_id = ?",
            docs[1])  # fmt: skip
    raw_sql(db_path, "UPDATE knowledge_documents SET title = 'renamed' WHERE id = ?", docs[1])
    served = cache_of(adapter).served_now
    for _ in range(2):
        hit = (await reader.search("", embedding=vec(1), mode="vector", limit=1))[0]
        assert (hit.title, hit.text) == ("renamed", "edited text")
    assert cache_of(adapter).served_now == served + 1


async def test_own_ingest_and_delete_reach_the_next_search(adapter: SQLiteAdapter) -> None:
    collection, docs = await shared(adapter, range(2))
    owner = adapter.for_agent("owner").knowledge
    reader = adapter.for_agent("reader").knowledge
    for _ in range(2):
        await vector_docs(reader, 7)
    added = await owner.ingest_document(collection.id, "new", "new text", embeddings=[vec(7)])
    assert (await vector_docs(reader, 7))[0] == added.id
    await owner.delete_document(added.id)
    assert sorted(await vector_docs(reader, 7)) == sorted(docs)
    await owner.delete_collection(collection.id)
    assert await vector_docs(reader, 7) == []
    assert await vector_docs(reader, 7) == []


async def test_hybrid_reads_unembedded_keyword_hits_from_the_database(
    adapter: SQLiteAdapter,
) -> None:
    """In hybrid search, hits come from the cache where it holds the chunk, and a keyword hit
    without an embedding (not cached) is read in the search's transaction."""
    collection, docs = await shared(adapter, range(2))
    owner = adapter.for_agent("owner").knowledge
    plain = await owner.ingest_document(collection.id, "plain", "walrus without vector")
    reader = adapter.for_agent("reader").knowledge
    hits = await reader.search("walrus", embedding=vec(0), mode="hybrid")
    by_doc = {hit.document_id: hit for hit in hits}
    assert set(by_doc) == {plain.id, *docs}
    assert (by_doc[plain.id].title, by_doc[plain.id].text) == ("plain", "walrus without vector")
    assert (by_doc[plain.id].keyword_rank, by_doc[plain.id].vector_rank) == (1, None)
    assert by_doc[docs[0]].vector_rank == 1
    assert by_doc[docs[0]].text == "chunk text 0"


async def test_a_busy_cache_sends_the_search_to_the_thread_path(adapter: SQLiteAdapter) -> None:
    """While a worker thread holds the cache, the loop never waits for it."""
    _, docs = await shared(adapter, range(2))
    reader = adapter.for_agent("reader").knowledge
    await vector_docs(reader, 1)
    cache = cache_of(adapter)
    probe = adapter._db.probe()
    assert probe is not None
    assert cache.search_now("reader", np.asarray(vec(1), np.float32), 1, probe=probe)
    assert cache._lock.acquire()
    try:
        assert cache.search_now("reader", np.asarray(vec(1), np.float32), 1, probe=probe) is None
    finally:
        cache._lock.release()
    assert (await vector_docs(reader, 1))[0] == docs[1]


@pytest.mark.parametrize("count", [1, 500, 501, 40_000])
def test_permitted_ids_are_passed_whatever_their_count(count: int) -> None:
    """Up to 500 ids are bound one parameter each; more go as one JSON array, so an agent
    reading very many collections stays under SQLite's parameter limit."""
    conn = sqlite3.connect(":memory:")
    try:
        conn.execute("CREATE TABLE t (collection_id TEXT)")
        ids = [f"c{i}" for i in range(count)]
        conn.executemany("INSERT INTO t VALUES (?)", [(i,) for i in [*ids, "other"]])
        sql, params = in_ids("collection_id", ids)
        assert len(params) == (count if count <= 500 else 1)
        found = conn.execute(f"SELECT collection_id FROM t WHERE {sql}", params).fetchall()
        assert sorted(row[0] for row in found) == sorted(ids)
    finally:
        conn.close()


async def test_too_many_permitted_chunks_for_the_loop_take_the_thread_path(
    adapter: SQLiteAdapter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Scoring is bounded on the event loop: past the bound the same search runs in a worker
    thread, with the same hits."""
    _, docs = await shared(adapter, range(5))
    reader = adapter.for_agent("reader").knowledge
    first = await vector_docs(reader, 3)
    monkeypatch.setattr(chunk_vectors, "NOW_MAX_WORK", 4 * DIM)  # 4 chunks: fewer than 5
    assert await vector_docs(reader, 3) == first
    assert cache_of(adapter).served_now == 0
    monkeypatch.setattr(chunk_vectors, "NOW_MAX_WORK", 5 * DIM)
    assert await vector_docs(reader, 3) == first
    assert cache_of(adapter).served_now == 1
    assert first[0] == docs[3]
