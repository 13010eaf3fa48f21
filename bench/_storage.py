"""Shared plumbing of the storage benchmarks: the corpus, a private PostgreSQL, the LangGraph store.

- The corpus is ``shared/data/changelog-memories`` (84,735 rows, 358 agents): each row becomes
  a *private* memory item of its agent (a LangGraph item in namespace ``("memories", agent)``),
  so an agent sees exactly its own rows. Rows whose text repeats within an agent (after
  whitespace collapsing, agentbus's content-hash rule) are dropped first, so both stores hold the
  same rows.
- Vectors are the corpus's int8 MiniLM embeddings / 127 (unit float32); nothing is embedded at
  run time. LangGraph gets an async ``embed`` function that looks the texts up.
- PostgreSQL is a private cluster (``agentbus.testing.PostgresServer``: fsync and
  synchronous_commit off, in /dev/shm) with ``shared_buffers`` raised so that both stores' tables
  and HNSW indexes stay in PostgreSQL's cache. agentbus runs as the app role (row-level
  security applies) with migrations and maintenance as the owner role; LangGraph, which has no
  such split, runs as the owner role in a database of its own on the same server.
"""

from __future__ import annotations

import gzip
import json
import platform
import re
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
from _common import _cpu_model, _git_revision, _ram_gib, _versions

from agentbus.testing import PostgresServer

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "changelog-memories"
DIM = 384
K = 10
NAMESPACE = "memories"
SHARED_BUFFERS = "2GB"
MAINTENANCE_WORK_MEM = "1GB"  # HNSW builds of both stores: the graph fits in memory
HNSW = {"m": 16, "ef_construction": 200}


# --- corpus ------------------------------------------------------------------------------------


@dataclass
class Corpus:
    agents: list[str]  # per corpus row
    texts: list[str]
    vectors: np.ndarray  # float32 (rows, 384), int8 / 127
    by_agent: dict[str, list[int]] = field(default_factory=dict)  # unique rows, corpus order
    duplicates: int = 0

    @property
    def unique_rows(self) -> int:
        return sum(len(rows) for rows in self.by_agent.values())

    def sizes(self) -> dict[str, int]:
        return {agent: len(rows) for agent, rows in self.by_agent.items()}


def load_corpus(path: Path = DATA) -> Corpus:
    """Every row, and per agent the rows whose collapsed text is new for that agent."""
    items, vectors_file = path / "items.jsonl.gz", path / "vectors-int8.npy"
    if not items.exists() or not vectors_file.exists():
        raise SystemExit(f"the shared corpus is missing at {path} (items.jsonl.gz, vectors)")
    agents: list[str] = []
    texts: list[str] = []
    with gzip.open(items, "rt", encoding="utf-8") as lines:
        for n, line in enumerate(lines):
            row = json.loads(line)
            assert row["row"] == n, "rows must be numbered in file order"
            agents.append(row["agent"])
            texts.append(row["text"])
    raw = np.load(vectors_file)
    assert raw.shape == (len(texts), DIM), raw.shape
    corpus = Corpus(agents, texts, (raw.astype(np.float32) / 127.0).astype(np.float32))
    seen: set[tuple[str, str]] = set()
    for n, (agent, text) in enumerate(zip(agents, texts, strict=True)):
        key = (agent, " ".join(text.split()))
        if key in seen:
            corpus.duplicates += 1
            continue
        seen.add(key)
        corpus.by_agent.setdefault(agent, []).append(n)
    return corpus


# --- PostgreSQL --------------------------------------------------------------------------------


async def start_postgres() -> PostgresServer:
    """A private cluster with ``shared_buffers`` raised (restarted once to apply it)."""
    server = PostgresServer.start()
    conn = await asyncpg.connect(server.superuser_dsn)
    try:
        await conn.execute(f"ALTER SYSTEM SET shared_buffers = '{SHARED_BUFFERS}'")
    finally:
        await conn.close()
    server.restart()
    return server


async def create_database(server: PostgresServer, name: str) -> None:
    """A database laid out like ``postgres_roles.sql`` lays out ``agentbus``: owned by the owner
    role, pgvector created by the superuser, the app role may connect and use schema public."""
    conn = await asyncpg.connect(server.superuser_dsn)
    try:
        await conn.execute(f"CREATE DATABASE {name} OWNER agentbus_owner")
        await conn.execute(f"REVOKE ALL ON DATABASE {name} FROM PUBLIC")
        await conn.execute(f"GRANT CONNECT ON DATABASE {name} TO agentbus_app")
    finally:
        await conn.close()
    conn = await asyncpg.connect(server.dsn_for("postgres", name))
    try:
        await conn.execute("CREATE EXTENSION vector")
        await conn.execute("ALTER SCHEMA public OWNER TO agentbus_owner")
        await conn.execute("REVOKE ALL ON SCHEMA public FROM PUBLIC")
        await conn.execute("GRANT USAGE ON SCHEMA public TO agentbus_app")
    finally:
        await conn.close()


async def drop_database(server: PostgresServer, name: str) -> None:
    conn = await asyncpg.connect(server.superuser_dsn)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await conn.close()


async def server_facts(server: PostgresServer) -> str:
    conn = await asyncpg.connect(server.superuser_dsn)
    try:
        version = await conn.fetchval("SHOW server_version")
        vector = await conn.fetchval(
            "SELECT default_version FROM pg_available_extensions WHERE name = 'vector'"
        )
        settings = {
            name: await conn.fetchval(f"SHOW {name}")
            for name in ("shared_buffers", "fsync", "synchronous_commit",
                         "max_parallel_maintenance_workers")
        }  # fmt: skip
    finally:
        await conn.close()
    shown = ", ".join(f"{key} {value}" for key, value in settings.items())
    where = f"private cluster in {server.base_dir}"
    return f"PostgreSQL {version} + pgvector {vector} ({where}, {shown})"


# --- LangGraph ---------------------------------------------------------------------------------


def langgraph_index(corpus: Corpus) -> dict[str, Any]:
    """The store's index config: 384 dims, cosine, HNSW m=16 ef_construction=200 (the same
    index as agentbus's), the ``text`` field embedded by a corpus lookup (no model runs)."""
    row_of = {text: n for n, text in enumerate(corpus.texts)}
    vectors = corpus.vectors

    async def embed(texts: list[str]) -> list[list[float]]:
        return [vectors[row_of[text]].tolist() for text in texts]

    return {
        "dims": DIM,
        "embed": embed,
        "fields": ["text"],
        "distance_type": "cosine",
        "ann_index_config": {"kind": "hnsw", "vector_type": "vector", **HNSW},
    }


@asynccontextmanager
async def langgraph_store(dsn: str, corpus: Corpus) -> AsyncIterator[Any]:
    """``AsyncPostgresStore`` on one connection (``from_conn_string``'s default), set up."""
    from langgraph.store.postgres import AsyncPostgresStore

    async with AsyncPostgresStore.from_conn_string(dsn, index=langgraph_index(corpus)) as store:
        await store.setup()
        yield store


def langgraph_namespace(agent: str) -> tuple[str, str]:
    """LangGraph refuses periods in namespace labels ("libglib2.0-bin"): they become "_" (no
    corpus agent id holds "_", so the mapping is one-to-one)."""
    assert "_" not in agent, agent
    return (NAMESPACE, agent.replace(".", "_"))


def langgraph_put(corpus: Corpus, row: int) -> Any:
    from langgraph.store.base import PutOp

    namespace = langgraph_namespace(corpus.agents[row])
    return PutOp(namespace, str(row), {"text": corpus.texts[row]})


async def langgraph_index_definition(dsn: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        definition = await conn.fetchval(
            "SELECT pg_get_indexdef(to_regclass('public.store_vectors_embedding_idx'))"
        )
    finally:
        await conn.close()
    definition = str(definition)
    if "m='16'" not in definition or "ef_construction='200'" not in definition:
        raise AssertionError(f"LangGraph made another index: {definition}")
    return definition


async def langgraph_bulk_load(dsn: str, store: Any, corpus: Corpus, rows: Sequence[int]) -> None:
    """The same treatment as ``PgAdapter.bulk_load_items``: drop the HNSW index, load through
    the store's own ``abatch`` puts, rebuild the index exactly as LangGraph defined it (same
    maintenance_work_mem), VACUUM (ANALYZE) both tables."""
    definition = await langgraph_index_definition(dsn)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("DROP INDEX store_vectors_embedding_idx")
        for start in range(0, len(rows), 1000):
            await store.abatch([langgraph_put(corpus, n) for n in rows[start : start + 1000]])
        await conn.execute(f"SET maintenance_work_mem = '{MAINTENANCE_WORK_MEM}'")
        await conn.execute(definition)
        await conn.execute("VACUUM (ANALYZE) store")
        await conn.execute("VACUUM (ANALYZE) store_vectors")
    finally:
        await conn.close()


# --- reporting ---------------------------------------------------------------------------------


def storage_header(title: str, postgres: str, sqlite_dir: str) -> str:
    lines = [
        f"== {title} ==",
        f"cpu        {_cpu_model()}",
        f"cores      {_cores()}",
        f"ram        {_ram_gib():.1f} GiB",
        f"os         {platform.platform()}",
        f"python     {platform.python_implementation()} {platform.python_version()}",
        f"postgres   {postgres}",
        f"sqlite     {sqlite3.sqlite_version} (WAL, file in {sqlite_dir})",
        "packages   " + _versions(*_PACKAGES),
        f"agentbus   git {_git_revision()}",
    ]
    return "\n".join(lines)


_PACKAGES = (
    "agentbus", "asyncpg", "pgvector", "numpy", "langgraph", "langgraph-checkpoint-postgres",
    "psycopg", "psycopg-binary",
)  # fmt: skip


def _cores() -> str:
    import os

    return f"{os.cpu_count()} ({len(os.sched_getaffinity(0))} usable)"


_KEYWORD_WORD = re.compile(r"[A-Za-z]{4,}")
_STOP_WORDS = frozenset((
    "about", "above", "after", "again", "against", "also", "been", "before", "being", "below",
    "between", "both", "could", "does", "doing", "down", "during", "each", "from", "further",
    "have", "having", "here", "into", "itself", "just", "more", "most", "once", "only", "other",
    "ought", "over", "same", "should", "some", "such", "than", "that", "their", "theirs", "them",
    "then", "there", "these", "they", "this", "those", "through", "under", "until", "very",
    "were", "what", "when", "where", "which", "while", "will", "with", "would", "your", "yours",
))  # fmt: skip


def keyword_query(text: str) -> str:
    """A two-word keyword query from a text: its first two words of 4+ letters that are not
    English stop words (every term must match, so a sentence would match nothing)."""
    words: list[str] = []
    for word in _KEYWORD_WORD.findall(text):
        word = word.lower()
        if word not in _STOP_WORDS and word not in words:
            words.append(word)
        if len(words) == 2:
            break
    return " ".join(words) or text.split()[0]
