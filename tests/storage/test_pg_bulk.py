"""Batched writes on PostgreSQL: ``PgAdapter.bulk_load_items`` (the owner-role load that builds
the HNSW index after the rows) and ``memory.create_items`` of a large batch shared among several
connections whose transactions commit together."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import anyio
import asyncpg
import pytest

from agentbus import ConfigError, uuid7
from agentbus.storage._canonical import content_hash
from agentbus.storage._errors import StorageError, ValidationError
from agentbus.storage._pg_core import Conn, PgCore
from agentbus.storage._pg_memory import PARALLEL_MIN_EMBEDDED, PgMemory
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


# --- create_items shared among connections -------------------------------------------------


def _specs(label: str, count: int, *, seed: int = 0) -> list[dict[str, Any]]:
    return [
        {"summary": f"{label} harbor {n}", "embedding": as_list(unit(seed + n)),
         "metadata": {"n": n}}
        for n in range(count)
    ]  # fmt: skip


@pytest.fixture
def shares(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int, str]]:
    """Spies on the batched insert: (backend pid, rows, first summary) per chunk inserted, in
    the order they were; each chunk takes a little longer, so that every share gets some."""
    seen: list[tuple[int, int, str]] = []
    insert = PgMemory._insert

    async def spy(self: PgMemory, conn: Conn, batch: Any, *args: Any) -> Any:
        seen.append((conn.get_server_pid(), len(batch), batch[0].summary))
        await anyio.sleep(0.02)
        return await insert(self, conn, batch, *args)

    monkeypatch.setattr(PgMemory, "_insert", spy)
    return seen


@pytest.fixture
async def warm_adapter(postgres_adapter: PgAdapter) -> PgAdapter:
    """The module's adapter with a pool that already holds two connections."""
    pool = postgres_adapter._core._pool
    assert pool is not None
    async with pool.acquire(), pool.acquire():
        pass
    return postgres_adapter


async def test_a_large_batch_is_shared_among_connections_like_one_transaction(
    warm_adapter: PgAdapter, postgres_server: PostgresServer, pg_database: str,
    new_agent: Callable[..., str], shares: list[tuple[int, int, str]],
) -> None:  # fmt: skip
    """A batch of embedded rows goes in through two connections at once and returns what one
    transaction returns: an item per input in input order, the ids given kept, a repeated
    summary reinforcing its row (even when it comes back in another chunk), a summary already
    stored reinforced."""
    shared, single = warm_adapter.for_agent(new_agent("shared")), new_agent("single")
    one = PgAdapter(
        postgres_server.dsn_for("agentbus_app", pg_database),
        embedding_dim=EMBEDDING_DIM, insert_connections=1,
    )  # fmt: skip
    await one.open()
    try:
        results = {}
        for me in (shared, one.for_agent(single)):
            await me.memory.create_item("early harbor 0", embedding=as_list(unit(0)))
            specs = _specs("early", 60) + _specs("late", 20, seed=100)
            specs[70] = dict(specs[3])  # a repeat in another chunk
            specs[71] = dict(specs[3])
            specs[5]["id"] = given = uuid7()
            shares.clear()
            created = await me.memory.create_items(specs)
            results[me is shared] = (created, {pid for pid, _, _ in shares})
            assert len(created) == len(specs)
            assert [item.summary for item in created] == [s["summary"] for s in specs]
            assert created[5].id == given
            assert created[3].id == created[70].id == created[71].id
            assert [created[n].reinforcement_count for n in (3, 70, 71)] == [0, 1, 2]
            assert created[0].reinforcement_count == 1  # "early harbor 0" was stored before
            assert len({item.id for item in created}) == 80 - 2
            assert len(await me.memory.list_items(limit=200)) == 80 - 2  # one was there before
    finally:
        await one.aclose()
    (parallel, pids), (serial, single_pids) = results[True], results[False]
    assert len(pids) == 2
    assert len(single_pids) == 1
    assert sum(rows for _, rows, _ in shares) == 80 - 2
    view = [(i.summary, i.reinforcement_count, i.metadata, i.has_embedding) for i in parallel]
    assert view == [(i.summary, i.reinforcement_count, i.metadata, i.has_embedding) for i in serial]


async def test_small_batches_and_rows_without_embeddings_stay_in_one_transaction(
    warm_adapter: PgAdapter, new_agent: Callable[..., str], shares: list[tuple[int, int, str]]
) -> None:  # fmt: skip
    """Below PARALLEL_MIN_EMBEDDED embedded rows (or with an id given twice) there is one
    insert on one connection."""
    me = warm_adapter.for_agent(new_agent("small"))
    await me.memory.create_items(_specs("few", PARALLEL_MIN_EMBEDDED - 1))
    await me.memory.create_items([{"summary": f"plain {n}"} for n in range(200)])
    assert [rows for _, rows, _ in shares] == [PARALLEL_MIN_EMBEDDED - 1, 200]
    twice = _specs("twice", 40)
    twice[7]["id"] = twice[30]["id"] = uuid7()
    with pytest.raises(ValidationError, match="already exists"):
        await me.memory.create_items(twice)
    assert [rows for _, rows, _ in shares][2:] == [40]


async def test_a_failing_share_rolls_every_share_back(
    warm_adapter: PgAdapter, new_agent: Callable[..., str], shares: list[tuple[int, int, str]]
) -> None:  # fmt: skip
    """One chunk fails (its id is taken) while both connections insert: the call raises and no
    row of the batch is left, in either share."""
    me = warm_adapter.for_agent(new_agent("fail"))
    taken = await me.memory.create_item("already here")
    specs = _specs("doomed", 80)
    specs[-1]["id"] = taken.id
    with pytest.raises(ValidationError, match="already exists"):
        await me.memory.create_items(specs)
    assert len({pid for pid, _, _ in shares}) == 2
    assert [item.id for item in await me.memory.list_items(limit=200)] == [taken.id]


async def test_a_share_waiting_for_a_lock_makes_the_batch_run_as_one_transaction(
    warm_adapter: PgAdapter, postgres_server: PostgresServer, pg_database: str,
    new_agent: Callable[..., str], shares: list[tuple[int, int, str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Another transaction holds one of the batch's summaries uncommitted: the share that meets
    it gives up after the lock timeout, every share rolls back, and the batch runs again in one
    transaction, which waits for the other to commit and then reinforces that row."""
    monkeypatch.setattr(warm_adapter._core, "share_lock_timeout", 0.1)
    agent = new_agent("wait")
    me = warm_adapter.for_agent(agent)
    specs = _specs("contended", 60)
    held = specs[45]["summary"]
    created: list[Any] = []

    async def write() -> None:
        created.extend(await me.memory.create_items(specs))

    conn: asyncpg.Connection[Any] = await asyncpg.connect(
        postgres_server.dsn_for("agentbus_app", pg_database)
    )
    try:
        async with anyio.create_task_group() as tg:
            transaction = conn.transaction()
            await transaction.start()
            await conn.execute("SELECT set_config('app.agent_id', $1, true)", agent)
            holder = await conn.fetchval(
                "INSERT INTO memory_items (id, agent_id, summary, memory_type, visibility,"
                " content_hash, significance, created_at, updated_at)"
                " VALUES ($1, $2, $3, 'knowledge', 'private', $4, 0.5, now(), now()) RETURNING id",
                "01900000-0000-7000-8000-000000000001", agent, held, content_hash(held),
            )  # fmt: skip
            tg.start_soon(write)
            # Polling the spy under a deadline: nothing in the store could set an event.
            with anyio.fail_after(10):  # the shares gave up: the whole batch is tried again
                while not any(rows == 60 for _, rows, _ in shares):  # noqa: ASYNC110
                    await anyio.sleep(0.02)
            await anyio.sleep(0.3)
            assert not created  # … in one transaction, waiting for the held row
            await transaction.commit()
    finally:
        await conn.close()
    assert [rows for _, rows, _ in shares][-1] == 60
    assert len({pid for pid, rows, _ in shares if rows < 60}) == 2
    assert len(created) == 60
    assert created[45].id == holder
    assert created[45].reinforcement_count == 1
    assert len(await me.memory.list_items(limit=200)) == 60


async def test_concurrent_batches_of_one_agent_with_the_same_summaries(
    warm_adapter: PgAdapter, new_agent: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two large batches of one agent at once, sharing 40 summaries in opposite orders (shares
    of each could wait for the other's, behind their commit barriers): both finish, without a
    deadlock, each summary is stored once, and the second to write it reinforced it."""
    monkeypatch.setattr(warm_adapter._core, "share_lock_timeout", 0.2)
    me = warm_adapter.for_agent(new_agent("race")).memory
    common = _specs("common", 40)
    first = common + _specs("first", 30, seed=500)
    second = _specs("second", 30, seed=900) + common[::-1]
    results: dict[str, list[Any]] = {}

    async def write(name: str, specs: list[dict[str, Any]]) -> None:
        results[name] = await me.create_items(specs)

    started = time.monotonic()
    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            tg.start_soon(write, "first", first)
            tg.start_soon(write, "second", second)
    assert time.monotonic() - started < 60
    by_summary = {i.summary: i for i in results["first"]}
    for item in results["second"]:
        if item.summary in by_summary:
            assert item.id == by_summary[item.summary].id
    stored = await me.list_items(limit=500)
    assert len(stored) == 40 + 30 + 30
    assert sorted(i.reinforcement_count for i in stored) == [0] * 60 + [1] * 40


async def test_a_pool_without_a_spare_connection_still_takes_a_large_batch(
    postgres_server: PostgresServer, pg_database: str, postgres_adapter: PgAdapter,
    new_agent: Callable[..., str],
) -> None:  # fmt: skip
    """With every other connection of the pool taken, the batch goes in through the one it has
    (the share waiting for a second connection gives up when the work is done)."""
    adapter = PgAdapter(
        postgres_server.dsn_for("agentbus_app", pg_database),
        embedding_dim=EMBEDDING_DIM, max_connections=2,
    )  # fmt: skip
    await adapter.open()
    try:
        pool = adapter._core._pool
        assert pool is not None
        me = adapter.for_agent(new_agent("busy")).memory
        async with pool.acquire():  # the other connection is busy for the whole call
            with anyio.fail_after(30):
                created = await me.create_items(_specs("busy", 50))
        assert len(created) == 50
        assert len(await me.list_items(limit=100)) == 50
    finally:
        await adapter.aclose()


def test_insert_connections_is_checked() -> None:
    for bad in (0, -1, True, 1.5):
        with pytest.raises(ConfigError, match="insert_connections"):
            PgAdapter("postgres://x@127.0.0.1/db", insert_connections=bad)  # type: ignore[arg-type]
    core = PgCore(
        "postgres://x@127.0.0.1/db", admin_dsn=None, embedding_dim=8, max_connections=3,
        statement_cache_size=None, pool=None, insert_connections=8,
    )  # fmt: skip
    assert core.insert_connections == 3  # never more than the pool
