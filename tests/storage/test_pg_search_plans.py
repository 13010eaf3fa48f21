"""Memory and knowledge search plans and the HNSW path's ef_search (migrations 0003, 0008, 0010,
0011).

asyncpg caches the search statement per connection and PL/pgSQL caches the plans inside the
search function; after five executions PostgreSQL may switch to a generic plan made while some
*small* agent searched. Measured on the shared corpus (bench/storage_search.py): the old outer
join then hashed all 49,539 rows of the largest agent (210 ms instead of 5), and the keyword
query ANDed the GIN bitmap with a bitmap of all of them (4-7 ms instead of 1). The vector
statements, on the other hand, were planned again on every call (0.4 ms) until 0008 made them
generic.

The HNSW path's ``hnsw.ef_search`` follows the share of the index the agent may see (from the
planner's statistics): 40 when it sees most rows, up to ``hnsw_ef_search`` when it sees few.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import asyncpg
import numpy as np
import pytest

from agentbus.storage._postgres import PgAdapter
from agentbus.testing import PostgresServer

from .test_postgres_adapter import adapter_for, create_database, psql

pytestmark = pytest.mark.anyio


async def test_keyword_queries_plan_every_call_and_the_search_function_caches_plans(
    postgres_server: PostgresServer, pg_database: str, postgres_adapter: PgAdapter
) -> None:
    """The keyword queries run with plan_cache_mode force_custom_plan, so their plan is made for
    the agent that is searching; the memory search function itself keeps generic plans."""
    conn = await asyncpg.connect(postgres_server.dsn_for("agentbus_owner", pg_database))
    try:
        rows = await conn.fetch(
            "SELECT proname, proconfig FROM pg_proc WHERE proname IN"
            " ('agentbus_items_keyword_hits', 'agentbus_search_tasks', 'agentbus_search_items',"
            " 'agentbus_search_item_rows')"
        )
    finally:
        await conn.close()
    config = {row["proname"]: row["proconfig"] for row in rows}
    assert len(config) == 4
    assert "plan_cache_mode=force_custom_plan" in config["agentbus_items_keyword_hits"]
    assert "plan_cache_mode=force_custom_plan" in config["agentbus_search_tasks"]
    assert "plan_cache_mode=force_generic_plan" in config["agentbus_search_items"]
    assert "plan_cache_mode=force_generic_plan" in config["agentbus_search_item_rows"]


async def test_knowledge_search_caches_plans_and_plans_its_keyword_branch_per_call(
    postgres_server: PostgresServer, pg_database: str, postgres_adapter: PgAdapter
) -> None:
    """Knowledge search (migration 0010) keeps generic plans — for a reader with few chunks the
    exact path's statement was otherwise planned again on every call — while its keyword
    branch is planned for each call, for the permitted set at hand; both run as the owner with
    a pinned search_path."""
    conn = await asyncpg.connect(postgres_server.dsn_for("agentbus_owner", pg_database))
    try:
        rows = await conn.fetch(
            "SELECT proname, proconfig, prosecdef FROM pg_proc WHERE proname IN"
            " ('agentbus_search_knowledge', 'agentbus_knowledge_keyword_hits')"
        )
    finally:
        await conn.close()
    config = {row["proname"]: row["proconfig"] for row in rows}
    definer = {row["proname"]: row["prosecdef"] for row in rows}
    assert len(config) == 2
    assert "plan_cache_mode=force_generic_plan" in config["agentbus_search_knowledge"]
    assert "plan_cache_mode=force_custom_plan" in config["agentbus_knowledge_keyword_hits"]
    assert definer == {"agentbus_search_knowledge": True, "agentbus_knowledge_keyword_hits": False}
    for settings in config.values():
        assert "search_path=pg_catalog, public, pg_temp" in settings


async def test_ef_search_follows_the_visible_fraction(
    postgres_server: PostgresServer, pg_database: str, postgres_adapter: PgAdapter
) -> None:
    """40 when most of the index is visible, 2.5 x limit / fraction in between, the upper
    setting (or the limit if larger) when few rows or an unknown share are visible."""
    conn = await asyncpg.connect(postgres_server.dsn_for("agentbus_owner", pg_database))
    try:

        async def ef(limit: int, fraction: float | None, most: int) -> int:
            value = await conn.fetchval(
                "SELECT agentbus_hnsw_ef_search($1, $2, $3)", limit, fraction, most
            )
            return int(value)

        assert await ef(10, 1.0, 100) == 40
        assert await ef(10, 0.62, 100) == 41
        assert await ef(10, 0.5, 100) == 50
        assert await ef(10, 0.25, 100) == 100
        assert await ef(10, 0.01, 100) == 100
        assert await ef(10, None, 100) == 100
        assert await ef(10, 1.0, 30) == 30  # the upper setting wins
        assert await ef(50, 1.0, 100) == 125 - 25  # at most the upper setting …
        assert await ef(200, 1.0, 100) == 200  # … or the limit, if that is larger
        assert await ef(10, 1.0, 5000) == 40
        assert await ef(10, 0.001, 5000) == 1000
    finally:
        await conn.close()


async def test_the_visible_fraction_comes_from_the_statistics(
    postgres_server: PostgresServer, new_agent: Callable[..., str]
) -> None:
    """After ANALYZE, the share of the embedded rows an agent may see: its own rows, or the
    family/public ones if more (not with own_only), with the rows lacking an embedding counted
    against it (a lower estimate); unknown when a filter narrows the search."""
    database = create_database(postgres_server)
    adapter = adapter_for(postgres_server, database, embedding_dim=4)
    big, small = new_agent("big"), new_agent("small")
    await adapter.open()
    try:
        specs = {
            big: [("private", True)] * 300,
            small: [("family", True)] * 100 + [("private", False)] * 50,
        }
        for agent, rows in specs.items():
            await adapter.for_agent(agent).memory.create_items([
                {"summary": f"row {n} of {agent}", "visibility": visibility,
                 "embedding": [1.0, float(n), 0.5, -1.0] if embedded else None}
                for n, (visibility, embedded) in enumerate(rows)
            ])  # fmt: skip
    finally:
        await adapter.aclose()
    psql(postgres_server, database, "ANALYZE memory_items")
    conn = await asyncpg.connect(postgres_server.dsn_for("agentbus_owner", database))
    try:

        async def fraction(agent: str, own_only: bool = False, kind: Any = None) -> Any:
            return await conn.fetchval(
                "SELECT agentbus_items_visible_fraction($1, $2, $3, NULL)", agent, own_only, kind
            )

        # 450 rows, 400 embedded; the 50 without are assumed to be the agent's.
        assert await fraction(big) == pytest.approx((300 - 50) / 400)  # truly 300 / 400
        assert await fraction(small) == pytest.approx((150 - 50) / 400)  # truly 100 / 400
        assert await fraction(new_agent("other")) == pytest.approx((100 - 50) / 400)
        assert await fraction(new_agent("other"), own_only=True) == 0
        assert await fraction(big, kind="knowledge") is None
    finally:
        await conn.close()
        psql(postgres_server, "postgres", f"DROP DATABASE {database} WITH (FORCE)")


async def test_the_hnsw_path_returns_k_rows_at_every_visible_fraction(
    postgres_server: PostgresServer, new_agent: Callable[..., str]
) -> None:
    """With the HNSW path forced (vector_exact_max=0) and statistics in place, an agent that
    sees most rows, one that sees few and one that sees fewer than k get min(k, visible) of
    their own rows, for several limits — whatever ef_search the fraction chose — and the
    nearest one first."""
    dim = 16
    database = create_database(postgres_server)
    adapter = adapter_for(postgres_server, database, embedding_dim=dim, vector_exact_max=0)
    agents = {new_agent("most"): 1200, new_agent("few"): 150, new_agent("tiny"): 6}
    rng = np.random.default_rng(11)
    vectors = {a: rng.standard_normal((n, dim)).astype(np.float32) for a, n in agents.items()}
    await adapter.open()
    try:
        for agent, matrix in vectors.items():
            await adapter.for_agent(agent).memory.create_items([
                {"summary": f"{agent} row {n}", "embedding": matrix[n].tolist()}
                for n in range(len(matrix))
            ])  # fmt: skip
        psql(postgres_server, database, "ANALYZE memory_items")
        for agent, matrix in vectors.items():
            memory = adapter.for_agent(agent).memory
            for limit in (1, 10, 40):
                for n in (0, len(matrix) // 2):
                    hits = await memory.search_items(
                        "", embedding=matrix[n].tolist(), mode="vector", limit=limit
                    )
                    assert len(hits) == min(limit, len(matrix)), (agent, limit)
                    assert {hit.item.agent_id for hit in hits} == {agent}
                    assert hits[0].item.summary == f"{agent} row {n}"
                    hybrid = await memory.search_items(
                        "row", embedding=matrix[n].tolist(), limit=limit
                    )
                    assert len(hybrid) == min(limit, len(matrix)), (agent, limit)
    finally:
        await adapter.aclose()
        psql(postgres_server, "postgres", f"DROP DATABASE {database} WITH (FORCE)")
