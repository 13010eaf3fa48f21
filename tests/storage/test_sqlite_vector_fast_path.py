"""SQLite vector search answered on the event loop from the in-process cache (``search_now``):
used once the cache is fresh, and never stale — every kind of change, by this adapter, another
adapter on the same file or raw SQL, sends the next search through the worker thread first."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from agentbus.storage import ValidationError, _sqlite_vectors as vectors
from agentbus.storage._sqlite import SQLiteAdapter
from agentbus.storage._sqlite_vectors import VectorCache, best_rows

from ._support import unit

pytestmark = pytest.mark.anyio

DIM = 8


def vec(seed: int) -> np.ndarray:
    return unit(seed, DIM)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "agentbus.db"


@pytest.fixture
async def adapter(db_path: Path) -> AsyncIterator[SQLiteAdapter]:
    async with SQLiteAdapter(db_path, embedding_dim=DIM) as opened:
        yield opened


def cache_of(adapter: SQLiteAdapter) -> VectorCache:
    return adapter._db.vectors


async def test_a_repeated_search_is_answered_from_the_cache_with_the_same_hits(
    adapter: SQLiteAdapter,
) -> None:
    memory = adapter.for_agent("fast").memory
    for seed in range(20):
        await memory.create_item(f"note {seed}", embedding=vec(seed))
    cache = cache_of(adapter)
    first = await memory.search_items("", embedding=vec(3), mode="vector", limit=5)
    assert cache.served_now == 0  # the first search loads the cache in a worker thread
    second = await memory.search_items("", embedding=vec(3), mode="vector", limit=5)
    assert cache.served_now == 1
    assert second == first
    assert second[0].item.summary == "note 3"
    assert second[0].vector_rank == 1
    assert second[0].score == pytest.approx(1.0, abs=1e-6)
    # Another agent's first search: with no shared rows its team membership cannot matter, so
    # it is answered from memory too.
    other = adapter.for_agent("other").memory
    assert await other.search_items("", embedding=vec(3), mode="vector") == []
    assert cache.served_now == 2


async def test_own_writes_are_seen_by_the_next_search(adapter: SQLiteAdapter) -> None:
    """Create, reinforce and delete through this adapter: each next search is current."""
    memory = adapter.for_agent("fast").memory
    item = await memory.create_item("first", embedding=vec(1))
    await memory.search_items("", embedding=vec(1), mode="vector")
    await memory.reinforce_item(item.id)
    hits = await memory.search_items("", embedding=vec(1), mode="vector")
    assert hits[0].item.reinforcement_count == item.reinforcement_count + 1
    added = await memory.create_item("second", embedding=vec(2))
    assert (await memory.search_items("", embedding=vec(2), mode="vector"))[0].item.id == added.id
    await memory.delete_item(added.id)
    hits = await memory.search_items("", embedding=vec(2), mode="vector")
    assert [hit.item.id for hit in hits] == [item.id]


async def test_changes_by_another_connection_are_seen_by_the_next_search(
    adapter: SQLiteAdapter, db_path: Path
) -> None:
    """Another adapter's reinforcement and a raw SQL metadata update (no vector change): the
    cache answers with the new rows, not the ones it held."""
    memory = adapter.for_agent("fast").memory
    item = await memory.create_item("shared file", embedding=vec(5), metadata={"v": 1})
    await memory.search_items("", embedding=vec(5), mode="vector")
    await memory.search_items("", embedding=vec(5), mode="vector")
    assert cache_of(adapter).served_now == 1
    async with SQLiteAdapter(db_path, embedding_dim=DIM) as other:
        await other.for_agent("fast").memory.reinforce_item(item.id)
    hits = await memory.search_items("", embedding=vec(5), mode="vector")
    assert hits[0].item.reinforcement_count == item.reinforcement_count + 1
    raw = sqlite3.connect(db_path, isolation_level=None)
    raw.execute("UPDATE memory_items SET metadata = '{\"v\":2}' WHERE id = ?", (item.id,))
    raw.close()
    hits = await memory.search_items("", embedding=vec(5), mode="vector")
    assert hits[0].item.metadata == {"v": 2}
    served = cache_of(adapter).served_now
    assert (await memory.search_items("", embedding=vec(5), mode="vector")) == hits
    assert cache_of(adapter).served_now == served + 1  # fresh again: answered from memory


async def test_leaving_a_team_hides_its_rows_from_the_next_search(adapter: SQLiteAdapter) -> None:
    """Team membership is cached with the vectors; a membership change is a commit, so the next
    search re-reads it."""
    lead, member = adapter.for_agent("lead"), adapter.for_agent("member")
    team = await lead.teams.create_team("crew", members=["member"])
    shared = await lead.memory.create_item(
        "team note", visibility="team", team_id=team.id, embedding=vec(7)
    )
    for _ in range(2):
        hits = await member.memory.search_items("", embedding=vec(7), mode="vector")
        assert [hit.item.id for hit in hits] == [shared.id]
    assert cache_of(adapter).served_now >= 1
    await lead.teams.remove_member(team.id, "member")
    assert await member.memory.search_items("", embedding=vec(7), mode="vector") == []
    assert await member.memory.search_items("", embedding=vec(7), mode="vector") == []


async def test_a_callers_changes_to_a_hit_do_not_reach_the_cache(adapter: SQLiteAdapter) -> None:
    memory = adapter.for_agent("fast").memory
    await memory.create_item("meta", embedding=vec(9), metadata={"tags": ["a"], "n": 1})
    for _ in range(2):
        hit = (await memory.search_items("", embedding=vec(9), mode="vector"))[0]
        assert hit.item.metadata == {"tags": ["a"], "n": 1}
        hit.item.metadata["n"] = 99
        hit.item.metadata["tags"].append("b")
    assert cache_of(adapter).served_now == 1


async def test_a_busy_cache_sends_the_search_to_the_thread_path(adapter: SQLiteAdapter) -> None:
    """While a worker thread holds the cache, the loop never waits for it: it takes the thread
    path (which waits there, off the loop) and still answers correctly."""
    memory = adapter.for_agent("fast").memory
    item = await memory.create_item("busy", embedding=vec(4))
    await memory.search_items("", embedding=vec(4), mode="vector")
    cache = cache_of(adapter)
    probe = adapter._db.probe()
    assert probe is not None
    assert cache.search_now("fast", vec(4), 1, probe=probe) is not None  # fresh, not busy
    assert cache._lock.acquire()
    try:
        assert cache.search_now("fast", vec(4), 1, probe=probe) is None  # busy: never waits
    finally:
        cache._lock.release()
    hits = await memory.search_items("", embedding=vec(4), mode="vector")
    assert [hit.item.id for hit in hits] == [item.id]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
async def test_a_float32_array_holding_nan_or_infinity_is_refused_on_the_fast_path_too(
    adapter: SQLiteAdapter, bad: float
) -> None:
    """The event-loop path leaves a float32 array's values to the cache's square test; such a
    query must still be the same ValidationError, not a ranking of NaNs."""
    memory = adapter.for_agent("fast").memory
    await memory.create_item("note", embedding=vec(1))
    await memory.search_items("", embedding=vec(1), mode="vector")  # the cache is fresh now
    query = vec(2)
    query[3] = bad
    with pytest.raises(ValidationError, match="NaN or infinity"):
        await memory.search_items("", embedding=query, mode="vector")


async def test_a_huge_but_finite_query_ranks_like_its_direction(adapter: SQLiteAdapter) -> None:
    """A query whose square overflows float32 is scaled, not ranked by infinities (and no
    overflow warning escapes: warnings are errors in this suite)."""
    memory = adapter.for_agent("fast").memory
    for seed in range(5):
        await memory.create_item(f"note {seed}", embedding=vec(seed))
    unit = await memory.search_items("", embedding=vec(2), mode="vector")
    huge = await memory.search_items("", embedding=vec(2) * np.float32(1e30), mode="vector")
    assert [hit.item.id for hit in huge] == [hit.item.id for hit in unit]
    assert [hit.score for hit in huge] == pytest.approx([hit.score for hit in unit], abs=1e-5)


@pytest.mark.parametrize("seed", range(40))
def test_best_rows_keeps_every_row_tied_with_the_kth(seed: int) -> None:
    """Against a plain sort: the top k, plus every row tied with the k-th (scores drawn from a
    few values, so ties across the k-th are common)."""
    rng = np.random.default_rng(seed)
    n, k = int(rng.integers(1, 40)), int(rng.integers(1, 12))
    scores = rng.choice(np.linspace(-1, 1, 7), n).astype(np.float32)
    rows, values = best_rows(scores, k)
    kth = np.sort(scores)[::-1][min(k, n) - 1]
    assert sorted(rows) == sorted(np.flatnonzero(scores >= kth).tolist())
    assert values == scores[rows].tolist()


async def test_too_many_rows_for_the_loop_take_the_thread_path(
    adapter: SQLiteAdapter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Scoring is bounded on the event loop: past the bound the same search runs in a worker
    thread, with the same hits."""
    memory = adapter.for_agent("fast").memory
    for seed in range(5):
        await memory.create_item(f"note {seed}", embedding=vec(seed))
    first = await memory.search_items("", embedding=vec(3), mode="vector")
    cache = cache_of(adapter)
    monkeypatch.setattr(vectors, "NOW_MAX_WORK", 4 * DIM)  # 4 rows: fewer than 5
    assert await memory.search_items("", embedding=vec(3), mode="vector") == first
    assert cache.served_now == 0
    monkeypatch.setattr(vectors, "NOW_MAX_WORK", 5 * DIM)
    assert await memory.search_items("", embedding=vec(3), mode="vector") == first
    assert cache.served_now == 1
