"""Search plans that do not depend on which agent searched first (cached generic plans).

asyncpg caches the search statement per connection and PL/pgSQL caches the plans inside the
search functions; after five executions PostgreSQL may switch to a generic plan made while some
*small* agent searched. Measured on the shared corpus (bench/storage_search.py): the old outer
join then hashed all 49,539 rows of the largest agent (210 ms instead of 5), and the keyword
function ANDed the GIN bitmap with a bitmap of all of them (4-7 ms instead of 1).
"""

from __future__ import annotations

import asyncpg
import pytest

from agentbus.storage._pg_core import init_connection
from agentbus.storage._pg_search import _SEARCH
from agentbus.storage._postgres import PgAdapter
from agentbus.testing import PostgresServer

pytestmark = pytest.mark.anyio


async def test_the_generic_search_plan_reads_rows_by_primary_key(
    postgres_server: PostgresServer, pg_database: str, postgres_adapter: PgAdapter
) -> None:
    """Forced to a generic plan, the search statement (as the app role) reads the found rows
    one primary-key lookup each, never a scan of the agent's rows."""
    conn = await asyncpg.connect(postgres_server.dsn_for("agentbus_app", pg_database))
    try:
        await init_connection(conn)
        async with conn.transaction():
            await conn.execute("SELECT set_config('app.agent_id', 'planner', true)")
            await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
            await conn.execute(
                "PREPARE search (text, vector, integer, text, text, boolean, integer, integer)"
                f" AS {_SEARCH}"
            )
            rows = await conn.fetch(
                "EXPLAIN EXECUTE search('harbor', NULL, 10, NULL, NULL, false, NULL, 100)"
            )
    finally:
        await conn.close()
    plan = "\n".join(row[0] for row in rows)
    assert "memory_items_pkey" in plan, plan
    assert "Scan on memory_items" not in plan.replace("Index Scan using memory_items_pkey", "")


async def test_keyword_functions_plan_every_call(
    postgres_server: PostgresServer, pg_database: str, postgres_adapter: PgAdapter
) -> None:
    """The keyword search functions run with plan_cache_mode force_custom_plan, so their plan
    is made for the agent that is searching."""
    conn = await asyncpg.connect(postgres_server.dsn_for("agentbus_owner", pg_database))
    try:
        rows = await conn.fetch(
            "SELECT proname, proconfig FROM pg_proc WHERE proname IN"
            " ('agentbus_search_items_keyword', 'agentbus_search_tasks')"
        )
    finally:
        await conn.close()
    assert len(rows) == 2
    for row in rows:
        assert "plan_cache_mode=force_custom_plan" in row["proconfig"], row["proname"]
