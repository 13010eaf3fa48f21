"""``PgAdapter.bulk_load_items``: the owner-role load that builds the HNSW index after the rows."""

from __future__ import annotations

from collections.abc import Callable

import asyncpg
import pytest

from agentbus import ConfigError
from agentbus.storage._errors import StorageError, ValidationError
from agentbus.storage._postgres import PgAdapter
from agentbus.testing import PostgresServer

from ._support import EMBEDDING_DIM, as_list, unit

pytestmark = pytest.mark.anyio


async def _index_definition(server: PostgresServer, database: str) -> str | None:
    conn = await asyncpg.connect(server.dsn_for("agentbus_owner", database))
    try:
        value = await conn.fetchval(
            "SELECT pg_get_indexdef(to_regclass('public.memory_items_embedding_hnsw'))"
        )
    finally:
        await conn.close()
    return None if value is None else str(value)


async def test_bulk_load_inserts_rows_of_many_agents_and_rebuilds_the_same_index(
    postgres_server: PostgresServer, pg_database: str, postgres_adapter: PgAdapter,
    new_agent: Callable[..., str],
) -> None:  # fmt: skip
    """Rows of several agents go in at once, each visible to its agent only and found by vector
    search; the HNSW index comes back with the same definition; a re-run inserts nothing."""
    before = await _index_definition(postgres_server, pg_database)
    assert before is not None
    assert "hnsw" in before
    a, b = new_agent("a"), new_agent("b")
    rows = [
        {"agent_id": a if n % 2 else b, "summary": f"bulk harbor row {n}",
         "embedding": as_list(unit(5000 + n)), "metadata": {"n": n}}
        for n in range(40)
    ]  # fmt: skip
    assert await postgres_adapter.bulk_load_items(rows) == 40
    assert await _index_definition(postgres_server, pg_database) == before
    assert await postgres_adapter.bulk_load_items(rows) == 0  # same agent + summary: skipped
    mine = postgres_adapter.for_agent(a).memory
    listed = await mine.list_items(limit=100)
    assert sorted(item.summary for item in listed) == sorted(
        str(row["summary"]) for row in rows if row["agent_id"] == a
    )
    hits = await mine.search_items("", embedding=as_list(unit(5001)), mode="vector", limit=3)
    assert hits[0].item.summary == "bulk harbor row 1"
    assert all(hit.item.agent_id == a for hit in hits)


async def test_bulk_load_refuses_bad_rows_views_and_a_missing_owner_dsn(
    postgres_server: PostgresServer, pg_database: str, postgres_adapter: PgAdapter,
    new_agent: Callable[..., str],
) -> None:  # fmt: skip
    """A bad row loads nothing; a view and an adapter without admin_dsn are refused."""
    agent = new_agent("bad")
    good = {"agent_id": agent, "summary": "fine row", "embedding": as_list(unit(1))}
    with pytest.raises(ValidationError, match="agent_id"):
        await postgres_adapter.bulk_load_items([good, {"summary": "no agent"}])
    with pytest.raises(ValidationError):
        await postgres_adapter.bulk_load_items([good, {**good, "embedding": [1.0, 2.0]}])
    assert await postgres_adapter.for_agent(agent).memory.list_items() == []
    with pytest.raises(StorageError, match="maintenance"):
        await postgres_adapter.for_agent(agent).bulk_load_items([good])
    app_only = PgAdapter(
        postgres_server.dsn_for("agentbus_app", pg_database), embedding_dim=EMBEDDING_DIM
    )
    with pytest.raises(ConfigError, match="admin_dsn"):
        await app_only.bulk_load_items([good])
