"""Agent-scoped memory search on the shared corpus: PostgreSQL and SQLite vs LangGraph and numpy.

    python bench/storage_search.py [--runs 5] [--quick] [--show-baseline]

Stores (the full corpus by default; see ``_storage`` for how rows become items): every unique
row is a *private* item of its agent, written with the same ids to a ``PgAdapter`` (loaded with
``bulk_load_items`` as the owner role, searched as the **app role**, so row-level security is in
force), a ``SQLiteAdapter`` (``create_items`` in batches of 500) and LangGraph's
``AsyncPostgresStore`` (namespace ``("memories", agent)``, same server, its own database, the
same vectors through a lookup ``embed``, HNSW m=16 ef_construction=200 like agentbus's index,
set through its ``ann_index_config``). Both PostgreSQL stores are bulk-loaded the same way: HNSW
index dropped, rows in, index rebuilt, ``VACUUM (ANALYZE)``. LangGraph has no setting for
``hnsw.ef_search``, so its searches run at pgvector's default, 40; agentbus's run at its default
(``PgAdapter(hnsw_ef_search=100)``: the HNSW path's ef_search follows the share of the index the
agent may see, from 40 when it sees most rows up to 100 — 41 for the largest agent here, 100
for the one medium agent above the exact-path bound) and, as an extra contender, capped at 40
(``hnsw_ef_search=40``) through a second adapter on the same database.

Queries — **held-out rows**: for each agent below, a few of its rows are picked at random
(seeded) and never stored anywhere; each is one query, so a query never finds itself, and the
rows its agent can see are exactly the agent's stored rows.
- small: agents with 20-99 unique rows (25 spread over that range, 2 queries each);
- medium: agents with 300-3000 unique rows (10 spread over that range, 5 queries each);
- large: the largest agent (linux-libc-dev, 49,771 rows), 50 queries.
Per query: ``vector`` = the held-out row's embedding; ``keyword`` = the first two words of 4+
letters of its text that are not English stop words (every term must match: a sentence would
match nothing); ``hybrid`` = both (RRF); LangGraph: ``asearch(ns, query=<the held-out text>,
limit=10)``, whose embed looks the text's vector up. k = 10 everywhere.

Checks on every call: vector and hybrid return exactly min(k, visible) rows, all of the agent's
own; vector-branch recall@10 against numpy exact search over the agent's stored rows (a row
counts when its exact similarity reaches the 10th best, so ties count either way). LangGraph's
rows and recall are reported, not required.

Baselines in the same run, taking turns query by query (queries shuffled per run, the
contenders in a fresh seeded order every turn, so none always follows the same one): LangGraph
``asearch`` for PostgreSQL hybrid; for SQLite vector search a bare numpy scan of the same rows (a
float32 matrix of the agent's normalised vectors prepared beforehand, then ``m @ q`` +
argpartition top-k + sort of the k), the figure the SQLite adapter's in-process cache is built to
approach. Informational, ``floor``: the least a search must do that answers with items and is
fresh across processes — one ``PRAGMA data_version`` on a connection to the SQLite file, the
same numpy scan, and one ``SearchHit`` per row over items prepared beforehand (not copied); what
no implementation of the adapter's contract can go below. Figures: per class, each run's p50/p95
over its calls, median over runs; a ratio is the median of the per-run ratios of p50s.
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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import numpy as np
from _common import median_or_nan, percentile
from _storage import (
    DIM,
    Corpus,
    K,
    create_database,
    keyword_query,
    langgraph_bulk_load,
    langgraph_namespace,
    langgraph_store,
    load_corpus,
    server_facts,
    start_postgres,
    storage_header,
)

from agentbus import uuid7
from agentbus.storage import MemoryItem, PgAdapter, SearchHit, SQLiteAdapter

SIZES = ("small", "medium", "large")
# class -> (unique rows from, to (exclusive), agents, queries per agent); large: the largest agent
FULL = {"small": (20, 100, 25, 2), "medium": (300, 3001, 10, 5), "large": (0, 0, 1, 50)}
QUICK = {"small": (20, 100, 5, 2), "medium": (300, 3001, 2, 5), "large": (0, 0, 1, 10)}
QUICK_LARGE_ROWS = 3000  # --quick stores a slice of the largest agent
RECALL_TARGET = 0.95


@dataclass
class Query:
    size: str
    agent: str
    row: int  # the held-out corpus row
    words: str  # keyword query
    stored: list[int]  # the agent's stored rows (all it can see)


@dataclass
class Plan:
    queries: list[Query]
    load: list[int]  # corpus rows to store
    agents: dict[str, list[str]]  # class -> agents


def spread(agents: list[tuple[int, str]], count: int) -> list[str]:
    """``count`` agents spread evenly over the size-sorted list."""
    if count >= len(agents):
        return [agent for _, agent in agents]
    step = len(agents) / count
    return [agents[int(i * step + step / 2)][1] for i in range(count)]


def plan(corpus: Corpus, quick: bool) -> Plan:
    sizes = corpus.sizes()
    largest = max(sizes, key=lambda agent: sizes[agent])
    spec = QUICK if quick else FULL
    chosen: dict[str, list[str]] = {}
    for size, (low, high, count, _) in spec.items():
        if size == "large":
            chosen[size] = [largest]
        else:
            eligible = sorted((n, a) for a, n in sizes.items() if low <= n < high)
            chosen[size] = spread(eligible, count)
    queries: list[Query] = []
    held: set[int] = set()
    stored_rows: dict[str, list[int]] = {}
    for size, agents in chosen.items():
        per_agent = spec[size][3]
        for agent in agents:
            rows = corpus.by_agent[agent]
            if quick and size == "large":
                rows = rows[:QUICK_LARGE_ROWS]
            picked = random.Random(zlib.crc32(agent.encode())).sample(rows, per_agent)
            held.update(picked)
            stored = [n for n in rows if n not in set(picked)]
            stored_rows[agent] = stored
            for n in picked:
                queries.append(Query(size, agent, n, keyword_query(corpus.texts[n]), stored))
    if quick:
        load = [n for rows in stored_rows.values() for n in rows]
    else:
        load = [n for rows in corpus.by_agent.values() for n in rows if n not in held]
    return Plan(queries, load, chosen)


# ===== the contenders ============================================================================


@dataclass
class Stores:
    corpus: Corpus
    pg: PgAdapter
    pg40: PgAdapter  # the same database, hnsw.ef_search at most 40 (pgvector's default)
    sqlite: SQLiteAdapter
    langgraph: Any
    ids: dict[int, str]  # corpus row -> item id (the same on both agentbus backends)
    rows: dict[str, int] = field(default_factory=dict)  # item id -> corpus row
    matrices: dict[str, np.ndarray] = field(default_factory=dict)  # agent -> normalised rows
    sqlite_path: str = ""
    items: dict[str, list[MemoryItem]] = field(default_factory=dict)  # agent -> stored rows' items
    closing: list[Callable[[], None]] = field(default_factory=list)


def numpy_top_k(m: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    """The bare numpy baseline: scores, argpartition top-k, sort of those k."""
    return top_of(m @ q, k)


def top_of(scores: np.ndarray, k: int) -> np.ndarray:
    if len(scores) <= k:
        return np.argsort(-scores)
    top = np.argpartition(-scores, k - 1)[:k]
    return top[np.argsort(-scores[top])]


Contender = Callable[[Query], Any]


def contenders(stores: Stores) -> dict[str, tuple[Contender, bool]]:
    """name -> (call, is_async); each call returns the corpus rows it found, best first."""
    vectors = stores.corpus.vectors
    texts = stores.corpus.texts
    rows = stores.rows
    pg: dict[str, Any] = {}  # agent -> its view's memory store, made on first use
    pg40: dict[str, Any] = {}
    lite: dict[str, Any] = {}

    def pg_memory(agent: str) -> Any:
        if agent not in pg:
            pg[agent] = stores.pg.for_agent(agent).memory
        return pg[agent]

    def pg40_memory(agent: str) -> Any:
        if agent not in pg40:
            pg40[agent] = stores.pg40.for_agent(agent).memory
        return pg40[agent]

    def lite_memory(agent: str) -> Any:
        if agent not in lite:
            lite[agent] = stores.sqlite.for_agent(agent).memory
        return lite[agent]

    def search(memory_of: Callable[[str], Any], mode: str) -> Contender:
        async def call(q: Query) -> list[int]:
            # The float32 row itself, as the numpy baseline gets it (no list conversion).
            embedding = None if mode == "keyword" else vectors[q.row]
            query = q.words
            hits = await memory_of(q.agent).search_items(
                query, embedding=embedding, mode=mode, limit=K
            )
            return [rows.get(hit.item.id, -1) for hit in hits]

        return call

    async def langgraph(q: Query) -> list[int]:
        found = await stores.langgraph.asearch(
            langgraph_namespace(q.agent), query=texts[q.row], limit=K
        )
        return [int(item.key) for item in found]

    cache = stores.sqlite._db.vectors  # the adapter's in-process vector cache (informational)

    def sqlite_cache(q: Query) -> list[int]:
        found = cache.search(q.agent, vectors[q.row], K)
        return [rows.get(item_id, -1) for item_id, _ in found]

    def bare_numpy(q: Query) -> list[int]:
        top = numpy_top_k(stores.matrices[q.agent], vectors[q.row], K)
        return [q.stored[i] for i in top]

    probe = sqlite3.connect(stores.sqlite_path, isolation_level=None, check_same_thread=False)
    stores.closing.append(probe.close)

    def floor(q: Query) -> list[int]:
        # What any search must do that is fresh across processes and returns items: one
        # PRAGMA data_version, the scan, a hit object per row (items prepared, not copied).
        probe.execute("PRAGMA data_version").fetchone()
        scores = stores.matrices[q.agent] @ vectors[q.row]
        top = top_of(scores, K)
        items = stores.items[q.agent]
        hits = [
            SearchHit(item=items[i], score=float(scores[i]), keyword_rank=None, vector_rank=r)
            for r, i in enumerate(top.tolist(), 1)
        ]
        return [rows.get(hit.item.id, -1) for hit in hits]

    return {
        "pg vector": (search(pg_memory, "vector"), True),
        "pg keyword": (search(pg_memory, "keyword"), True),
        "pg hybrid": (search(pg_memory, "hybrid"), True),
        "langgraph": (langgraph, True),
        "pg vector ef40": (search(pg40_memory, "vector"), True),
        "pg hybrid ef40": (search(pg40_memory, "hybrid"), True),
        "sqlite vector": (search(lite_memory, "vector"), True),
        "sqlite keyword": (search(lite_memory, "keyword"), True),
        "sqlite hybrid": (search(lite_memory, "hybrid"), True),
        "numpy": (bare_numpy, False),
        "floor": (floor, False),
        "sqlite cache": (sqlite_cache, False),
    }


# ===== checks ====================================================================================


@dataclass
class Checks:
    calls: int = 0
    short: int = 0  # returned fewer than min(k, visible) (vector/hybrid: a failure)
    foreign: int = 0  # a row that is not the agent's
    recalls: list[float] = field(default_factory=list)
    hits: list[int] = field(default_factory=list)


def check(stores: Stores, name: str, q: Query, found: list[int], checks: Checks) -> None:
    expected = min(K, len(q.stored))
    checks.calls += 1
    checks.hits.append(len(found))
    if "keyword" in name:
        return
    stored = set(q.stored)
    checks.foreign += sum(1 for n in found if n not in stored)
    if len(found) < expected:
        checks.short += 1
    if "hybrid" in name:
        return
    exact = stores.matrices[q.agent] @ stores.corpus.vectors[q.row]
    threshold = np.sort(exact)[-expected]
    position = {n: i for i, n in enumerate(q.stored)}
    correct = sum(1 for n in found if n in position and exact[position[n]] >= threshold - 1e-6)
    checks.recalls.append(correct / expected)


# ===== timing ====================================================================================


async def measure(
    stores: Stores, queries: list[Query], runs: int
) -> tuple[dict[tuple[str, str], list[list[float]]], dict[tuple[str, str], Checks]]:
    """Per (class, contender): one list of per-call seconds per run; and the checks."""
    for q in queries:  # the floor contender's items: the stored rows', as the adapter read them
        if q.agent not in stores.items:
            await stores.sqlite.for_agent(q.agent).memory.search_items(
                "", embedding=stores.corpus.vectors[q.row], mode="vector", limit=K
            )
            cached = stores.sqlite._db.vectors._items
            stores.items[q.agent] = [cached[stores.ids[n]] for n in q.stored]
    calls = contenders(stores)
    names = list(calls)
    for q in queries:  # warm-up: caches loaded, plans made, pages in memory
        for fn, is_async in calls.values():
            await fn(q) if is_async else fn(q)
    times: dict[tuple[str, str], list[list[float]]] = {
        (size, name): [] for size in SIZES for name in names
    }
    checks = {(size, name): Checks() for size in SIZES for name in names}
    cache = stores.sqlite._db.vectors
    served_before = cache.served_now
    for run in range(runs):
        for key in times:
            times[key].append([])
        order = queries[:]
        random.Random(run).shuffle(order)
        gc.collect()
        turns = random.Random(1000 + run)
        for q in order:
            # A fresh order every turn: with a fixed (rotating) order each contender always
            # followed the same one, and a call right after a PostgreSQL one starts with the CPU
            # caches full of asyncpg's and the network stack's code, not numpy's and SQLite's.
            for name in turns.sample(names, len(names)):
                fn, is_async = calls[name]
                started = time.perf_counter()
                found = await fn(q) if is_async else fn(q)
                elapsed = time.perf_counter() - started
                times[(q.size, name)][-1].append(elapsed)
                check(stores, name, q, found, checks[(q.size, name)])
        p50 = {name: statistics.median(times[("large", name)][-1]) * 1000 for name in names[:4]}
        shown = "  ".join(f"{name} {value:.2f}" for name, value in p50.items())
        print(f"run {run + 1}: large-agent p50 ms  {shown}", flush=True)
    print(
        f"SQLite vector searches answered from the fresh cache on the event loop: "
        f"{cache.served_now - served_before:,} of {runs * len(queries):,} measured calls "
        "(the rest took the worker thread)"
    )
    return times, checks


def p(values: list[float], q: float) -> float:
    return percentile(sorted(values), q) * 1000


# ===== loading ===================================================================================


async def load_stores(
    corpus: Corpus, work: Plan, server: Any, sqlite_path: Path
) -> tuple[Stores, list[str]]:
    notes = []
    ids = {n: uuid7() for n in work.load}
    await create_database(server, "bench_agentbus")
    await create_database(server, "bench_langgraph")
    pg = PgAdapter(
        server.dsn_for("agentbus_app", "bench_agentbus"),
        admin_dsn=server.dsn_for("agentbus_owner", "bench_agentbus"),
        embedding_dim=DIM,
    )
    await pg.open()
    items = [
        {"agent_id": corpus.agents[n], "summary": corpus.texts[n], "embedding": corpus.vectors[n],
         "id": ids[n]}
        for n in work.load
    ]  # fmt: skip
    started = time.perf_counter()
    inserted = await pg.bulk_load_items(items)
    spent = time.perf_counter() - started
    assert inserted == len(work.load), f"{inserted} of {len(work.load)} rows inserted"
    notes.append(
        f"PgAdapter.bulk_load_items: {inserted:,} rows in {spent:.1f} s = {inserted / spent:,.0f}"
        " rows/s (as the owner role: one transaction, HNSW index built after the rows; VACUUM"
        " (ANALYZE) after it)"
    )

    sqlite = SQLiteAdapter(sqlite_path, embedding_dim=DIM)
    await sqlite.open()
    by_agent: dict[str, list[int]] = {}
    for n in work.load:
        by_agent.setdefault(corpus.agents[n], []).append(n)
    started = time.perf_counter()
    for agent, rows in by_agent.items():
        memory = sqlite.for_agent(agent).memory
        for start in range(0, len(rows), 500):
            batch = rows[start : start + 500]
            await memory.create_items([
                {"summary": corpus.texts[n], "embedding": corpus.vectors[n], "id": ids[n]}
                for n in batch
            ])  # fmt: skip
    spent = time.perf_counter() - started
    notes.append(
        f"SQLiteAdapter create_items (per agent, batches <= 500): {len(work.load):,} rows in "
        f"{spent:.1f} s = {len(work.load) / spent:,.0f} rows/s"
    )
    pg40 = PgAdapter(
        server.dsn_for("agentbus_app", "bench_agentbus"), embedding_dim=DIM, hnsw_ef_search=40
    )
    await pg40.open()
    stores = Stores(corpus, pg, pg40, sqlite, None, ids, {item: n for n, item in ids.items()})
    stores.sqlite_path = str(sqlite_path)
    for q in work.queries:
        if q.agent not in stores.matrices:
            m = corpus.vectors[q.stored]
            stores.matrices[q.agent] = np.ascontiguousarray(
                m / np.linalg.norm(m, axis=1, keepdims=True), dtype=np.float32
            )
    return stores, notes


async def load_langgraph(dsn: str, store: Any, corpus: Corpus, work: Plan) -> str:
    started = time.perf_counter()
    await langgraph_bulk_load(dsn, store, corpus, work.load)
    spent = time.perf_counter() - started
    return (
        f"LangGraph abatch puts (1,000 a batch) with its HNSW index dropped, then rebuilt as it "
        f"was defined, VACUUM (ANALYZE): {len(work.load):,} rows in {spent:.1f} s = "
        f"{len(work.load) / spent:,.0f} rows/s"
    )


# ===== report ====================================================================================


def report(
    work: Plan, times: dict[tuple[str, str], list[list[float]]],
    checks: dict[tuple[str, str], Checks],
) -> list[str]:  # fmt: skip
    lines = ["(ratios: median over runs of each run's p50 ratio)"]
    goals_pg, goals_lite = [], []
    for size in SIZES:

        def ratio(a: str, b: str, size: str = size) -> float:
            per_run = [
                statistics.median(x) / statistics.median(y)
                for x, y in zip(times[(size, a)], times[(size, b)], strict=True)
            ]
            return median_or_nan(per_run)

        def p50(name: str, size: str = size) -> float:
            return median_or_nan([statistics.median(run) * 1000 for run in times[(size, name)]])

        vec, hyb = checks[(size, "pg vector")], checks[(size, "pg hybrid")]
        recall = statistics.mean(vec.recalls)
        full = vec.short + hyb.short + vec.foreign + hyb.foreign == 0
        value = ratio("pg hybrid", "langgraph")
        met = value <= 1.0 and recall >= RECALL_TARGET and full
        goals_pg.append(met)
        lines.append(
            f"PG hybrid/LangGraph p50 {size:<7} {value:5.2f} (target <= 1, recall@10 >= 0.95, "
            f"k rows)  {'MET' if met else 'MISSED'}   pg hybrid {p50('pg hybrid'):.2f} ms, "
            f"langgraph {p50('langgraph'):.2f} ms, pg vector recall@10 {recall:.3f}, "
            f"short {vec.short + hyb.short}/{vec.calls + hyb.calls}"
        )
        vec40, hyb40 = checks[(size, "pg vector ef40")], checks[(size, "pg hybrid ef40")]
        lines.append(
            f"  same ef_search as LangGraph (40): pg hybrid/LangGraph "
            f"{ratio('pg hybrid ef40', 'langgraph'):.2f}, pg hybrid {p50('pg hybrid ef40'):.2f}"
            f" ms, recall@10 {statistics.mean(vec40.recalls):.3f}, "
            f"short {vec40.short + hyb40.short}/{vec40.calls + hyb40.calls} (no target)"
        )
        lite_vec = checks[(size, "sqlite vector")]
        value = ratio("sqlite vector", "numpy")
        met = value <= 1.2 and lite_vec.short + lite_vec.foreign == 0
        goals_lite.append(met)
        lines.append(
            f"SQLite vector/numpy p50 {size:<7} {value:5.2f} (target <= 1.2)  "
            f"{'MET' if met else 'MISSED'}   sqlite vector {p50('sqlite vector'):.3f} ms, "
            f"numpy {p50('numpy'):.3f} ms (in-process cache alone "
            f"{ratio('sqlite cache', 'numpy'):.2f}x; floor {ratio('floor', 'numpy'):.2f}x numpy, "
            f"sqlite vector {ratio('sqlite vector', 'floor'):.2f}x floor)"
        )
    lines.append(
        f"PG hybrid target over all classes: {'MET' if all(goals_pg) else 'MISSED'}; "
        f"SQLite vector target over all classes: {'MET' if all(goals_lite) else 'MISSED'}"
    )
    lines += ["", "absolute figures: ms per call, median over runs of each run's p50 / p95"]
    lines.append(
        f"{'class':<7} {'contender':<15} {'p50':>8} {'p95':>8}  {'rows/call':>9}  "
        f"{'short':>7}  {'recall@10':>9}"
    )
    for size in SIZES:
        for name in times_names(times):
            runs = times[(size, name)]
            c = checks[(size, name)]
            rec = f"{statistics.mean(c.recalls):9.3f}" if c.recalls else f"{'-':>9}"
            short = f"{c.short}/{c.calls}" if "keyword" not in name else "-"
            lines.append(
                f"{size:<7} {name:<15} {median_or_nan([p(r, 50) for r in runs]):8.3f} "
                f"{median_or_nan([p(r, 95) for r in runs]):8.3f}  "
                f"{statistics.mean(c.hits):9.2f}  {short:>7}  {rec}"
            )
    return lines


def times_names(times: dict[tuple[str, str], list[list[float]]]) -> list[str]:
    return list(dict.fromkeys(name for _, name in times))


def describe(corpus: Corpus, work: Plan) -> list[str]:
    sizes = corpus.sizes()
    lines = [
        f"corpus     {len(corpus.texts):,} rows of {len(sizes)} agents; {corpus.duplicates:,} "
        f"repeat an agent's text -> {corpus.unique_rows:,} unique rows; "
        f"{len(work.queries)} held out as queries; {len(work.load):,} stored per store"
    ]
    for size in SIZES:
        agents = work.agents[size]
        counts = sorted(len(next(q.stored for q in work.queries if q.agent == a)) for a in agents)
        n = sum(1 for q in work.queries if q.size == size)
        lines.append(
            f"{size:<10} {n} queries, {len(agents)} agent(s), stored rows per agent "
            f"{counts[0]:,}..{counts[-1]:,} (median {statistics.median(counts):,.0f})"
        )
    return lines


async def bench(corpus: Corpus, work: Plan, runs: int) -> list[str]:
    server = await start_postgres()
    try:
        with tempfile.TemporaryDirectory(prefix="agentbus-bench-") as tmp:
            print(storage_header("storage search", await server_facts(server), tmp))
            for line in describe(corpus, work):
                print(line)
            print(f"runs       {runs}, contenders taking turns query by query\n", flush=True)
            stores, notes = await load_stores(corpus, work, server, Path(tmp) / "agentbus.db")
            dsn = server.dsn_for("agentbus_owner", "bench_langgraph")
            try:
                async with langgraph_store(dsn, corpus) as store:
                    notes.append(await load_langgraph(dsn, store, corpus, work))
                    for note in notes:
                        print(f"load       {note}", flush=True)
                    stores.langgraph = store
                    times, checks = await measure(stores, work.queries, runs)
            finally:
                await stores.pg.aclose()
                await stores.pg40.aclose()
                await stores.sqlite.aclose()
                for close in stores.closing:
                    close()
    finally:
        server.close()
    return report(work, times, checks)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs over all queries (median)")
    parser.add_argument("--quick", action="store_true", help="smoke run: ~4k rows, 1 run")
    parser.add_argument("--show-baseline", action="store_true", help="print the baselines, exit")
    args = parser.parse_args()
    if args.show_baseline:
        for fn in (numpy_top_k, top_of, langgraph_store, langgraph_bulk_load):
            print(inspect.getsource(fn))
        return
    runs = 1 if args.quick else args.runs
    corpus = load_corpus()
    work = plan(corpus, args.quick)
    lines = anyio.run(bench, corpus, work, runs, backend="asyncio")
    print()
    for line in lines:
        print(line)


if __name__ == "__main__":
    main()
