"""PostgreSQL-specific behaviour of Storage II: knowledge grants and per-agent rows enforced by
row-level security for raw SQL on the app role's connection, knowledge search on its GIN and HNSW
indexes under RLS (EXPLAIN as the app role), k permitted hits on both vector paths, master-key
rotation as the owner role, and migrations that refuse to reshape tables holding foreign rows.

The shared behaviour of both backends is in the contract suite (test_contract_knowledge.py …).
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import numpy as np
import pytest

from agentbus import ConfigError
from agentbus._config import parse_config
from agentbus.storage._canonical import chunk_text
from agentbus.storage._crypto import MASTER_KEY_ENV, MasterKey, seal
from agentbus.storage._errors import MigrationError, SecretDecryptionError, StorageError
from agentbus.storage._pg_migrations import _LEDGER, _apply, load_migrations, migrate
from agentbus.storage._postgres import PgAdapter
from agentbus.testing import PostgresServer

from ._support import EMBEDDING_DIM, as_list, unit
from .test_postgres_adapter import acting_as, adapter_for, create_database, psql, refused

pytestmark = pytest.mark.anyio

DENIED = "InsufficientPrivilegeError"  # what a WITH CHECK policy raises
KNOWLEDGE_TABLES = (
    "knowledge_collections", "knowledge_collection_grants", "knowledge_documents",
    "knowledge_chunks",
)  # fmt: skip


async def counts(conn: Any, agent: str | None, collection_id: str) -> dict[str, int]:
    """Rows of one collection in every knowledge table, as seen by ``agent`` on ``conn``."""
    found = {}
    async with acting_as(conn, agent):
        for table in KNOWLEDGE_TABLES:
            column = "id" if table == "knowledge_collections" else "collection_id"
            found[table] = await conn.fetchval(
                f"SELECT count(*) FROM {table} WHERE {column} = $1", collection_id
            )
    return found


# --- knowledge grants hold for raw SQL -------------------------------------------------------


async def test_raw_sql_hides_an_ungranted_collection_and_refuses_self_grants(
    postgres_adapter: PgAdapter, new_agent: Callable[..., str], app_conn: Any
) -> None:
    """On a raw app-role connection with B's id, A's private collection (its row, grants,
    documents, chunks) is invisible, UPDATE and DELETE touch none of it, and B can neither grant
    itself any permission nor write a document or chunk into it — failing exactly like for a
    collection that does not exist. With a read grant B sees the collection, its documents and
    chunks and its own grant only, and still cannot write, raise its grant or grant others."""
    a_id, b_id, third = new_agent("a"), new_agent("b"), new_agent("third")
    a, b = postgres_adapter.for_agent(a_id), postgres_adapter.for_agent(b_id)
    c = await a.knowledge.create_collection("raw guarded")
    doc = await a.knowledge.ingest_document(c.id, "doc", "harbor " * 400)
    await a.knowledge.grant(c.id, third, "read")
    assert all((await counts(app_conn, a.agent_id, c.id)).values())
    assert not any((await counts(app_conn, b.agent_id, c.id)).values())
    assert not any((await counts(app_conn, None, c.id)).values())
    async with acting_as(app_conn, b.agent_id):
        for table in KNOWLEDGE_TABLES:
            column = "id" if table == "knowledge_collections" else "collection_id"
            assert await app_conn.execute(
                f"DELETE FROM {table} WHERE {column} = $1", c.id) == "DELETE 0"  # fmt: skip
        assert await app_conn.execute(
            "UPDATE knowledge_collections SET visibility = 'public' WHERE id = $1", c.id
        ) == "UPDATE 0"  # fmt: skip
    missing = "0190f7b0-0000-7000-8000-000000000000"
    writes = {
        "grant itself read": "INSERT INTO knowledge_collection_grants VALUES"
        " ($1, $2, 'read', $2, now())",
        "grant itself owner": "INSERT INTO knowledge_collection_grants VALUES"
        " ($1, $2, 'owner', $2, now())",
        "grant in a's name": "INSERT INTO knowledge_collection_grants VALUES"
        f" ($1, $2, 'read', '{a.agent_id}', now())",
        "write a document": "INSERT INTO knowledge_documents (id, collection_id, agent_id,"
        " title, content_hash, metadata, created_at, updated_at, content, chunk_count)"
        " VALUES (gen_random_uuid()::text, $1, $2, 't', 'h', '{}', now(), now(), 'x', 1)",
        "write a chunk": "INSERT INTO knowledge_chunks (id, document_id, collection_id, agent_id,"
        f" chunk_index, content, created_at) VALUES ('forged', '{doc.id}', $1, $2, 99, 'x',"
        " now())",
    }
    for name, sql in writes.items():
        assert await refused(app_conn, b.agent_id, sql, c.id, b.agent_id) == DENIED, name
        assert await refused(app_conn, b.agent_id, sql, missing, b.agent_id) == DENIED, name

    await a.knowledge.grant(c.id, b_id, "read")
    seen = await counts(app_conn, b.agent_id, c.id)
    assert seen == {
        "knowledge_collections": 1, "knowledge_collection_grants": 1, "knowledge_documents": 1,
        "knowledge_chunks": doc.chunk_count,
    }  # fmt: skip
    for name in ("grant itself owner", "write a document", "write a chunk"):
        assert await refused(app_conn, b.agent_id, writes[name], c.id, b.agent_id) == DENIED
    async with acting_as(app_conn, b.agent_id):
        assert await app_conn.execute(
            "UPDATE knowledge_collection_grants SET permission = 'owner'"
            " WHERE collection_id = $1 AND agent_id = $2", c.id, b.agent_id,
        ) == "UPDATE 0"  # fmt: skip
    expected = msgspec.structs.replace(c, permission="read", document_count=1)
    assert await b.knowledge.get_collection(c.id) == expected
    await a.knowledge.revoke(c.id, b_id)
    assert not any((await counts(app_conn, b.agent_id, c.id)).values())


# agent, query, embedding (text), limit, collection ids (NULL: every readable one)
RAW_SEARCH = (
    "SELECT collection_id, content FROM agentbus_search_knowledge($1, $2, $3::text::vector, 10, $4)"
)


async def raw_search(
    conn: Any, agent: str | None, argument: Any, query: str | None, embedding: str | None,
    among: list[str] | None = None,
) -> list[Any]:  # fmt: skip
    """agentbus_search_knowledge as the app role in a transaction acting as ``agent``, with
    ``argument`` as the function's agent argument."""
    async with acting_as(conn, agent):
        return list(await conn.fetch(RAW_SEARCH, argument, query, embedding, among))


async def test_raw_sql_search_answers_only_the_transaction_s_agent_and_its_grants(
    postgres_adapter: PgAdapter, new_agent: Callable[..., str], app_conn: Any
) -> None:
    """agentbus_search_knowledge on a raw app-role connection returns no chunk when no agent id
    is set (whatever its agent argument says), when its agent argument names another agent than
    the transaction's, or — even named in its collection list — from a collection the agent may
    not read; a grant makes the chunks found, and a revoke removes them from the next statement.
    The agent id it sets for PgAdapter's one-statement call does not outlive that statement."""
    a_id, b_id = new_agent("a"), new_agent("b")
    a = postgres_adapter.for_agent(a_id).knowledge
    term = "zq" + "".join(chr(ord("a") + int(c, 16)) for c in secrets.token_hex(4))
    c = await a.create_collection("raw search")
    await a.ingest_document(c.id, "doc", f"the {term} harbor", embeddings=[as_list(unit(5))])
    embedding = "[" + ",".join(str(v) for v in unit(5)) + "]"
    for query, vector in ((term, None), (None, embedding), (term, embedding)):
        assert len(await raw_search(app_conn, a_id, a_id, query, vector)) == 1  # the owner
        for agent, argument in ((None, a_id), (None, None), (b_id, a_id), (a_id, b_id)):
            assert await raw_search(app_conn, agent, argument, query, vector) == []
        assert await raw_search(app_conn, b_id, b_id, query, vector, [c.id]) == []
    await a.grant(c.id, b_id, "read")
    found = await raw_search(app_conn, b_id, b_id, term, embedding, [c.id])
    assert [(row["collection_id"], row["content"]) for row in found] == [
        (c.id, f"the {term} harbor")
    ]
    await a.revoke(c.id, b_id)
    assert await raw_search(app_conn, b_id, b_id, term, embedding) == []

    row = await app_conn.fetchrow(
        "SELECT count(*) AS n FROM agentbus_search_knowledge("
        " set_config('app.agent_id', $1, true), $2, NULL, 10)",
        a_id, term,
    )  # fmt: skip
    assert row["n"] == 1
    assert await app_conn.fetchval("SELECT current_setting('app.agent_id', true)") in ("", None)


async def test_the_search_helpers_are_the_owner_s_alone(app_conn: Any) -> None:
    """The app role may call agentbus_search_knowledge only: the branches it runs as the owner
    (keyword hits, HNSW scan) take a list of permitted collections, so they are not executable
    by the app role; the functions 0010 replaced are gone."""
    calls = {
        "keyword": "SELECT * FROM agentbus_knowledge_keyword_hits('x'::tsquery, 10, '{}')",
        "hnsw": "SELECT * FROM agentbus_nearest_chunks_hnsw(NULL, 10, '{}', 40)",
    }
    for name, sql in calls.items():
        assert await refused(app_conn, "someone", sql) == DENIED, name
    for gone in ("agentbus_search_knowledge_keyword", "agentbus_search_knowledge_vector"):
        assert await app_conn.fetchval(
            "SELECT count(*) FROM pg_proc WHERE proname = $1", gone
        ) == 0  # fmt: skip


async def test_raw_sql_keeps_owners_and_grantees_to_the_rules(
    postgres_adapter: PgAdapter, new_agent: Callable[..., str], app_conn: Any
) -> None:
    """Even the owner's raw SQL cannot hand the collection to another agent (agent_id is
    immutable), grant a wildcard ('*', '_', '%'), store an unknown permission, or give the
    creator a grant row (which could then be revoked or downgraded) — neither the creator nor a
    co-owner, by INSERT or by UPDATE; no agent can create a collection in another agent's
    name."""
    a, b = (postgres_adapter.for_agent(new_agent(x)) for x in ("a", "b"))
    c = await a.knowledge.create_collection("kept")
    await a.knowledge.grant(c.id, b.agent_id, "owner")
    grant = "INSERT INTO knowledge_collection_grants VALUES ($1, $2, $3, $4, now())"
    for granter in (a.agent_id, b.agent_id):
        for permission in ("read", "owner"):
            creator_grant = await refused(
                app_conn, granter, grant, c.id, a.agent_id, permission, granter
            )
            assert creator_grant == DENIED, (granter, permission)
    moved_grant = await refused(
        app_conn, b.agent_id,
        "UPDATE knowledge_collection_grants SET agent_id = $2, granted_by = $3"
        " WHERE collection_id = $1 AND agent_id = $3",
        c.id, a.agent_id, b.agent_id,
    )  # fmt: skip
    assert moved_grant == DENIED
    assert [g.agent_id for g in await a.knowledge.list_grants(c.id)] == [b.agent_id]
    await a.knowledge.revoke(c.id, b.agent_id)
    moved = await refused(
        app_conn, a.agent_id, "UPDATE knowledge_collections SET agent_id = $2 WHERE id = $1",
        c.id, b.agent_id,
    )  # fmt: skip
    assert moved == "CheckViolationError"
    for grantee in ("*", "_", "%", "a*", ""):
        wildcard = await refused(
            app_conn, a.agent_id,
            "INSERT INTO knowledge_collection_grants VALUES ($1, $2, 'read', $3, now())",
            c.id, grantee, a.agent_id,
        )  # fmt: skip
        assert wildcard == "CheckViolationError", grantee
    admin = await refused(
        app_conn, a.agent_id,
        "INSERT INTO knowledge_collection_grants VALUES ($1, $2, 'admin', $3, now())",
        c.id, b.agent_id, a.agent_id,
    )  # fmt: skip
    assert admin == "CheckViolationError"
    forged = await refused(
        app_conn, b.agent_id,
        "INSERT INTO knowledge_collections (id, agent_id, name, visibility, created_at,"
        " updated_at) VALUES (gen_random_uuid()::text, $1, 'forged', 'public', now(), now())",
        a.agent_id,
    )  # fmt: skip
    assert forged == DENIED
    assert await a.knowledge.get_collection(c.id) == c


async def test_raw_sql_keeps_service_keys_and_session_rows_to_their_agent(
    postgres_adapter: PgAdapter, new_agent: Callable[..., str], app_conn: Any
) -> None:
    """B's raw SQL sees none of A's service keys, observations, feedback or live candidates,
    changes none, and cannot write rows in A's name; A's own connection sees them, and the stored
    service key holds no form of the plaintext."""
    a, b = (postgres_adapter.for_agent(new_agent(x)) for x in ("a", "b"))
    secret = f"sk-{secrets.token_hex(16)}"
    await a.service_keys.put("api", secret)
    await a.observations.record("s1", "tool", "ran the harbor tool")
    await a.feedback.record("s1", "model-x")
    await a.live_candidates.create("maybe a duplicate")
    tables = ("service_keys", "observations", "model_feedback", "live_candidates")
    async with acting_as(app_conn, b.agent_id):
        for table in tables:
            where = f"FROM {table} WHERE agent_id = $1"
            assert await app_conn.fetchval(f"SELECT count(*) {where}", a.agent_id) == 0, table
            assert await app_conn.execute(f"DELETE {where}", a.agent_id) == "DELETE 0", table
            assert await app_conn.execute(
                f"UPDATE {table} SET agent_id = agent_id WHERE agent_id = $1", a.agent_id
            ) == "UPDATE 0"  # fmt: skip
    forged = await refused(
        app_conn, b.agent_id,
        "INSERT INTO observations (id, agent_id, session_id, kind, summary, started_at,"
        " created_at) VALUES ('forged', $1, 's', 'k', 'x', now(), now())",
        a.agent_id,
    )  # fmt: skip
    assert forged == DENIED
    async with acting_as(app_conn, a.agent_id):
        for table in tables:
            assert await app_conn.fetchval(
                f"SELECT count(*) FROM {table} WHERE agent_id = $1", a.agent_id) == 1  # fmt: skip
        row = await app_conn.fetchrow(
            "SELECT row_to_json(sk)::text AS text, wrapped_key, key_nonce, nonce, ciphertext"
            " FROM service_keys sk WHERE agent_id = $1", a.agent_id,
        )  # fmt: skip
    stored = row["text"].encode() + b"".join(bytes(row[c]) for c in list(row.keys())[1:])
    assert secret.encode() not in stored
    assert secret.encode().hex().encode() not in stored


async def test_the_embedded_chunk_counter_follows_ingests_and_deletes(
    postgres_adapter: PgAdapter, new_agent: Callable[..., str], app_conn: Any,
    postgres_server: PostgresServer, pg_database: str,
) -> None:  # fmt: skip
    """knowledge_collections.embedded_chunks (what vector search picks its path by) equals the
    collection's chunks with embeddings after ingests with and without embeddings, a writer's
    ingest, document deletes and a collection delete; no agent can set it, not even the owner."""
    a_id, w_id = new_agent("a"), new_agent("w")
    a, writer = postgres_adapter.for_agent(a_id), postgres_adapter.for_agent(w_id)
    c = await a.knowledge.create_collection("counted")
    await a.knowledge.grant(c.id, w_id, "write")
    owner: asyncpg.Connection[Any] = await asyncpg.connect(
        postgres_server.dsn_for("agentbus_owner", pg_database)
    )

    async def check() -> int:
        stored, actual = await owner.fetchrow(
            "SELECT c.embedded_chunks, (SELECT count(*) FROM knowledge_chunks k"
            " WHERE k.collection_id = c.id AND k.embedding IS NOT NULL)"
            " FROM knowledge_collections c WHERE c.id = $1", c.id,
        )  # fmt: skip
        assert stored == actual
        return int(stored)

    try:
        long = "\n\n".join(f"paragraph {n} " + "harbor lantern " * 60 for n in range(6))
        n = len(chunk_text(long))
        first = await a.knowledge.ingest_document(
            c.id, "long", long, embeddings=[as_list(unit(i)) for i in range(n)]
        )
        await a.knowledge.ingest_document(c.id, "plain", "no vectors here")
        second = await writer.knowledge.ingest_document(
            c.id, "w", "one vector", embeddings=[as_list(unit(99))]
        )
        assert await check() == n + 1
        await writer.knowledge.delete_document(first.id)
        assert await check() == 1
        forged = await refused(
            app_conn, a_id, "UPDATE knowledge_collections SET embedded_chunks = 0 WHERE id = $1",
            c.id,
        )  # fmt: skip
        assert forged == "CheckViolationError"
        assert await check() == 1
        await a.knowledge.delete_document(second.id)
        assert await check() == 0
        await a.knowledge.delete_collection(c.id)
        assert await owner.fetchval("SELECT count(*) FROM knowledge_chunks WHERE collection_id"
                                    " = $1", c.id) == 0  # fmt: skip
    finally:
        await owner.close()


# --- knowledge search on its indexes under RLS ----------------------------------------------


@dataclass
class ChunkStore:
    """A database of its own with 2,000 chunks in three of A's collections, B granted two."""

    server: PostgresServer
    database: str
    reader: str
    permitted: set[str]
    vectors: dict[str, np.ndarray] = field(default_factory=dict)  # chunk text -> vector
    collection_of: dict[str, str] = field(default_factory=dict)  # chunk text -> collection
    forbidden_text: str = ""

    def adapter(self, **options: Any) -> PgAdapter:
        return adapter_for(self.server, self.database, embedding_dim=16, **options)


def paragraphs(start: int, count: int) -> list[str]:
    """Distinct paragraphs of ~1,000 characters (so that each is one chunk); every 250th one
    holds the rare word 'zeppelin'."""
    words = ["meadow", "harbor", "lantern", "copper", "violin", "orchard"]
    out = []
    for n in range(start, start + count):
        head = f"paragraph {n} " + ("zeppelin " if n % 250 == 0 else "")
        out.append(head + " ".join(f"{words[(n + i) % 6]}{i}" for i in range(120))[:980])
    return out


@pytest.fixture(scope="module")
async def chunk_store(postgres_server: PostgresServer) -> AsyncIterator[ChunkStore]:
    database = create_database(postgres_server)
    agents = {"a": f"a-{secrets.token_hex(4)}", "b": f"b-{secrets.token_hex(4)}"}
    store = ChunkStore(postgres_server, database, agents["b"], set())
    rng = np.random.default_rng(11)
    adapter = store.adapter()
    await adapter.open()
    try:
        owner = adapter.for_agent(agents["a"]).knowledge
        paragraph = 0
        for name, docs in (("first", 14), ("second", 14), ("forbidden", 12)):
            collection = await owner.create_collection(name)
            if name != "forbidden":
                await owner.grant(collection.id, store.reader, "read")
                store.permitted.add(collection.id)
            for d in range(docs):
                content = "\n\n".join(paragraphs(paragraph, 50))
                paragraph += 50
                chunks = chunk_text(content)
                vectors = rng.standard_normal((len(chunks), 16)).astype(np.float32)
                await owner.ingest_document(
                    collection.id, f"{name} {d}", content, embeddings=[as_list(v) for v in vectors]
                )
                for text, vector in zip(chunks, vectors, strict=True):
                    store.vectors[text] = vector / np.linalg.norm(vector)
                    store.collection_of[text] = collection.id
                    if name == "forbidden":
                        store.forbidden_text = text
        observations = adapter.for_agent(store.reader).observations
        for n in range(1500):
            rare = " zeppelin" if n % 250 == 0 else ""
            await observations.record(
                f"session-{n % 7}", "tool", f"ran tool {n} on the harbor{rare}"
            )
    finally:
        await adapter.aclose()
    # VACUUM also empties the GIN index's pending list (fastupdate), which after a burst of
    # inserts makes the planner price the index above a scan until autovacuum has run.
    psql(postgres_server, database, "VACUUM ANALYZE")
    yield store
    psql(postgres_server, "postgres", f"DROP DATABASE {database} WITH (FORCE)")


async def test_explain_as_the_app_role_shows_the_chunk_gin_and_hnsw_indexes(
    chunk_store: ChunkStore,
) -> None:
    """With auto_explain on for the app role (nested statements, plans as NOTICEs), B's keyword
    search of the chunks uses their GIN index and B's vector search (1,400 permitted chunks) the
    HNSW index (or, asked for the exact path, no HNSW index), each restricted to the permitted
    collections inside the query, and the hits' rows are read by primary key; B's search of its
    observations uses their GIN index — while the same keyword predicate written against the
    chunks under RLS cannot use the GIN index."""
    store, database = chunk_store, chunk_store.database
    for setting in ("session_preload_libraries = 'auto_explain'",
                    "auto_explain.log_min_duration = 0",
                    "auto_explain.log_nested_statements = on",
                    "auto_explain.log_level = notice"):  # fmt: skip
        psql(
            store.server, database, f"ALTER ROLE agentbus_app IN DATABASE {database} SET {setting}"
        )
    conn: asyncpg.Connection[Any] = await asyncpg.connect(
        store.server.dsn_for("agentbus_app", database)
    )
    plans: list[str] = []
    conn.add_log_listener(lambda _conn, message: plans.append(message.message))
    search = "SELECT * FROM agentbus_search_knowledge($1, $2, $3::text::vector, 10, NULL, $4)"
    try:
        async with acting_as(conn, store.reader):
            found = await conn.fetch(search, store.reader, "zeppelin", None, None)
            keyword_plans, plans[:] = "\n".join(plans), []
            query = "[" + ",".join(str(v) for v in store.vectors[store.forbidden_text]) + "]"
            nearest = await conn.fetch(search, store.reader, None, query, None)
            vector_plans, plans[:] = "\n".join(plans), []
            exact = await conn.fetch(search, store.reader, None, query, 1_000_000)
            exact_plans, plans[:] = "\n".join(plans), []
            observed = await conn.fetch(
                "SELECT * FROM agentbus_search_observations('zeppelin', 10)"
            )
            observation_plans, plans[:] = "\n".join(plans), []
            direct = await conn.fetch(
                "EXPLAIN SELECT id FROM knowledge_chunks WHERE content_tsv @@"
                " plainto_tsquery('english', 'zeppelin')"
            )
    finally:
        await conn.close()
        psql(store.server, database, f"ALTER ROLE agentbus_app IN DATABASE {database} RESET ALL")
    print("\n--- keyword ---\n" + keyword_plans + "\n--- vector ---\n" + vector_plans)
    print("\n--- exact ---\n" + exact_plans)
    assert len(found) == 6  # 'zeppelin' is in 8 chunks, 6 of them permitted
    assert {row["collection_id"] for row in found} <= store.permitted
    assert all("zeppelin" in row["content"] for row in found)
    assert "Bitmap Index Scan on knowledge_chunks_fts_idx" in keyword_plans, keyword_plans
    assert "collection_id = ANY" in keyword_plans
    assert len(nearest) == 10
    assert "Index Scan using knowledge_chunks_embedding_hnsw" in vector_plans, vector_plans
    assert len(exact) == 10
    assert "knowledge_chunks_embedding_hnsw" not in exact_plans, exact_plans
    for plan in (keyword_plans, vector_plans, exact_plans):
        assert "Index Scan using knowledge_chunks_pkey" in plan, plan
        assert "Index Scan using knowledge_documents_" in plan, plan  # pkey or (id, collection)
        assert "Seq Scan on knowledge_documents" not in plan, plan
    for plan in (keyword_plans, vector_plans):
        assert "Seq Scan on knowledge_chunks" not in plan, plan
    assert "knowledge_chunks_fts_idx" not in "\n".join(row[0] for row in direct)
    assert len(observed) == 6
    assert "Bitmap Index Scan on observations_fts_idx" in observation_plans, observation_plans


@pytest.mark.parametrize("path", ["hnsw", "exact"])
async def test_vector_search_returns_k_permitted_chunks_on_either_path(
    chunk_store: ChunkStore, path: str
) -> None:
    """Queried with the exact vectors of forbidden chunks (their nearest neighbours are
    forbidden), B gets k hits, all permitted, that match exact search over the permitted chunks
    (recall@10 >= 0.9 through HNSW, 1.0 exact), whichever path the permitted count selects."""
    store = chunk_store
    adapter = store.adapter(vector_exact_max=0 if path == "hnsw" else 1_000_000)
    await adapter.open()
    permitted = [t for t, c in store.collection_of.items() if c in store.permitted]
    matrix = np.stack([store.vectors[t] for t in permitted])
    forbidden = [t for t, c in store.collection_of.items() if c not in store.permitted][:10]
    recalls = []
    try:
        reader = adapter.for_agent(store.reader).knowledge
        for text in forbidden:
            query = store.vectors[text]
            hits = await reader.search("x", embedding=as_list(query), mode="vector", limit=10)
            assert len(hits) == 10
            assert {h.collection_id for h in hits} <= store.permitted
            truth = {permitted[i] for i in np.argsort(-(matrix @ query))[:10]}
            recalls.append(len(truth & {h.text for h in hits}) / 10)
    finally:
        await adapter.aclose()
    assert np.mean(recalls) >= (0.9 if path == "hnsw" else 1.0), recalls


# --- service keys: master-key rotation as the owner role --------------------------------------


async def test_master_key_rotation_runs_as_the_owner_and_is_all_or_nothing(
    postgres_server: PostgresServer,
) -> None:
    """rotate_master_key re-wraps every agent's rows in one owner-role transaction: a row the
    current key cannot unwrap fails it with nothing changed; then every row moves to the new key
    (ciphertexts and nonces untouched), a second run re-wraps none, a view or an adapter without
    admin_dsn may not rotate, and nothing uses pgcrypto."""
    database = create_database(postgres_server)
    old, new, stray = MasterKey.generate(), MasterKey.generate(), MasterKey.generate()
    adapter = adapter_for(postgres_server, database, master_key=old)
    owner_dsn = postgres_server.dsn_for("agentbus_owner", database)
    await adapter.open()
    owner: asyncpg.Connection[Any] = await asyncpg.connect(owner_dsn)
    try:
        secrets_by_agent = {f"agent-{n}": f"secret-{secrets.token_hex(8)}" for n in range(4)}
        for agent, secret in secrets_by_agent.items():
            await adapter.for_agent(agent).service_keys.put("api", secret)
        sealed = seal(stray, agent_id="agent-x", name="api", version=1, secret="x")
        await owner.execute(
            "INSERT INTO service_keys (id, agent_id, name, version, key_id, wrapped_key,"
            " key_nonce, nonce, ciphertext, created_at, updated_at) VALUES ('stray', 'agent-x',"
            " 'api', 1, $1, $2, $3, $4, $5, now(), now())",
            sealed.key_id, sealed.wrapped_key, sealed.key_nonce, sealed.nonce, sealed.ciphertext,
        )  # fmt: skip
        rows = "SELECT agent_id, key_id, wrapped_key, nonce, ciphertext FROM service_keys"
        before = {r["agent_id"]: r for r in await owner.fetch(rows)}
        with pytest.raises(SecretDecryptionError):
            await adapter.rotate_master_key(new)
        assert {r["agent_id"]: r for r in await owner.fetch(rows)} == before
        await owner.execute("DELETE FROM service_keys WHERE id = 'stray'")

        with pytest.raises(StorageError, match="maintenance"):
            await adapter.for_agent("agent-0").rotate_master_key(new)
        no_admin = PgAdapter(postgres_server.dsn_for("agentbus_app", database),
                             embedding_dim=EMBEDDING_DIM, master_key=old)  # fmt: skip
        with pytest.raises(ConfigError, match="admin_dsn"):
            await no_admin.rotate_master_key(new)

        assert await adapter.rotate_master_key(new) == len(secrets_by_agent)
        after = {r["agent_id"]: r for r in await owner.fetch(rows)}
        for agent in secrets_by_agent:
            assert after[agent]["key_id"] == new.key_id
            assert after[agent]["wrapped_key"] != before[agent]["wrapped_key"]
            assert (after[agent]["nonce"], after[agent]["ciphertext"]) == (
                before[agent]["nonce"], before[agent]["ciphertext"],
            )  # fmt: skip
        assert await adapter.rotate_master_key(new) == 0
        fresh = adapter_for(postgres_server, database, master_key=new)
        stale = adapter_for(postgres_server, database, master_key=old)
        await fresh.open()
        await stale.open()
        try:
            for agent, secret in secrets_by_agent.items():
                value = await fresh.for_agent(agent).service_keys.get("api")
                assert value is not None
                assert value.reveal() == secret
                with pytest.raises(SecretDecryptionError, match=new.key_id):
                    await stale.for_agent(agent).service_keys.get("api")
        finally:
            await fresh.aclose()
            await stale.aclose()
        assert await owner.fetchval(
            "SELECT count(*) FROM pg_extension WHERE extname = 'pgcrypto'") == 0  # fmt: skip
    finally:
        await owner.close()
        await adapter.aclose()
        psql(postgres_server, "postgres", f"DROP DATABASE {database} WITH (FORCE)")


async def test_from_config_loads_the_master_key_file_on_first_use_only(
    postgres_server: PostgresServer, pg_database: str, postgres_adapter: PgAdapter,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, new_agent: Callable[..., str],
) -> None:  # fmt: skip
    """from_config does not touch serviceKeys.masterKeyFile until a service key is used; then
    it creates it (mode 0600) once, and a second adapter from the same config reads the
    secret with the key from that file."""
    monkeypatch.delenv(MASTER_KEY_ENV, raising=False)
    key_file = tmp_path / "keys" / "master.key"
    config = parse_config({
        "storage": {
            "backend": "postgres", "readFrom": "postgres", "writeTo": ["postgres"],
            "embeddingDim": EMBEDDING_DIM,
            "serviceKeys": {"masterKeyFile": str(key_file)},
            "postgres": {
                "connectionString": postgres_server.dsn_for("agentbus_app", pg_database),
                "adminConnectionString": postgres_server.dsn_for("agentbus_owner", pg_database),
            },
        }
    })  # fmt: skip
    agent, secret = new_agent("cfg"), f"secret-{secrets.token_hex(8)}"
    async with PgAdapter.from_config(config) as first:
        await first.for_agent(agent).memory.create_item("no key needed")
        assert not key_file.exists()
        await first.for_agent(agent).service_keys.put("api", secret)
        assert key_file.stat().st_mode & 0o777 == 0o600
    async with PgAdapter.from_config(config) as second:
        value = await second.for_agent(agent).service_keys.get("api")
        assert value is not None
        assert value.reveal() == secret


# --- migrations ---------------------------------------------------------------------------------


async def test_storage_ii_migrations_refuse_tables_holding_foreign_rows(
    postgres_server: PostgresServer,
) -> None:
    """0004 and 0006 reshape placeholder tables that no agentbus release wrote; if one holds a
    row (written by hand), migrating fails with a clear error and applies nothing after 0003."""
    database = create_database(postgres_server)
    dsn = postgres_server.dsn_for("agentbus_owner", database)
    conn: asyncpg.Connection[Any] = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute(_LEDGER)
            for migration in load_migrations()[:3]:
                await _apply(conn, migration, embedding_dim=EMBEDDING_DIM)
        await conn.execute(
            "INSERT INTO observations (id, agent_id, kind, content, created_at)"
            " VALUES ('hand-made', 'someone', 'note', 'written by hand', now())"
        )
        with pytest.raises(MigrationError, match="did not write"):
            await migrate(dsn, embedding_dim=EMBEDDING_DIM)
        assert await conn.fetchval("SELECT max(version) FROM schema_migrations") == 3
    finally:
        await conn.close()
        psql(postgres_server, "postgres", f"DROP DATABASE {database} WITH (FORCE)")


async def test_raw_sql_resolves_a_candidate_only_to_an_own_item(
    postgres_adapter: PgAdapter, new_agent: Callable[..., str], app_conn: Any
) -> None:
    """Merging folds only into the agent's own item, for raw SQL on the app role too (migration
    0007): 0006's helper that reinforced any visible item is gone, another agent's family item
    can be neither updated nor named as a candidate's resolved item (by UPDATE or INSERT), and
    the agent's own item can."""
    a, b = (postgres_adapter.for_agent(new_agent(x)) for x in ("a", "b"))
    shared = await b.memory.create_item("b's family memory", visibility="family")
    own = await a.memory.create_item("a's own memory")
    candidate = await a.live_candidates.create("a near duplicate", similar_item_id=shared.id)
    helper = await refused(
        app_conn, a.agent_id, "SELECT agentbus_reinforce_visible_item($1, now())", shared.id
    )
    assert helper == "UndefinedFunctionError"
    async with acting_as(app_conn, a.agent_id):
        assert await app_conn.execute(
            "UPDATE memory_items SET reinforcement_count = 99 WHERE id = $1", shared.id
        ) == "UPDATE 0"  # fmt: skip
    resolve = (
        "UPDATE live_candidates SET status = 'merged', resolved_item_id = $2, updated_at = now()"
        " WHERE id = $1"
    )
    assert await refused(app_conn, a.agent_id, resolve, candidate.id, shared.id) == DENIED
    insert = (
        "INSERT INTO live_candidates (id, agent_id, summary, status, resolved_item_id,"
        " created_at, updated_at) VALUES (gen_random_uuid()::text, $1, 'forged', 'merged', $2,"
        " now(), now())"
    )
    assert await refused(app_conn, a.agent_id, insert, a.agent_id, shared.id) == DENIED
    assert await b.memory.get_item(shared.id) == shared
    assert [c.status for c in await a.live_candidates.list_candidates(status=None)] == ["pending"]
    assert await refused(app_conn, a.agent_id, resolve, candidate.id, own.id) == ""
    assert await refused(app_conn, a.agent_id, insert, a.agent_id, own.id) == ""


async def test_raw_sql_lets_only_writers_and_owners_delete_documents(
    postgres_adapter: PgAdapter, new_agent: Callable[..., str], app_conn: Any
) -> None:
    """delete_document's rule holds for raw SQL on the app role: a reader, a library reader and
    an agent without access delete no document and no chunk (DELETE 0, the rows stay); a writer
    deletes the owner's document and a granted owner the writer's (with their chunks)."""
    ids = {x: new_agent(x) for x in ("a", "reader", "writer", "co-owner", "other")}
    a, writer = postgres_adapter.for_agent(ids["a"]), postgres_adapter.for_agent(ids["writer"])
    c = await a.knowledge.create_collection("raw deletes")
    library = await a.knowledge.create_collection("raw deletes library", visibility="public")
    try:
        for agent, permission in (("reader", "read"), ("writer", "write"), ("co-owner", "owner")):
            await a.knowledge.grant(c.id, ids[agent], permission)
        owners_doc = await a.knowledge.ingest_document(c.id, "owner's", "harbor " * 400)
        writers_doc = await writer.knowledge.ingest_document(c.id, "writer's", "tide " * 400)
        shelved = await a.knowledge.ingest_document(library.id, "shelved", "shelf " * 400)
        assert owners_doc.chunk_count > 1

        async def delete(agent: str, table: str, document_id: str) -> str:
            column = "id" if table == "knowledge_documents" else "document_id"
            async with acting_as(app_conn, agent):
                status: str = await app_conn.execute(
                    f"DELETE FROM {table} WHERE {column} = $1", document_id
                )
            return status

        async def stored(document_id: str) -> int:
            async with acting_as(app_conn, ids["a"]):
                found: int = await app_conn.fetchval(
                    "SELECT count(*) FROM knowledge_chunks WHERE document_id = $1", document_id
                )
            return found

        for agent, document in (
            ("reader", owners_doc), ("other", shelved), ("other", owners_doc),
        ):  # fmt: skip
            for table in ("knowledge_chunks", "knowledge_documents"):
                assert await delete(ids[agent], table, document.id) == "DELETE 0", (agent, table)
        assert await stored(owners_doc.id) == owners_doc.chunk_count
        assert await stored(shelved.id) == shelved.chunk_count

        # the document's chunks go with it (ON DELETE CASCADE)
        assert await delete(ids["writer"], "knowledge_documents", owners_doc.id) == "DELETE 1"
        assert await delete(ids["co-owner"], "knowledge_documents", writers_doc.id) == "DELETE 1"
        assert (await stored(owners_doc.id), await stored(writers_doc.id)) == (0, 0)
        assert await a.knowledge.get_document(owners_doc.id) is None
        assert (await a.knowledge.get_collection(c.id)).document_count == 0
    finally:
        await a.knowledge.delete_collection(library.id)
