"""Memory ingest on PostgreSQL: agentbus bulk, single and batched vs LangGraph puts, same run.

    python bench/storage_ingest.py [--runs 3] [--quick] [--bulk N] [--single N] [--batched N]

Every run gets two fresh databases on one private cluster (see ``_storage``), one per store,
each with its HNSW index (m=16, ef_construction=200, cosine — LangGraph's set through its
``ann_index_config``) made by its own set-up. Phases, in order, the same rows in the same order
to both stores, the store that goes first alternating from run to run:
- **bulk** (default 20,000 rows; unique rows of every agent but the largest, corpus order) into
  the empty table: agentbus ``PgAdapter.bulk_load_items`` as the owner role — drop the HNSW
  index, ``INSERT … SELECT FROM unnest``, rebuild the index, ``VACUUM (ANALYZE)`` — timed from
  the call to its return, so the index build is included. LangGraph has no bulk path: its
  store gets the same rows through the same treatment done by hand around its ``abatch`` puts
  (timed too, for orientation only).
- **single** (500 rows, the next rows of those agents), one call each, on top of the bulk rows,
  so each insert goes into an HNSW graph of the bulk size (an insert's cost grows with the
  graph): agentbus ``create_item`` as the row's agent (app role, row-level security in force,
  one transaction a call) vs LangGraph ``aput`` into ``("memories", agent)``;
- **batched** (5,000 rows of the largest agent, linux-libc-dev), 500 a call, on top:
  agentbus ``create_items`` at its default (``PgAdapter(insert_connections=2)``: each call's
  rows shared out in chunks of ``INSERT … SELECT FROM unnest`` between two transactions on two
  pool connections, which commit together once both have inserted — so two server processes
  do the HNSW inserts) vs LangGraph ``abatch`` of 500 ``PutOp`` (one multi-row ``INSERT …
  VALUES`` per table, one connection). For orientation, without a target: the next 5,000 rows
  of that agent through ``create_items`` with ``insert_connections=1`` (one transaction, one
  ``INSERT`` a call), always after the pair, so into a graph 5,000 rows larger.
Embeddings are the corpus vectors, handed over as Python lists by both (agentbus as
``embedding=``, LangGraph through its async lookup ``embed``). SQLite's single and batched
figures (a fresh, empty file a run) are printed for orientation, without a target.

Targets: batched ingest >= 1.5x LangGraph's puts/s; bulk load >= 5x, index build included.
"LangGraph's puts/s" is its ``aput`` rate (the 184 puts/s the issue measured was of single
puts); the ratios against its ``abatch`` rate, the like-for-like batched path, are printed
beside them. Rows/s of a phase = rows / its wall time; figures are medians over runs, ratios
the median of the per-run ratios.
"""

from __future__ import annotations

import argparse
import gc
import inspect
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
from _common import median_or_nan, target_line
from _storage import (
    DIM,
    Corpus,
    create_database,
    drop_database,
    langgraph_bulk_load,
    langgraph_namespace,
    langgraph_put,
    langgraph_store,
    load_corpus,
    server_facts,
    start_postgres,
    storage_header,
)

from agentbus.storage import PgAdapter, SQLiteAdapter

BATCH = 500
FULL = {"bulk": 20000, "single": 500, "batched": 5000}
QUICK = {"bulk": 2000, "single": 100, "batched": 1000}


class Rows:
    """Which corpus rows each phase writes: the bulk rows and the single rows are unique rows of
    every agent but the largest, in corpus order (the single ones follow the bulk ones); the
    batched rows are the largest agent's, and the one-connection rows the ones after them."""

    def __init__(self, corpus: Corpus, single: int, batched: int, bulk: int) -> None:
        sizes = corpus.sizes()
        largest = max(sizes, key=lambda agent: sizes[agent])
        others = sorted(
            n for agent, rows in corpus.by_agent.items() if agent != largest for n in rows
        )
        self.largest = largest
        self.bulk = others[:bulk]
        self.single = others[bulk : bulk + single]
        self.batched = corpus.by_agent[largest][:batched]
        self.one_connection = corpus.by_agent[largest][batched : 2 * batched]
        if len(self.single) < single or len(self.one_connection) < batched or len(self.bulk) < bulk:
            raise SystemExit("the corpus has fewer rows than asked for")


# ===== agentbus ==================================================================================


async def agentbus_single(
    adapter: PgAdapter | SQLiteAdapter, corpus: Corpus, rows: list[int]
) -> None:
    vectors, texts, agents = corpus.vectors, corpus.texts, corpus.agents
    memories: dict[str, Any] = {}
    for n in rows:
        memory = memories.get(agents[n])
        if memory is None:
            memory = memories[agents[n]] = adapter.for_agent(agents[n]).memory
        await memory.create_item(texts[n], embedding=vectors[n].tolist())


async def agentbus_batched(
    adapter: PgAdapter | SQLiteAdapter, corpus: Corpus, agent: str, rows: list[int]
) -> None:
    memory = adapter.for_agent(agent).memory
    for start in range(0, len(rows), BATCH):
        batch = rows[start : start + BATCH]
        created = await memory.create_items(
            [{"summary": corpus.texts[n], "embedding": corpus.vectors[n].tolist()} for n in batch]
        )
        assert len({item.id for item in created}) == len(batch), "rows were merged"


async def agentbus_bulk(adapter: PgAdapter, corpus: Corpus, rows: list[int]) -> None:
    inserted = await adapter.bulk_load_items([
        {"agent_id": corpus.agents[n], "summary": corpus.texts[n],
         "embedding": corpus.vectors[n].tolist()}
        for n in rows
    ])  # fmt: skip
    assert inserted == len(rows), f"{inserted} of {len(rows)} rows inserted"


# ===== LangGraph =================================================================================


async def langgraph_single(store: Any, corpus: Corpus, rows: list[int]) -> None:
    for n in rows:
        await store.aput(langgraph_namespace(corpus.agents[n]), str(n), {"text": corpus.texts[n]})


async def langgraph_batched(store: Any, corpus: Corpus, rows: list[int]) -> None:
    for start in range(0, len(rows), BATCH):
        await store.abatch([langgraph_put(corpus, n) for n in rows[start : start + BATCH]])


# ===== runs ======================================================================================


async def timed(fn: Callable[[], Awaitable[None]], rows: int) -> float:
    """rows/s of one phase."""
    gc.collect()
    started = time.perf_counter()
    await fn()
    return rows / (time.perf_counter() - started)


async def count_rows(dsn: str, table: str) -> int:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval(f"SELECT count(*) FROM {table}"))
    finally:
        await conn.close()


async def one_run(
    server: Any, corpus: Corpus, rows: Rows, run: int, sqlite_dir: str
) -> dict[str, float]:
    ab, lg = f"ingest_ab_{run}", f"ingest_lg_{run}"
    for name in (ab, lg):
        await create_database(server, name)
    owner_dsn, lg_dsn = server.dsn_for("agentbus_owner", ab), server.dsn_for("agentbus_owner", lg)
    adapter = PgAdapter(server.dsn_for("agentbus_app", ab), admin_dsn=owner_dsn, embedding_dim=DIM)
    one = PgAdapter(server.dsn_for("agentbus_app", ab), embedding_dim=DIM, insert_connections=1)
    result: dict[str, float] = {}
    await adapter.open()
    await one.open()
    try:
        async with langgraph_store(lg_dsn, corpus) as store:
            loads: list[tuple[str, Callable[[], Awaitable[None]], int]] = [
                ("agentbus bulk", lambda: agentbus_bulk(adapter, corpus, rows.bulk),
                 len(rows.bulk)),
                ("langgraph rebuilt", lambda: langgraph_bulk_load(lg_dsn, store, corpus,
                                                                  rows.bulk), len(rows.bulk)),
            ]  # fmt: skip
            for name, fn, count in loads if run % 2 == 0 else loads[::-1]:
                result[name] = await timed(fn, count)
            phases: list[tuple[str, Callable[[], Awaitable[None]], int]] = [
                ("agentbus single", lambda: agentbus_single(adapter, corpus, rows.single),
                 len(rows.single)),
                ("langgraph aput", lambda: langgraph_single(store, corpus, rows.single),
                 len(rows.single)),
                ("agentbus batched", lambda: agentbus_batched(adapter, corpus, rows.largest,
                                                              rows.batched), len(rows.batched)),
                ("langgraph abatch", lambda: langgraph_batched(store, corpus, rows.batched),
                 len(rows.batched)),
            ]  # fmt: skip
            for pair in (phases[0:2], phases[2:4]):
                for name, fn, count in pair if run % 2 == 0 else pair[::-1]:
                    result[name] = await timed(fn, count)
            result["agentbus batched 1 conn"] = await timed(
                lambda: agentbus_batched(one, corpus, rows.largest, rows.one_connection),
                len(rows.one_connection),
            )
        written = len(rows.bulk) + len(rows.single) + len(rows.batched)
        assert await count_rows(owner_dsn, "memory_items") == written + len(rows.one_connection)
        assert await count_rows(lg_dsn, "store_vectors") == written
    finally:
        await one.aclose()
        await adapter.aclose()
    for name in (ab, lg):
        await drop_database(server, name)

    lite = SQLiteAdapter(Path(sqlite_dir) / f"ingest-{run}.db", embedding_dim=DIM)
    await lite.open()
    try:
        result["sqlite single"] = await timed(
            lambda: agentbus_single(lite, corpus, rows.single), len(rows.single)
        )
        result["sqlite batched"] = await timed(
            lambda: agentbus_batched(lite, corpus, rows.largest, rows.batched), len(rows.batched)
        )
    finally:
        await lite.aclose()
    shown = "  ".join(f"{name} {value:,.0f}" for name, value in result.items())
    print(f"run {run + 1} rows/s  {shown}", flush=True)
    return result


async def bench(corpus: Corpus, rows: Rows, runs: int) -> list[str]:
    server = await start_postgres()
    try:
        with tempfile.TemporaryDirectory(prefix="agentbus-bench-") as tmp:
            print(storage_header("storage ingest", await server_facts(server), tmp))
            print(
                f"rows       bulk {len(rows.bulk):,} (many agents) into the empty table, then "
                f"single {len(rows.single):,} (many agents), then batched {len(rows.batched):,} "
                f"({rows.largest}, {BATCH} a call) on top; SQLite: single and batched only"
            )
            print(f"runs       {runs}, fresh databases each run, first contender alternating\n")
            results = [await one_run(server, corpus, rows, run, tmp) for run in range(runs)]
    finally:
        server.close()
    return summary(results)


def summary(results: list[dict[str, float]]) -> list[str]:
    def med(name: str) -> float:
        return median_or_nan([r[name] for r in results])

    def ratio(a: str, b: str) -> float:
        return median_or_nan([r[a] / r[b] for r in results])

    aput, abatch = med("langgraph aput"), med("langgraph abatch")
    lines = [
        "(ratios: median of per-run ratios; rows/s: median over runs)",
        target_line("batched/LangGraph aput", ratio("agentbus batched", "langgraph aput"), ">=",
                    1.5) + f"   agentbus batched {med('agentbus batched'):,.0f}/s, "
        f"LangGraph aput {aput:,.0f}/s",
        target_line("batched/LangGraph abatch", ratio("agentbus batched", "langgraph abatch"),
                    ">=", 1.5) + f"   like for like: LangGraph abatch {abatch:,.0f}/s",
        target_line("bulk/LangGraph aput", ratio("agentbus bulk", "langgraph aput"), ">=", 5)
        + f"   agentbus bulk {med('agentbus bulk'):,.0f}/s incl. HNSW build + VACUUM",
        target_line("bulk/LangGraph abatch", ratio("agentbus bulk", "langgraph abatch"), ">=", 5),
        f"{'1-conn batched/LG aput':<28} "
        f"{ratio('agentbus batched 1 conn', 'langgraph aput'):5.2f} (no target)   "
        f"create_items with insert_connections=1, the next rows: "
        f"{med('agentbus batched 1 conn'):,.0f}/s",
        f"{'single/LangGraph aput':<28} {ratio('agentbus single', 'langgraph aput'):5.2f} "
        f"(no target)   agentbus single {med('agentbus single'):,.0f}/s",
        f"{'bulk/LangGraph by hand':<28} {ratio('agentbus bulk', 'langgraph rebuilt'):5.2f} "
        f"(no target)   its store loaded the same way around abatch: "
        f"{med('langgraph rebuilt'):,.0f}/s",
        "",
        "absolute figures, rows/s (median over runs; min..max):",
    ]  # fmt: skip
    for name in results[0]:
        values = [r[name] for r in results]
        spread = f"({min(values):,.0f}..{max(values):,.0f})"
        lines.append(f"  {name:<23} {statistics.median(values):8,.0f}   {spread}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs (median taken)")
    parser.add_argument("--quick", action="store_true", help="smoke run: small phases, 1 run")
    for phase in FULL:
        parser.add_argument(
            f"--{phase}", type=int, default=None, help=f"rows (default {FULL[phase]:,})"
        )
    parser.add_argument("--show-baseline", action="store_true", help="print the baselines, exit")
    args = parser.parse_args()
    if args.show_baseline:
        for fn in (langgraph_single, langgraph_batched, langgraph_store):
            print(inspect.getsource(fn))
        return
    sizes = QUICK if args.quick else FULL
    counts = {phase: getattr(args, phase) or sizes[phase] for phase in FULL}
    runs = 1 if args.quick else args.runs
    corpus = load_corpus()
    rows = Rows(corpus, counts["single"], counts["batched"], counts["bulk"])
    lines = anyio.run(bench, corpus, rows, runs, backend="asyncio")
    print()
    for line in lines:
        print(line)


if __name__ == "__main__":
    main()
