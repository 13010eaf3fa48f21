"""SQLite-specific behaviour of SQLiteAdapter (the shared contract lives in test_contract_*)."""

from __future__ import annotations

import array
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import numpy as np
import pytest

from agentbus import Config, InvalidAgentIdError, SQLiteConfig, StorageConfig
from agentbus.storage._errors import (
    MigrationError,
    StorageUnavailableError,
    ValidationError,
)
from agentbus.storage._models import VISIBILITIES, MemoryType, Visibility
from agentbus.storage._sqlite import SQLiteAdapter
from agentbus.storage._sqlite_db import migrations
from agentbus.storage._sqlite_search import fts_query

from ._support import as_list, unit

pytestmark = pytest.mark.anyio

DIM = 8


def vec(seed: int) -> list[float]:
    return as_list(unit(seed, DIM))


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "nested" / "dir" / "agentbus.db"


@pytest.fixture
async def adapter(db_path: Path) -> AsyncIterator[SQLiteAdapter]:
    async with SQLiteAdapter(db_path, embedding_dim=DIM) as opened:
        yield opened


def raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


# --- files, pragmas, migrations --------------------------------------------------------------


async def test_open_creates_directories_and_uses_wal(adapter: SQLiteAdapter, db_path: Path) -> None:
    """open() creates the file and its directories and switches the database to WAL mode."""
    assert db_path.is_file()  # noqa: ASYNC240 (a stat, after the fact)
    conn = raw(db_path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()
    assert adapter.is_ready()


async def test_foreign_keys_are_enforced_on_adapter_connections(adapter: SQLiteAdapter) -> None:
    """Links to a deleted item go with it (ON DELETE CASCADE needs foreign_keys=ON)."""
    me = adapter.for_agent("fk")
    item = await me.memory.create_item("an item with an entity")
    entity = await me.memory.create_entity("Dana")
    await me.memory.link_item_entity(item.id, entity.id)
    await me.memory.delete_item(item.id)
    refreshed = await me.memory.get_entity(entity.id)
    assert refreshed is not None
    assert refreshed.memory_count == 0


async def test_migration_ledger_is_idempotent(db_path: Path) -> None:
    """Opening a store again, or from several adapters at once, applies each migration once."""
    async with SQLiteAdapter(db_path, embedding_dim=DIM):
        pass
    first = _ledger(db_path)
    assert [row[:2] for row in first] == [(v, name) for v, name, _ in migrations()]
    adapters = [SQLiteAdapter(db_path, embedding_dim=DIM) for _ in range(4)]
    async with anyio.create_task_group() as tg:
        for each in adapters:
            tg.start_soon(each.open)
    for each in adapters:
        await each.open()  # open() again is a no-op
        await each.aclose()
    assert _ledger(db_path) == first


def _ledger(path: Path) -> list[tuple[int, str, str]]:
    conn = raw(path)
    try:
        return conn.execute(
            "SELECT version, name, applied_at FROM schema_migrations ORDER BY version"
        ).fetchall()
    finally:
        conn.close()


async def test_newer_schema_is_refused(db_path: Path) -> None:
    """A database migrated by a newer agentbus is refused with a MigrationError."""
    async with SQLiteAdapter(db_path, embedding_dim=DIM):
        pass
    conn = raw(db_path)
    conn.execute("INSERT INTO schema_migrations VALUES (9999, 'future', '2099-01-01')")
    conn.close()
    newer = SQLiteAdapter(db_path, embedding_dim=DIM)
    with pytest.raises(MigrationError, match="upgrade agentbus"):
        await newer.open()
    assert not newer.is_ready()


async def test_embedding_dimension_of_a_store_is_kept(db_path: Path) -> None:
    """Reopening a store holding vectors with another embedding_dim is a MigrationError."""
    async with SQLiteAdapter(db_path, embedding_dim=DIM) as first:
        await first.for_agent("dim").memory.create_item("with a vector", embedding=vec(1))
    with pytest.raises(MigrationError, match=f"{DIM}-dimensional"):
        await SQLiteAdapter(db_path, embedding_dim=DIM * 2).open()


async def test_lifecycle_and_views(adapter: SQLiteAdapter, db_path: Path) -> None:
    """Views share the adapter; a view's aclose() does nothing; use after aclose() is refused."""
    view = adapter.for_agent("life")
    await view.aclose()
    assert adapter.is_ready()
    assert view.is_ready()
    await view.memory.create_item("still open")
    with pytest.raises(ValidationError, match="for_agent"):
        _ = adapter.memory
    with pytest.raises(InvalidAgentIdError):
        adapter.for_agent("Not Valid")
    await adapter.aclose()
    await adapter.aclose()  # idempotent
    assert not view.is_ready()
    with pytest.raises(StorageUnavailableError):
        await view.memory.list_items()
    unopened = SQLiteAdapter(db_path, embedding_dim=DIM)
    with pytest.raises(StorageUnavailableError, match="open"):
        await unopened.for_agent("x").memory.list_items()


async def test_from_config(tmp_path: Path) -> None:
    """from_config takes storage.sqlite.path and storage.embeddingDim."""
    path = tmp_path / "from-config.db"
    config = Config(storage=StorageConfig(sqlite=SQLiteConfig(path=path), embedding_dim=3))
    adapter = SQLiteAdapter.from_config(config)
    assert (adapter.path, adapter.embedding_dim) == (path, 3)


# --- stored forms ----------------------------------------------------------------------------


async def test_vectors_are_float32_blobs_and_timestamps_fixed_width_text(
    adapter: SQLiteAdapter, db_path: Path
) -> None:
    """Embeddings are stored as array('f') bytes; timestamps as UTC text with microseconds."""
    item = await adapter.for_agent("forms").memory.create_item("stored forms", embedding=vec(3))
    conn = raw(db_path)
    try:
        blob, created = conn.execute(
            "SELECT embedding, created_at FROM memory_items WHERE id = ?", (item.id,)
        ).fetchone()
    finally:
        conn.close()
    assert blob == array.array("f", vec(3)).tobytes()
    assert created == item.created_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --- FTS5 -----------------------------------------------------------------------------------


async def test_fts_index_survives_vacuum(adapter: SQLiteAdapter, db_path: Path) -> None:
    """Keyword search finds the same rows after deletes and VACUUM: the external-content FTS5
    index is keyed by the explicit rowid_key, which VACUUM keeps."""
    me = adapter.for_agent("vacuum")
    items = [await me.memory.create_item(f"note {n} about comet {n % 3}") for n in range(30)]
    for item in items[::2]:
        await me.memory.delete_item(item.id)
    keys_before = _keys(db_path)
    before = await me.memory.search_items("comet 1", mode="keyword", limit=50)
    await adapter.vacuum()
    conn = raw(db_path)
    conn.execute("VACUUM")  # a plain VACUUM from any tool as well
    conn.execute(
        "INSERT INTO memory_items_fts (memory_items_fts, rank) VALUES ('integrity-check', 1)"
    )
    conn.close()
    assert _keys(db_path) == keys_before
    after = await me.memory.search_items("comet 1", mode="keyword", limit=50)
    assert [h.item.id for h in after] == [h.item.id for h in before]
    expected = {i.id for n, i in enumerate(items) if n % 2 and n % 3 == 1}
    assert {h.item.id for h in after} == expected


def _keys(path: Path) -> list[tuple[int, str]]:
    conn = raw(path)
    try:
        return conn.execute("SELECT rowid_key, id FROM memory_items ORDER BY rowid_key").fetchall()
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("comet tail", '"comet" AND "tail"'),
        ('NEAR(a b) OR "x* -y:z', '"NEAR" AND "a" AND "b" AND "OR" AND "x" AND "y" AND "z"'),
        ("  ", None),
        ("*** ---", None),
        ("snake_case", '"snake" AND "case"'),
    ],
)
def test_fts_query_quotes_every_word(query: str, expected: str | None) -> None:
    """User text becomes quoted FTS5 strings joined with AND, never FTS5 syntax."""
    assert fts_query(query) == expected


async def test_fts_syntax_in_user_text_is_plain_words(adapter: SQLiteAdapter) -> None:
    """Queries full of FTS5 operators search for the words; they never raise."""
    me = adapter.for_agent("syntax")
    item = await me.memory.create_item("near the comet or the moon")
    for query in ["NEAR(comet moon)", "comet OR moon", '"comet', "comet*", "-comet", "moon:"]:
        hits = await me.memory.search_items(query, mode="keyword")
        assert [h.item.id for h in hits] == [item.id], query
    assert await me.memory.search_items("comet AND sun", mode="keyword") == []
    assert await me.tasks.search_tasks('"unbalanced') == []
    assert await me.memory.search_lessons("NEAR(") == []


# --- the vector cache ------------------------------------------------------------------------


async def test_cache_notices_writes_through_another_connection(db_path: Path) -> None:
    """A second adapter's inserts, re-embeddings and deletes reach the first adapter's cache
    (PRAGMA data_version + the change log), incrementally after the first load."""
    async with (
        SQLiteAdapter(db_path, embedding_dim=DIM) as first,
        SQLiteAdapter(db_path, embedding_dim=DIM) as second,
    ):
        reader, writer = first.for_agent("cache"), second.for_agent("cache")
        old = await writer.memory.create_item("old", embedding=vec(10))
        assert await _nearest(reader, vec(10)) == [old.id]
        new = await writer.memory.create_item("new", embedding=vec(11))
        assert await _nearest(reader, vec(11)) == [new.id]
        await writer.memory.embed_item(old.id, vec(12))
        assert await _nearest(reader, vec(12)) == [old.id]
        await writer.memory.delete_item(new.id)
        assert set(await _nearest(reader, vec(11), k=10)) == {old.id}
        cache = first._db.vectors
        assert (cache.full_loads, cache.incremental_loads) == (1, 3)


async def test_cache_notices_another_process(adapter: SQLiteAdapter, db_path: Path) -> None:
    """An item embedded by another process shows up in this process's vector search."""
    me = adapter.for_agent("proc")
    await me.memory.create_item("before", embedding=vec(20))
    assert len(await _nearest(me, vec(21), k=10)) == 1
    script = (
        "import anyio, sys\n"
        "from agentbus.storage._sqlite import SQLiteAdapter\n"
        "async def main():\n"
        f"    async with SQLiteAdapter(sys.argv[1], embedding_dim={DIM}) as s:\n"
        "        item = await s.for_agent('proc').memory.create_item(\n"
        f"            'from another process', embedding={vec(21)!r})\n"
        "        print(item.id)\n"
        "anyio.run(main)\n"
    )
    result = await anyio.run_process([sys.executable, "-c", script, str(db_path)])
    other_id = result.stdout.decode().strip()
    assert (await _nearest(me, vec(21)))[0] == other_id


async def test_cache_notices_raw_sqlite_writes(adapter: SQLiteAdapter, db_path: Path) -> None:
    """Changes made with any SQLite client (triggers fill the change log) reach the cache."""
    me = adapter.for_agent("rawsql")
    item = await me.memory.create_item("raw", embedding=vec(30))
    assert await _nearest(me, vec(30)) == [item.id]
    conn = raw(db_path)
    conn.execute(
        "UPDATE memory_items SET embedding = ? WHERE id = ?",
        (array.array("f", vec(31)).tobytes(), item.id),
    )
    conn.close()
    hits = await me.memory.search_items("", embedding=vec(31), mode="vector", limit=1)
    assert hits[0].item.id == item.id
    assert hits[0].score == pytest.approx(1.0, abs=1e-6)


async def test_cache_reloads_after_the_change_log_is_pruned(db_path: Path) -> None:
    """After another adapter prunes the change log (vacuum), the cache reloads fully and still
    sees every change."""
    async with (
        SQLiteAdapter(db_path, embedding_dim=DIM) as first,
        SQLiteAdapter(db_path, embedding_dim=DIM) as second,
    ):
        reader, writer = first.for_agent("prune"), second.for_agent("prune")
        await writer.memory.create_item("one", embedding=vec(40))
        await _nearest(reader, vec(40))
        two = await writer.memory.create_item("two", embedding=vec(41))
        await second.vacuum()
        assert await _nearest(reader, vec(41)) == [two.id]
        assert first._db.vectors.full_loads == 2


async def test_search_and_list_match_brute_force_visibility(adapter: SQLiteAdapter) -> None:
    """Exact search over the per-agent and shared segments returns exactly the brute-force top k
    of the visible rows for every visibility and filter mix, and list_items (one index branch
    per kind of visibility) lists exactly the visible rows, newest first."""
    agents = [f"bf-{n}" for n in range(4)]
    team = await adapter.for_agent(agents[0]).teams.create_team("bf", members=agents[1:2])
    rng = np.random.default_rng(7)
    rows = []
    for n in range(240):
        owner = agents[int(rng.integers(4))]
        visibility: Visibility = VISIBILITIES[int(rng.integers(4))]
        if visibility == "team" and owner not in agents[:2]:
            visibility = "private"
        memory_type: MemoryType = ("event", "knowledge")[n % 2]
        embedding = vec(1000 + n)
        item = await adapter.for_agent(owner).memory.create_item(
            f"row {n}", visibility=visibility, memory_type=memory_type, embedding=embedding,
            team_id=team.id if visibility == "team" else None,
        )  # fmt: skip
        rows.append((item.id, owner, visibility, memory_type, np.asarray(embedding)))
    query = vec(5)
    filters: tuple[MemoryType | None, ...] = (None, "event")
    for me in agents:
        for wanted in filters:
            for own_only in (False, True):
                visible = [
                    (float(np.dot(e, query)), i)
                    for i, owner, vis, mt, e in rows
                    if (owner == me or (not own_only and _sees(me, agents, vis)))
                    and wanted in (None, mt)
                ]
                expected = [i for _, i in sorted(visible, key=lambda r: (-r[0], r[1]))[:15]]
                hits = await adapter.for_agent(me).memory.search_items(
                    "", embedding=query, mode="vector", limit=15, memory_type=wanted,
                    own_only=own_only,
                )  # fmt: skip
                assert [h.item.id for h in hits] == expected, (me, wanted, own_only)
        listed = await adapter.for_agent(me).memory.list_items(limit=1000)
        assert {i.id for i in listed} == {
            i for i, owner, vis, _, _ in rows if owner == me or _sees(me, agents, vis)
        }
        newest_first = sorted(listed, key=lambda i: (i.created_at, i.id), reverse=True)
        assert listed == newest_first
        page = await adapter.for_agent(me).memory.list_items(limit=7, offset=5)
        assert page == listed[5:12]


async def test_keyword_search_matches_brute_force_visibility(
    adapter: SQLiteAdapter, db_path: Path
) -> None:
    """Keyword search applies the visibility rule and the filters in SQL, next to the FTS5
    match: for every agent, visibility filter and own_only it returns exactly the visible
    matching rows — never team rows of a team the agent is not in — and raw SQL that changes a
    row's owner or visibility moves it in or out of another agent's results at once."""
    agents = [f"kw-{n}" for n in range(4)]
    team = await adapter.for_agent(agents[0]).teams.create_team("kw", members=agents[1:2])
    other = await adapter.for_agent(agents[2]).teams.create_team("kw other")
    rows = []
    for n in range(80):
        owner = agents[n % 4]
        visibility: Visibility = VISIBILITIES[(n // 4) % 4]
        team_id = None
        if visibility == "team":
            team_id = team.id if owner in agents[:2] else other.id if owner == agents[2] else None
            visibility = "team" if team_id else "private"
        item = await adapter.for_agent(owner).memory.create_item(
            f"harbor row {n}", visibility=visibility, team_id=team_id
        )
        rows.append((item.id, owner, visibility, team_id))

    def sees(me: str, owner: str, visibility: str, team_id: str | None) -> bool:
        members = {team.id: agents[:2], other.id: agents[2:3]}
        return (
            owner == me
            or visibility in ("family", "public")
            or (visibility == "team" and me in members.get(team_id or "", []))
        )

    for me in agents:
        for wanted in (None, *VISIBILITIES):
            for own_only in (False, True):
                hits = await adapter.for_agent(me).memory.search_items(
                    "harbor", mode="keyword", limit=100, visibility=wanted, own_only=own_only
                )
                expected = {
                    i for i, owner, vis, t in rows
                    if sees(me, owner, vis, t) and wanted in (None, vis)
                    and (not own_only or owner == me)
                }  # fmt: skip
                assert {h.item.id for h in hits} == expected, (me, wanted, own_only)

    me = adapter.for_agent(agents[3]).memory
    hidden = await adapter.for_agent(agents[0]).memory.create_item("zeppelin over the bay")
    conn = raw(db_path)
    try:
        assert await me.search_items("zeppelin", mode="keyword") == []
        conn.execute("UPDATE memory_items SET visibility = 'family' WHERE id = ?", (hidden.id,))
        found = await me.search_items("zeppelin", mode="keyword")
        assert [h.item.id for h in found] == [hidden.id]
        conn.execute("UPDATE memory_items SET visibility = 'private' WHERE id = ?", (hidden.id,))
        assert await me.search_items("zeppelin", mode="keyword") == []
        conn.execute("UPDATE memory_items SET agent_id = ? WHERE id = ?", (agents[3], hidden.id))
        found = await me.search_items("zeppelin", mode="keyword", own_only=True)
        assert [h.item.id for h in found] == [hidden.id]
    finally:
        conn.close()


def _sees(me: str, agents: list[str], visibility: str) -> bool:
    return visibility in ("family", "public") or (visibility == "team" and me in agents[:2])


async def _nearest(view: SQLiteAdapter, query: list[float], k: int = 1) -> list[str]:
    hits = await view.memory.search_items("", embedding=query, mode="vector", limit=k)
    return [h.item.id for h in hits]


# --- concurrency ----------------------------------------------------------------------------


async def test_get_or_create_across_connections_makes_one_row(db_path: Path) -> None:
    """Parallel get-or-create calls for one entity name from two adapters (two writer
    connections) make one row."""
    async with (
        SQLiteAdapter(db_path, embedding_dim=DIM) as first,
        SQLiteAdapter(db_path, embedding_dim=DIM) as second,
    ):
        results = []

        async def create(adapter: SQLiteAdapter, name: str) -> None:
            results.append(await adapter.for_agent("race").memory.create_entity(name))

        async with anyio.create_task_group() as tg:
            for n in range(10):
                tg.start_soon(create, (first, second)[n % 2], ["Eve", "eve", "EVE"][n % 3])
    assert len({entity.id for entity in results}) == 1
    conn = raw(db_path)
    try:
        assert conn.execute("SELECT count(*) FROM entities").fetchone()[0] == 1
    finally:
        conn.close()


async def test_write_waiting_past_busy_timeout_is_unavailable(db_path: Path) -> None:
    """A write that waits longer than busy_timeout for another process's write lock raises
    StorageUnavailableError (the sqlite3 error is its cause) and leaves the adapter usable."""
    async with SQLiteAdapter(db_path, embedding_dim=DIM, busy_timeout=0.2) as adapter:
        me = adapter.for_agent("busy")
        holder = raw(db_path)
        holder.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(StorageUnavailableError) as caught:
                await me.memory.create_item("waits for the lock")
            assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
            assert await me.memory.list_items() == []  # readers are not blocked (WAL)
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert (await me.memory.create_item("after the lock")).summary == "after the lock"


async def test_failed_migration_is_rolled_back(db_path: Path) -> None:
    """A migration that fails raises MigrationError naming it and leaves no half-applied
    schema: after the cause is removed, opening applies it cleanly."""
    db_path.parent.mkdir(parents=True)
    conn = raw(db_path)
    conn.execute("CREATE TABLE agents (clash INTEGER)")  # 0001 creates agents
    conn.close()
    with pytest.raises(MigrationError, match="0001_init"):
        await SQLiteAdapter(db_path, embedding_dim=DIM).open()
    conn = raw(db_path)
    assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone()[0] == 0
    assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'teams'").fetchall() == []
    conn.execute("DROP TABLE agents")
    conn.close()
    async with SQLiteAdapter(db_path, embedding_dim=DIM) as adapter:
        assert adapter.is_ready()
