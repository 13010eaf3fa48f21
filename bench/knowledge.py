"""Knowledge search under per-agent grants on the shared corpus (SQLite and PostgreSQL), against
the same search with no grant checks; service-key encryption throughput.

    python bench/knowledge.py [--runs 5] [--quick] [--show-baseline]
                              [--backend {both,sqlite,postgres}] [--order {shuffled,rotating}]

Store (identical on both backends): one *private* collection per agent for the corpus's 100
largest agents (``_storage.load_corpus``: an agent's repeated texts dropped), each unique row a
document (its text; its int8 MiniLM vector / 127 as the one chunk's embedding). Rows longer than
one chunk (``CHUNK_CHARS``, 1,200 characters; a handful) are left out so that a row is a chunk,
and 3 rows of every agent, picked at random (seeded), are held out as queries and never stored.
``--quick`` stores at most 300 rows per collection. SQLite: ``ingest_document`` one after the
other; PostgreSQL: ``ingest_document`` from 8 concurrent tasks as the app role, then ``ANALYZE``
as the owner.

Two searching agents, each granted ``read`` on 10 of the 100 collections by their owners:
- ``spread``: the collections of size ranks 5, 15, ..., 95 (not the largest): a few % of chunks;
- ``largest``: ranks 0, 10, ..., 90, which include linux-libc-dev's ~49.5k rows: most chunks.
Queries per reader: held-out rows of its permitted agents (half) and of forbidden agents (half),
so half the queries have their nearest neighbours in collections the reader may not read.
``vector`` = the held-out row's embedding; ``hybrid`` = the first two words of 4+ letters that
are not stop words, plus the embedding (RRF). k = 10.

Contenders, taking turns query by query (queries shuffled per run; the contenders' order
shuffled again for every query and mode, seeded — see "Order" below):
- ``app``: ``adapter.for_agent(reader).knowledge.search(...)``. PostgreSQL: the app role (under
  row-level security), one statement that sets the agent id and calls the search function
  (migration 0010), which computes the readable collections from the grants in the query that
  ranks and returns the hits' rows; SQLite: the adapter (grant subquery in the same read
  transaction).
- ``owner``: the same search given the reader's permitted collection ids, with no grant lookup
  and no RLS (see ``--show-baseline``). PostgreSQL: the owner role (BYPASSRLS) on an asyncpg
  pool, one statement: top k by ``embedding <=> q`` among ``collection_id = ANY(ids)`` in a
  MATERIALIZED CTE (``hnsw.iterative_scan = relaxed_order``, ``hnsw.ef_search = 100``, the
  adapter's defaults; the planner picks exact or HNSW), for hybrid also ``ts_rank`` over
  ``content_tsv @@ plainto_tsquery('english', words)`` cut at k, joined to chunks and documents;
  RRF in Python (``fuse_rrf``). SQLite: in a worker thread like the adapter, one read
  transaction on a connection of its own: numpy over a float32 matrix of the permitted chunks'
  normalised vectors prepared beforehand (``m @ q``, argpartition, sort; so no cache freshness
  check), for hybrid also the FTS5 query with ``collection_id IN (ids)`` (40 candidates a
  branch, like the adapter), ``fuse_rrf``, then one SQL read of the hits' chunk text and
  document title by chunk key. Both baselines get the embedding as a list, like the adapter.
- informational, PostgreSQL: ``owner+tx``, the owner baseline inside a per-call transaction
  (acquire, BEGIN, ``set_config('app.agent_id')``, the statement, COMMIT), as the adapter ran
  its search before migration 0010 made it one statement: the cost of those round trips;
  ``app exact``, a second ``PgAdapter`` (app role) with ``vector_exact_max=10**9``, so that
  vector search always takes the exact path: the app's cost when it picks the same path as the
  owner's planner.
Order: a contender that runs right after another one's search of the same query finds its
index pages and rows in the CPU caches — measured on PostgreSQL, the owner's search of the
largest reader: 2.1 ms right after the app's search of the same query, 2.7 ms after a search of
another query. The earlier fixed rotation (``--order rotating``: app, owner, owner+tx, app
exact, then SQLite's two) handed that to whoever followed another contender on the same query:
the owner followed ``pg app`` in 5 of 6 turns, while ``pg app`` followed SQLite's numpy scan;
``pg app exact`` — for the spread reader the same code path as ``pg app`` — then measured 1.01 x
the owner where ``pg app`` measured 1.31 x (5 runs). Shuffled, each contender follows each
other one equally often, on average.
Checks on every call: rows returned (k expected), hits outside the permitted collections (0
expected), vector recall@10 against numpy exact search over the reader's permitted chunks (a hit
counts when its exact similarity reaches the 10th best). Targets: always k rows, recall@10 >=
0.95, p50(app) <= 1.3 x p50(owner). Figures: per run p50/p95, median over runs; a ratio is the
median of per-run p50 ratios.

Service keys: ``put`` (seal + store) and ``get`` (read + unseal) of distinct names, one after
the other, per backend, with the bare ``seal``/``unseal`` rate for reference.

``--backend sqlite`` / ``--backend postgres`` measure one backend alone: the other is neither
started nor loaded, and its contenders and service-key rows are left out (default ``both``).
"""

from __future__ import annotations

import argparse
import gc
import inspect
import random
import sqlite3
import statistics
import tempfile
import time
import zlib
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import asyncpg
import numpy as np
from _common import median_or_nan, percentile, target_line
from _storage import (
    DIM,
    Corpus,
    create_database,
    keyword_query,
    load_corpus,
    server_facts,
    start_postgres,
    storage_header,
)
from pgvector.asyncpg import register_vector

from agentbus.storage import PgAdapter, SQLiteAdapter
from agentbus.storage._crypto import MasterKey, seal, unseal
from agentbus.storage._models import CHUNK_CHARS
from agentbus.storage._rules import fuse_rrf
from agentbus.storage._sqlite_chunk_vectors import chunk_ref
from agentbus.storage._sqlite_search import branch_size, fts_query

K = 10
COLLECTIONS = 100
HELD_OUT = 3  # rows per agent never stored (queries)
QUICK_ROWS = 300  # --quick: rows stored per collection
PG_WORKERS = 8
RECALL_TARGET = 0.95
RATIO_TARGET = 1.3
READERS = {"spread": range(5, 100, 10), "largest": range(0, 100, 10)}  # size ranks granted
QUERIES = {False: 25, True: 5}  # per half (near permitted / near forbidden); key: quick
KEYS = {False: 2000, True: 200}  # service keys per run; key: quick
MODES = ("vector", "hybrid")
BACKENDS = {"both": ("pg", "sqlite"), "postgres": ("pg",), "sqlite": ("sqlite",)}  # --backend


# ===== the plan ==================================================================================


@dataclass
class Query:
    reader: str
    row: int  # the held-out corpus row
    near_permitted: bool
    words: str


@dataclass
class Plan:
    agents: list[str]  # the 100 largest, largest first (size rank = index)
    stored: dict[str, list[int]]  # agent -> rows stored in its collection
    held: dict[str, list[int]]  # agent -> held-out rows
    permitted: dict[str, list[str]]  # reader -> agents whose collections it may read
    queries: list[Query]


def make_plan(corpus: Corpus, quick: bool) -> Plan:
    sizes = corpus.sizes()
    agents = sorted(sizes, key=lambda a: (-sizes[a], a))[:COLLECTIONS]
    stored: dict[str, list[int]] = {}
    held: dict[str, list[int]] = {}
    for agent in agents:
        rows = [n for n in corpus.by_agent[agent] if len(corpus.texts[n].strip()) <= CHUNK_CHARS]
        picked = random.Random(zlib.crc32(agent.encode())).sample(rows, HELD_OUT)
        held[agent] = picked
        rest = [n for n in rows if n not in set(picked)]
        stored[agent] = rest[:QUICK_ROWS] if quick else rest
    permitted = {reader: [agents[r] for r in ranks] for reader, ranks in READERS.items()}
    queries: list[Query] = []
    per_half = QUERIES[quick]
    for reader, allowed in permitted.items():
        rng = random.Random(zlib.crc32(reader.encode()))
        near = [n for a in allowed for n in held[a]]
        far = [held[a][0] for a in agents if a not in allowed]
        for near_permitted, pool in ((True, near), (False, far)):
            for n in rng.sample(pool, min(per_half, len(pool))):
                queries.append(Query(reader, n, near_permitted, keyword_query(corpus.texts[n])))
    return Plan(agents, stored, held, permitted, queries)


# ===== loading ===================================================================================


@dataclass
class Loaded:
    corpus: Corpus
    plan: Plan
    collection: dict[str, str] = field(default_factory=dict)  # agent -> collection id
    row_of: dict[str, int] = field(default_factory=dict)  # document id -> corpus row
    permitted_ids: dict[str, list[str]] = field(default_factory=dict)  # reader -> collection ids
    permitted_rows: dict[str, list[int]] = field(default_factory=dict)
    truth: dict[str, np.ndarray] = field(default_factory=dict)  # reader -> normalised matrix


async def ingest(adapter: Any, loaded: Loaded, workers: int) -> tuple[int, float]:
    """Every collection and document through the adapter; (documents, seconds)."""
    corpus, plan = loaded.corpus, loaded.plan
    same_ids = bool(loaded.collection)  # the second backend reuses the first one's ids
    jobs: list[tuple[str, int, str]] = []
    ids = {row: doc for doc, row in loaded.row_of.items()} if same_ids else {}
    for agent in plan.agents:
        knowledge = adapter.for_agent(agent).knowledge
        wanted = loaded.collection.get(agent)
        made = await knowledge.create_collection(f"{agent} changelog", id=wanted)
        loaded.collection[agent] = made.id
        jobs += [(agent, n, ids.get(n, "")) for n in plan.stored[agent]]
    queue = list(reversed(jobs))
    started = time.perf_counter()

    async def worker() -> None:
        while queue:
            agent, n, doc_id = queue.pop()
            doc = await adapter.for_agent(agent).knowledge.ingest_document(
                loaded.collection[agent], f"{agent} #{n}", corpus.texts[n],
                metadata={"row": n}, embeddings=[corpus.vectors[n].tolist()], id=doc_id or None,
            )  # fmt: skip
            loaded.row_of[doc.id] = n

    async with anyio.create_task_group() as tg:
        for _ in range(workers):
            tg.start_soon(worker)
    spent = time.perf_counter() - started
    for reader, allowed in plan.permitted.items():
        for agent in allowed:
            await adapter.for_agent(agent).knowledge.grant(loaded.collection[agent], reader, "read")
    return len(jobs), spent


def prepare_truth(loaded: Loaded) -> None:
    for reader, allowed in loaded.plan.permitted.items():
        rows = [n for agent in allowed for n in loaded.plan.stored[agent]]
        loaded.permitted_rows[reader] = rows
        loaded.permitted_ids[reader] = [loaded.collection[a] for a in allowed]
        m = loaded.corpus.vectors[rows]
        loaded.truth[reader] = np.ascontiguousarray(
            m / np.linalg.norm(m, axis=1, keepdims=True), dtype=np.float32
        )


# ===== the baselines: the same search with no grant checks =======================================

PG_VECTOR = """
WITH nearest AS MATERIALIZED (
    SELECT k.id, k.embedding <=> $1 AS distance
    FROM knowledge_chunks k
    WHERE k.collection_id = ANY ($2::text[]) AND k.embedding IS NOT NULL
    ORDER BY k.embedding <=> $1
    LIMIT $3)
SELECT n.id, n.distance, ch.document_id, ch.collection_id, ch.chunk_index, ch.content AS text,
       kd.title
FROM nearest n
JOIN knowledge_chunks ch ON ch.id = n.id
JOIN knowledge_documents kd ON kd.id = ch.document_id
ORDER BY n.distance, n.id
"""

PG_HYBRID = """
WITH keyword AS MATERIALIZED (
    SELECT k.id, ts_rank(k.content_tsv, q) AS score
    FROM knowledge_chunks k, plainto_tsquery('english', $4) AS q
    WHERE k.content_tsv @@ q AND k.collection_id = ANY ($2::text[])
    ORDER BY score DESC, k.id
    LIMIT $3
), nearest AS MATERIALIZED (
    SELECT k.id, k.embedding <=> $1 AS distance
    FROM knowledge_chunks k
    WHERE k.collection_id = ANY ($2::text[]) AND k.embedding IS NOT NULL
    ORDER BY k.embedding <=> $1
    LIMIT $3
), hit AS (SELECT id FROM keyword UNION SELECT id FROM nearest)
SELECT hit.id, ch.document_id, ch.collection_id, ch.chunk_index, ch.content AS text, kd.title,
       keyword.score, nearest.distance
FROM hit
JOIN knowledge_chunks ch ON ch.id = hit.id
JOIN knowledge_documents kd ON kd.id = ch.document_id
LEFT JOIN keyword ON keyword.id = hit.id
LEFT JOIN nearest ON nearest.id = hit.id
"""


async def pg_owner_search(
    pool: asyncpg.Pool, ids: list[str], embedding: list[float], words: str | None,
    agent: str | None = None,
) -> list[tuple[str, float]]:  # fmt: skip
    """(document id, score) best first: the owner role, no grant lookup, no RLS. With ``agent``
    (the ``owner+tx`` decomposition only): inside a transaction that first runs
    ``set_config('app.agent_id', ...)``, i.e. the round trips of a per-call transaction."""
    q = np.asarray(embedding, dtype=np.float32)
    async with pool.acquire() as conn:
        if agent is None:
            rows = await conn.fetch(PG_VECTOR if words is None else PG_HYBRID, *args(q, ids, words))
        else:
            async with conn.transaction():
                await conn.execute("SELECT set_config('app.agent_id', $1, true)", agent)
                rows = await conn.fetch(
                    PG_VECTOR if words is None else PG_HYBRID, *args(q, ids, words)
                )
    if words is None:
        return [(r["document_id"], 1.0 - float(r["distance"])) for r in rows]
    keyword = sorted(
        (r for r in rows if r["score"] is not None), key=lambda r: (-r["score"], r["id"])
    )
    nearest = sorted(
        (r for r in rows if r["distance"] is not None), key=lambda r: (r["distance"], r["id"])
    )
    doc = {r["id"]: r["document_id"] for r in rows}
    fused = fuse_rrf([r["id"] for r in keyword], [r["id"] for r in nearest], limit=K)
    return [(doc[chunk], score) for chunk, score, _, _ in fused]


def args(q: np.ndarray, ids: list[str], words: str | None) -> tuple[Any, ...]:
    return (q, ids, K) if words is None else (q, ids, K, words)


@dataclass
class LiteBaseline:
    """The reader's permitted chunks prepared beforehand: normalised vectors, keys, refs."""

    conn: sqlite3.Connection
    ids: list[str]
    matrix: np.ndarray
    keys: list[int]
    refs: list[str]


def lite_prepare(path: str, ids: list[str]) -> LiteBaseline:
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    marks = ", ".join("?" * len(ids))
    rows = conn.execute(
        "SELECT chunk_key, document_id, chunk_index, embedding FROM knowledge_chunks"
        f" WHERE collection_id IN ({marks}) AND embedding IS NOT NULL ORDER BY chunk_key",
        ids,
    ).fetchall()
    m = np.stack([np.frombuffer(r[3], dtype=np.float32) for r in rows])
    m = np.ascontiguousarray(m / np.linalg.norm(m, axis=1, keepdims=True), dtype=np.float32)
    return LiteBaseline(conn, ids, m, [r[0] for r in rows], [chunk_ref(r[1], r[2]) for r in rows])


def lite_top(m: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    scores = m @ q
    if len(scores) <= k:
        return np.argsort(-scores)
    top = np.argpartition(-scores, k - 1)[:k]
    return top[np.argsort(-scores[top])]


def lite_owner_search(
    base: LiteBaseline, embedding: list[float], words: str | None
) -> list[tuple[str, float]]:
    """(document id, score) best first: in one read transaction, numpy over the prepared
    permitted vectors (+ FTS5 with ``collection_id IN (ids)``), fuse_rrf, one read of the hits;
    no grant lookup (and, the matrix being prepared, no cache freshness check)."""
    base.conn.execute("BEGIN")
    try:
        return _lite_owner_search(base, embedding, words)
    finally:
        base.conn.execute("COMMIT")


def _lite_owner_search(
    base: LiteBaseline, embedding: list[float], words: str | None
) -> list[tuple[str, float]]:
    q = np.asarray(embedding, dtype=np.float32)
    qn = q / np.linalg.norm(q)
    size = K if words is None else branch_size(K)
    top = lite_top(base.matrix, qn, size)
    scores = base.matrix[top] @ qn
    vec = [(base.refs[i], base.keys[i], float(s)) for i, s in zip(top, scores, strict=True)]
    if words is None:
        ranked = [(ref, s) for ref, _, s in vec]
        key_of = {ref: key for ref, key, _ in vec}
    else:
        kw: list[tuple[str, int, float]] = []
        match = fts_query(words)
        if match is not None:
            marks = ", ".join("?" * len(base.ids))
            rows = base.conn.execute(
                "SELECT c.document_id, c.chunk_index, c.chunk_key, bm25(knowledge_chunks_fts)"
                " AS rank FROM knowledge_chunks_fts"
                " JOIN knowledge_chunks c ON c.chunk_key = knowledge_chunks_fts.rowid"
                f" WHERE knowledge_chunks_fts MATCH ? AND c.collection_id IN ({marks})"
                " ORDER BY rank, c.document_id, c.chunk_index LIMIT ?",
                [match, *base.ids, size],
            ).fetchall()
            kw = [(chunk_ref(d, i), key, -float(r)) for d, i, key, r in rows]
        key_of = {ref: key for ref, key, _ in (*kw, *vec)}
        fused = fuse_rrf([r for r, _, _ in kw], [r for r, _, _ in vec], limit=K)
        ranked = [(ref, s) for ref, s, _, _ in fused]
    keys = [key_of[ref] for ref, _ in ranked]
    if not keys:
        return []
    rows = base.conn.execute(
        "SELECT c.chunk_key, c.document_id, c.collection_id, d.title, c.chunk_index, c.text"
        " FROM knowledge_chunks c JOIN knowledge_documents d ON d.id = c.document_id"
        f" WHERE c.chunk_key IN ({', '.join('?' * len(keys))})",
        keys,
    ).fetchall()
    hits = {row[0]: row for row in rows}
    return [(hits[key_of[ref]][1], s) for ref, s in ranked if key_of[ref] in hits]


# ===== measuring =================================================================================


@dataclass
class PgSide:
    adapter: PgAdapter
    exact: PgAdapter  # app role, vector search always exact (``app exact``)
    pool: asyncpg.Pool  # owner role (the baseline)


@dataclass
class LiteSide:
    adapter: SQLiteAdapter
    path: str
    bases: dict[str, LiteBaseline] = field(default_factory=dict)


Call = Callable[[Query, str], Awaitable[list[tuple[str, float]]]]


@dataclass
class Checks:
    calls: int = 0
    short: int = 0
    forbidden: int = 0
    rows: list[int] = field(default_factory=list)
    recalls: list[float] = field(default_factory=list)


def contenders(loaded: Loaded, pg: PgSide | None, lite: LiteSide | None) -> dict[str, Call]:
    """``backend role`` -> call(query, mode) returning (document id, score), best first; only
    the contenders of the backends being measured."""
    vectors = loaded.corpus.vectors

    def app(adapter: Any) -> Call:
        stores = {reader: adapter.for_agent(reader).knowledge for reader in READERS}

        async def call(q: Query, mode: str) -> list[tuple[str, float]]:
            query = q.words if mode == "hybrid" else loaded.corpus.texts[q.row]
            hits = await stores[q.reader].search(
                query, embedding=vectors[q.row].tolist(), mode=mode, limit=K
            )
            return [(h.document_id, h.score) for h in hits]

        return call

    def pg_owner(pool: asyncpg.Pool, in_tx: bool) -> Call:
        async def call(q: Query, mode: str) -> list[tuple[str, float]]:
            words = q.words if mode == "hybrid" else None
            ids, embedding = loaded.permitted_ids[q.reader], vectors[q.row].tolist()
            return await pg_owner_search(pool, ids, embedding, words, q.reader if in_tx else None)

        return call

    def lite_owner(bases: dict[str, LiteBaseline]) -> Call:
        async def call(q: Query, mode: str) -> list[tuple[str, float]]:
            words = q.words if mode == "hybrid" else None
            return await anyio.to_thread.run_sync(
                lite_owner_search, bases[q.reader], vectors[q.row].tolist(), words
            )

        return call

    calls: dict[str, Call] = {}
    if pg is not None:
        calls["pg app"] = app(pg.adapter)
        calls["pg owner"] = pg_owner(pg.pool, False)
        calls["pg owner+tx"] = pg_owner(pg.pool, True)
        calls["pg app exact"] = app(pg.exact)
    if lite is not None:
        calls |= {"sqlite app": app(lite.adapter), "sqlite owner": lite_owner(lite.bases)}
    return calls


def check(loaded: Loaded, q: Query, mode: str, found: list[tuple[str, float]], c: Checks) -> None:
    c.calls += 1
    c.rows.append(len(found))
    c.short += len(found) < K
    allowed = set(loaded.permitted_rows[q.reader])
    rows = [loaded.row_of.get(doc, -1) for doc, _ in found]
    c.forbidden += sum(1 for n in rows if n not in allowed)
    if mode != "vector":
        return
    truth = loaded.truth[q.reader]
    q_vec = loaded.corpus.vectors[q.row]
    exact = truth @ (q_vec / np.linalg.norm(q_vec))
    threshold = np.sort(exact)[-K]
    position = {n: i for i, n in enumerate(loaded.permitted_rows[q.reader])}
    good = sum(1 for n in rows if n in position and exact[position[n]] >= threshold - 1e-6)
    c.recalls.append(good / K)


Key = tuple[str, str, str]  # (reader, mode, contender)


async def measure(
    loaded: Loaded, calls: dict[str, Call], runs: int, rotate: bool = False
) -> tuple[dict[Key, list[list[float]]], dict[Key, Checks]]:
    names = list(calls)
    keys = [(r, m, n) for r in READERS for m in MODES for n in names]
    times: dict[Key, list[list[float]]] = {key: [] for key in keys}
    checks = {key: Checks() for key in keys}
    for q in loaded.plan.queries:  # warm-up: caches loaded, plans made, pages in memory
        for mode in MODES:
            for call in calls.values():
                await call(q, mode)
    for run in range(runs):
        for key in keys:
            times[key].append([])
        order = loaded.plan.queries[:]
        rng = random.Random(run)
        rng.shuffle(order)
        gc.collect()
        for turn, q in enumerate(order):
            shift = (run + turn) % len(names)
            for mode in MODES:
                # Shuffled for every query and mode: a contender running right after another
                # one's search of the same query finds its pages warm (see the docstring).
                turns = names[shift:] + names[:shift] if rotate else rng.sample(names, len(names))
                for name in turns:
                    started = time.perf_counter()
                    found = await calls[name](q, mode)
                    times[(q.reader, mode, name)][-1].append(time.perf_counter() - started)
                    check(loaded, q, mode, found, checks[(q.reader, mode, name)])
        p50 = {
            f"{r} {m} {n}": statistics.median(times[(r, m, n)][-1]) * 1000
            for r in READERS for m in MODES for n in ("pg app", "sqlite app") if n in calls
        }  # fmt: skip
        shown = "  ".join(f"{k} {v:.2f}" for k, v in p50.items())
        print(f"run {run + 1}: app p50 ms  {shown}", flush=True)
    return times, checks


def p(values: list[float], q: float) -> float:
    return percentile(sorted(values), q) * 1000


# ===== service keys ==============================================================================


async def service_keys(adapter: Any, n: int, runs: int) -> tuple[float, float]:
    """(put/s, get/s): median over runs of n puts of new names, then n gets of them."""
    keys = adapter.for_agent("bench-keys").service_keys
    puts, gets = [], []
    for run in range(runs):
        names = [f"key-{run}-{i}" for i in range(n)]
        secrets_ = [f"sk-bench-{run}-{i:06d}-{'x' * 32}" for i in range(n)]
        started = time.perf_counter()
        for name, secret in zip(names, secrets_, strict=True):
            await keys.put(name, secret, metadata={"run": run})
        puts.append(n / (time.perf_counter() - started))
        started = time.perf_counter()
        for name, secret in zip(names, secrets_, strict=True):
            value = await keys.get(name)
            assert value is not None
            assert value.reveal() == secret
        gets.append(n / (time.perf_counter() - started))
    return statistics.median(puts), statistics.median(gets)


def bare_crypto(n: int) -> tuple[float, float]:
    master = MasterKey.generate()
    secret = "sk-bench-" + "x" * 40
    started = time.perf_counter()
    sealed = [seal(master, agent_id="a", name=f"k{i}", version=1, secret=secret) for i in range(n)]
    sealing = n / (time.perf_counter() - started)
    started = time.perf_counter()
    for i, s in enumerate(sealed):
        unseal(master, s, agent_id="a", name=f"k{i}", version=1)
    return sealing, n / (time.perf_counter() - started)


# ===== report ====================================================================================


def report(
    times: dict[Key, list[list[float]]], checks: dict[Key, Checks], backends: tuple[str, ...]
) -> list[str]:
    lines = ["targets (app role; ratio = median over runs of p50(app) / p50(owner)):"]
    for backend in backends:
        for reader in READERS:
            for mode in MODES:
                app, owner = (reader, mode, f"{backend} app"), (reader, mode, f"{backend} owner")
                per_run = [
                    statistics.median(a) / statistics.median(o)
                    for a, o in zip(times[app], times[owner], strict=True)
                ]
                c = checks[app]
                note = f"short {c.short}/{c.calls}, forbidden hits {c.forbidden}"
                label = f"{backend} {reader} {mode} app/owner"
                lines.append(target_line(label, median_or_nan(per_run), "<=", RATIO_TARGET) +
                             f"   {note}")  # fmt: skip
                if backend == "pg":
                    tx = (reader, mode, "pg owner+tx")
                    split = [
                        statistics.median(a) / statistics.median(o)
                        for a, o in zip(times[app], times[tx], strict=True)
                    ]
                    lines.append(f"{'  app/owner+tx':<28} {median_or_nan(split):5.2f}"
                                 "  (owner in a per-call transaction; informational)")  # fmt: skip
                    exact = (reader, mode, "pg app exact")
                    split = [
                        statistics.median(a) / statistics.median(o)
                        for a, o in zip(times[exact], times[owner], strict=True)
                    ]
                    lines.append(f"{'  app exact/owner':<28} {median_or_nan(split):5.2f}"
                                 "  (app forced to the exact path; informational)")  # fmt: skip
                if mode == "vector":
                    recall = statistics.mean(c.recalls)
                    lines.append(target_line(f"{backend} {reader} recall@10", recall, ">=",
                                             RECALL_TARGET))  # fmt: skip
                full = 1.0 - c.short / c.calls
                lines.append(target_line(f"{backend} {reader} {mode} share of calls with k", full,
                                         ">=", 1.0))  # fmt: skip
    lines += ["", "ms per call (median over runs of each run's p50 / p95), rows per call,"
              " short (< k) and forbidden hits, vector recall@10"]  # fmt: skip
    lines.append(
        f"{'reader':<8} {'mode':<7} {'contender':<13} {'p50':>8} {'p95':>8} {'rows':>6} "
        f"{'short':>7} {'forbid':>6} {'recall':>7}"
    )
    for (reader, mode, name), runs in times.items():
        c = checks[(reader, mode, name)]
        recall = f"{statistics.mean(c.recalls):7.3f}" if c.recalls else f"{'-':>7}"
        lines.append(
            f"{reader:<8} {mode:<7} {name:<13} {median_or_nan([p(r, 50) for r in runs]):8.3f} "
            f"{median_or_nan([p(r, 95) for r in runs]):8.3f} {statistics.mean(c.rows):6.2f} "
            f"{c.short:>3}/{c.calls:<3} {c.forbidden:>6} {recall}"
        )
    return lines


def describe(loaded: Loaded) -> list[str]:
    plan, corpus = loaded.plan, loaded.corpus
    total = sum(len(rows) for rows in plan.stored.values())
    sizes = [len(plan.stored[a]) for a in plan.agents]
    lines = [
        f"store      {COLLECTIONS} collections (the corpus's largest agents, one each), "
        f"{total:,} documents = chunks, {sizes[0]:,}..{sizes[-1]:,} per collection; "
        f"{HELD_OUT} rows per agent held out; corpus {len(corpus.texts):,} rows",
    ]
    for reader in plan.permitted:
        n = len(loaded.permitted_rows[reader])
        queries = [q for q in plan.queries if q.reader == reader]
        near = sum(q.near_permitted for q in queries)
        lines.append(
            f"reader     {reader}: read on 10 collections, {n:,} chunks ({n / total:.1%}); "
            f"{len(queries)} queries ({near} near permitted, {len(queries) - near} near "
            "forbidden)"
        )
    return lines


# ===== main ======================================================================================


async def open_pg(stack: AsyncExitStack, master: MasterKey) -> tuple[PgSide, str, str]:
    """The PostgreSQL contenders on a private cluster; (side, server facts, owner DSN)."""
    server = await start_postgres()
    stack.callback(server.close)
    facts = await server_facts(server)
    await create_database(server, "bench_knowledge")
    app_dsn = server.dsn_for("agentbus_app", "bench_knowledge")
    owner_dsn = server.dsn_for("agentbus_owner", "bench_knowledge")
    pg = PgAdapter(app_dsn, admin_dsn=owner_dsn, embedding_dim=DIM, master_key=master)
    exact = PgAdapter(app_dsn, embedding_dim=DIM, max_connections=4, vector_exact_max=10**9)
    for adapter in (pg, exact):
        await adapter.open()
        stack.push_async_callback(adapter.aclose)
    pool = await asyncpg.create_pool(
        owner_dsn, min_size=2, max_size=4, init=register_vector,
        server_settings={"jit": "off", "hnsw.iterative_scan": "relaxed_order",
                         "hnsw.ef_search": "100"},
    )  # fmt: skip
    stack.push_async_callback(pool.close)
    return PgSide(pg, exact, pool), facts, owner_dsn


async def bench(
    corpus: Corpus, plan: Plan, runs: int, quick: bool, backends: tuple[str, ...],
    rotate: bool,
) -> list[str]:  # fmt: skip
    master = MasterKey.generate()
    async with AsyncExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="agentbus-bench-"))
        pg: PgSide | None = None
        lite: LiteSide | None = None
        facts, owner_dsn = "not measured (--backend sqlite)", ""
        if "pg" in backends:
            pg, facts, owner_dsn = await open_pg(stack, master)
        print(storage_header("knowledge search with grants", facts, tmp))
        loaded = Loaded(corpus, plan)
        if "sqlite" in backends:
            path = str(Path(tmp) / "agentbus.db")
            lite = LiteSide(SQLiteAdapter(path, embedding_dim=DIM, master_key=master), path)
            await lite.adapter.open()
            stack.push_async_callback(lite.adapter.aclose)
            docs, spent = await ingest(lite.adapter, loaded, 1)
            print(f"load       SQLite ingest_document: {docs:,} in {spent:.1f} s = "
                  f"{docs / spent:,.0f} documents/s", flush=True)  # fmt: skip
        if pg is not None:
            docs, spent = await ingest(pg.adapter, loaded, PG_WORKERS)
            print(
                f"load       PostgreSQL ingest_document ({PG_WORKERS} tasks, app role): "
                f"{docs:,} in {spent:.1f} s = {docs / spent:,.0f} documents/s",
                flush=True,
            )
            conn = await asyncpg.connect(owner_dsn)
            try:
                await conn.execute("ANALYZE")
            finally:
                await conn.close()
        prepare_truth(loaded)
        for line in describe(loaded):
            print(line)
        print(f"runs       {runs}, contenders taking turns query by query\n", flush=True)
        if lite is not None:
            lite.bases = {r: lite_prepare(lite.path, loaded.permitted_ids[r]) for r in READERS}
            for base in lite.bases.values():
                stack.callback(base.conn.close)
        times, checks = await measure(loaded, contenders(loaded, pg, lite), runs, rotate)
        lines = report(times, checks, backends)
        n = KEYS[quick]
        lines += ["", f"service keys ({n:,} distinct names a run, median over {runs} runs)"]
        for name, side in (("sqlite", lite), ("pg", pg)):
            if side is not None:
                put, get = await service_keys(side.adapter, n, runs)
                lines.append(f"{name:<7} put (seal + store) {put:8,.0f}/s   "
                             f"get (read + unseal) {get:8,.0f}/s")  # fmt: skip
        sealing, unsealing = bare_crypto(n * 5)
        lines.append(f"bare    seal {sealing:8,.0f}/s   unseal {unsealing:8,.0f}/s")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=" ".join((__doc__ or "").split("\n\n")[0].split()))
    parser.add_argument("--runs", type=int, default=5, help="runs over all queries (median)")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 300 rows a collection, 1 run"
    )
    parser.add_argument("--show-baseline", action="store_true", help="print the baselines, exit")
    parser.add_argument(
        "--backend", choices=sorted(BACKENDS), default="both",
        help="measure one backend alone (the other is neither loaded nor started)",
    )  # fmt: skip
    parser.add_argument(
        "--order", choices=["shuffled", "rotating"], default="shuffled",
        help="contenders' order on each query: shuffled (default) or the earlier fixed rotation",
    )  # fmt: skip
    args = parser.parse_args()
    if args.show_baseline:
        print("-- PostgreSQL, owner role, vector:" + PG_VECTOR)
        print("-- PostgreSQL, owner role, hybrid:" + PG_HYBRID)
        for fn in (pg_owner_search, lite_prepare, lite_top, lite_owner_search):
            print(inspect.getsource(fn))
        return
    runs = 1 if args.quick else args.runs
    corpus = load_corpus()
    plan = make_plan(corpus, args.quick)
    lines = anyio.run(
        bench, corpus, plan, runs, args.quick, BACKENDS[args.backend], args.order == "rotating",
        backend="asyncio",
    )  # fmt: skip
    print()
    for line in lines:
        print(line)


if __name__ == "__main__":
    main()
