"""Search: the keyword rule (every term, after stemming), cosine vector search that returns k rows
whenever k are visible, and hybrid = Reciprocal Rank Fusion with filters inside each branch.

Words are chosen to stem alike under PostgreSQL's ``english`` and FTS5's ``porter`` (checked:
kettle(s), harbor(s), violin(s), lantern(s), glacier(s), pebble(s), orchard(s), running/runs), and
queries avoid English stop words (PostgreSQL drops them, FTS5 keeps them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from agentbus import uuid7
from agentbus.storage._models import RRF_K
from agentbus.storage._rules import fuse_rrf

from ._support import as_list, cosine, unit, with_cosine

pytestmark = pytest.mark.anyio

View = Callable[..., Any]


def ids(hits: list[Any]) -> list[str]:
    return [hit.item.id for hit in hits]


# --- keyword ---------------------------------------------------------------------------------


async def test_keyword_search_requires_every_term(view: View) -> None:
    """A query of several terms returns only the rows containing all of them (after stemming)."""
    me = view()
    both = await me.memory.create_item("the kettle sits by the harbor")
    plural = await me.memory.create_item("two kettles rusting in old harbors")
    only_kettle = await me.memory.create_item("a kettle on the stove")
    only_harbor = await me.memory.create_item("the harbor at night")
    neither = await me.memory.create_item("a violin case")
    for mode in ("keyword", "hybrid"):
        found = await me.memory.search_items("kettle harbor", mode=mode)
        assert set(ids(found)) == {both.id, plural.id}, mode
    assert set(ids(await me.memory.search_items("kettles", mode="keyword"))) == {
        both.id, plural.id, only_kettle.id,
    }  # fmt: skip
    assert set(ids(await me.memory.search_items("harbors", mode="keyword"))) == {
        both.id, plural.id, only_harbor.id,
    }  # fmt: skip
    assert await me.memory.search_items("kettle harbor violin", mode="keyword") == []
    assert neither.id not in ids(await me.memory.search_items("violin kettle", mode="keyword"))


async def test_query_text_is_words_not_query_syntax(view: View) -> None:
    """Quotes, parentheses, stars and operators in the query are plain text, never search
    syntax: such a query finds what its words find, and a query without words finds nothing
    (PostgreSQL's plainto_tsquery rule), without an error."""
    me = view()
    target = await me.memory.create_item("lantern glacier expedition")
    await me.memory.create_item("lantern only")
    plain = ids(await me.memory.search_items("lantern glacier", mode="keyword"))
    assert plain == [target.id]
    for query in ["", "   ", "?!", "()", '"', "*"]:
        assert await me.memory.search_items(query, mode="keyword") == [], repr(query)
    for query in [
        'lantern" (glacier*',
        "lantern: glacier -",
        "+lantern ^glacier}",
        "lantern|glacier&",
    ]:
        assert ids(await me.memory.search_items(query, mode="keyword")) == plain, query


async def test_keyword_hits_carry_keyword_ranks(view: View) -> None:
    """Keyword hits are ranked 1..n in result order, have no vector rank, and scores never
    increase down the list."""
    me = view()
    for n in range(4):
        await me.memory.create_item(f"pebble report {n}" + " pebble" * n)
    hits = await me.memory.search_items("pebble", mode="keyword")
    assert len(hits) == 4
    assert [h.keyword_rank for h in hits] == [1, 2, 3, 4]
    assert [h.vector_rank for h in hits] == [None] * 4
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)


async def test_keyword_search_respects_limit(view: View) -> None:
    """search_items returns at most ``limit`` hits (default 10)."""
    me = view()
    await me.memory.create_items([{"summary": f"orchard row {n}"} for n in range(15)])
    assert len(await me.memory.search_items("orchard", mode="keyword")) == 10
    assert len(await me.memory.search_items("orchard", mode="keyword", limit=3)) == 3
    assert len(await me.memory.search_items("orchard", mode="keyword", limit=100)) == 15


async def test_keyword_result_sets_agree_across_backends(
    sqlite_adapter: Any, postgres_adapter: Any, new_agent: Callable[..., str]
) -> None:
    """The same rows under the same ids give the same keyword result sets on SQLite and
    PostgreSQL for queries whose words stem alike (rank order may differ), and the same vector
    result order."""
    agent = new_agent("twin")
    sentences = [
        "the kettle sits by the harbor",
        "two kettles rusting in old harbors",
        "running lanterns along the glacier",
        "she runs past copper pebbles",
        "a violin in the orchard",
        "violins and lanterns in the orchards",
        "copper kettle and a pebble",
        "glacier meadow orchard tour",
        "telescope pointed at the harbor",
    ]
    rows = [{"summary": s, "id": uuid7(), "embedding": as_list(unit(500 + n))} for n, s in
            enumerate(sentences)]  # fmt: skip
    queries = [
        "kettle", "kettles harbor", "running lanterns", "copper pebbles", "orchard",
        "glacier meadow orchard", "telescope harbor", "violin lantern", "nothing matches zebra",
    ]  # fmt: skip
    results: list[dict[str, Any]] = []
    for adapter in (sqlite_adapter, postgres_adapter):
        me = adapter.for_agent(agent)
        await me.memory.create_items(rows)
        found: dict[str, Any] = {}
        for query in queries:
            found[query] = set(ids(await me.memory.search_items(query, mode="keyword", limit=50)))
        found["vector"] = ids(
            await me.memory.search_items("x", embedding=as_list(unit(500)), mode="vector")
        )
        results.append(found)
    assert results[0] == results[1]
    assert results[0]["kettle"] == {rows[0]["id"], rows[1]["id"], rows[6]["id"]}
    assert results[0]["running lanterns"] == {rows[2]["id"]}


# --- vector ----------------------------------------------------------------------------------


async def test_vector_search_is_exact_cosine_and_returns_k(view: View) -> None:
    """Vector search over an agent's rows, among many rows of another agent, returns the k
    nearest by cosine in order, with score = cosine similarity and vector ranks 1..k."""
    me, crowd = view("me"), view("crowd")
    query = unit(1000)
    await crowd.memory.create_items(
        [{"summary": f"crowd row {n}", "embedding": as_list(with_cosine(query, 0.95, 2000 + n))}
         for n in range(300)]
    )  # fmt: skip
    mine = await me.memory.create_items(
        [{"summary": f"my row {n}", "embedding": as_list(unit(3000 + n))} for n in range(12)]
    )
    vectors = {item.id: unit(3000 + n) for n, item in enumerate(mine)}
    expected = sorted(vectors, key=lambda i: -cosine(vectors[i], query))[:10]
    hits = await me.memory.search_items("x", embedding=as_list(query), mode="vector")
    assert ids(hits) == expected
    assert [h.vector_rank for h in hits] == list(range(1, 11))
    assert [h.keyword_rank for h in hits] == [None] * 10
    for hit in hits:
        assert hit.score == pytest.approx(cosine(vectors[hit.item.id], query), abs=1e-5)


async def test_vector_search_returns_all_when_fewer_than_k(view: View) -> None:
    """With fewer than k embedded rows visible, vector search returns all of them (rows without
    an embedding are not in the vector branch)."""
    me = view()
    embedded = [
        await me.memory.create_item(f"embedded {n}", embedding=as_list(unit(4000 + n)))
        for n in range(3)
    ]
    await me.memory.create_item("not embedded one")
    await me.memory.create_item("not embedded two")
    hits = await me.memory.search_items("x", embedding=as_list(unit(4000)), mode="vector")
    assert set(ids(hits)) == {item.id for item in embedded}
    assert ids(hits)[0] == embedded[0].id


async def test_vector_search_with_k_visible_among_many_returns_k(view: View) -> None:
    """An agent holding exactly k embedded rows gets all k back even when its rows are a small
    fraction of the store and every other row is closer to the query."""
    me, crowd = view("me"), view("crowd")
    query = unit(5000)
    await crowd.memory.create_items(
        [{"summary": f"near crowd {n}", "embedding": as_list(with_cosine(query, 0.99, 6000 + n))}
         for n in range(400)]
    )  # fmt: skip
    mine = await me.memory.create_items(
        [{"summary": f"far row {n}", "embedding": as_list(with_cosine(query, 0.1, 7000 + n))}
         for n in range(10)]
    )  # fmt: skip
    hits = await me.memory.search_items("x", embedding=as_list(query), mode="vector", limit=10)
    assert set(ids(hits)) == {item.id for item in mine}


# --- hybrid ----------------------------------------------------------------------------------


async def test_hybrid_without_embedding_is_keyword_only(view: View) -> None:
    """Hybrid search without an embedding returns the keyword results — the same hits, ranks
    and keyword scores as mode="keyword" (as knowledge search does) — with no error."""
    me = view()
    await me.memory.create_item("copper lantern", embedding=as_list(unit(1)))
    await me.memory.create_item("copper lantern polished twice")
    await me.memory.create_item("copper pipes")
    hybrid = await me.memory.search_items("copper lantern")
    keyword = await me.memory.search_items("copper lantern", mode="keyword")
    assert len(hybrid) == 2
    assert ids(hybrid) == ids(keyword)
    assert [h.keyword_rank for h in hybrid] == [1, 2]
    assert [h.vector_rank for h in hybrid] == [None, None]
    assert [h.score for h in hybrid] == [h.score for h in keyword]


async def test_hybrid_fuses_with_rrf_on_a_constructed_example(view: View) -> None:
    """Hybrid ranks by 1/(60 + keyword rank) + 1/(60 + vector rank): the one keyword match at
    vector rank 2 beats the best vector match, and both ranks are reported."""
    me = view()
    query = unit(8000)
    z = await me.memory.create_item("zeta note", embedding=as_list(with_cosine(query, 0.9, 1)))
    y = await me.memory.create_item("ledger entry", embedding=as_list(with_cosine(query, 0.8, 2)))
    x = await me.memory.create_item("chi note", embedding=as_list(with_cosine(query, 0.7, 3)))
    w = await me.memory.create_item("omega note", embedding=as_list(with_cosine(query, 0.6, 4)))
    hits = await me.memory.search_items("ledger", embedding=as_list(query), own_only=True)
    assert ids(hits) == [y.id, z.id, x.id, w.id]
    assert [(h.keyword_rank, h.vector_rank) for h in hits] == [
        (1, 2),
        (None, 1),
        (None, 3),
        (None, 4),
    ]
    expected = [
        1 / (RRF_K + 1) + 1 / (RRF_K + 2),
        1 / (RRF_K + 1),
        1 / (RRF_K + 3),
        1 / (RRF_K + 4),
    ]
    assert [h.score for h in hits] == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("smaller", ["keyword_row", "vector_row"])
async def test_hybrid_ties_are_broken_by_id(view: View, smaller: str) -> None:
    """A keyword-only row and a vector-only row at rank 1 in their branches tie at 1/61; the
    smaller id comes first whichever was created first."""
    me = view()
    low, high = sorted([uuid7(), uuid7()])
    keyword_id, vector_id = (low, high) if smaller == "keyword_row" else (high, low)
    await me.memory.create_item("beacon signal", id=keyword_id)  # keyword match, no embedding
    await me.memory.create_item("quiet row", id=vector_id, embedding=as_list(unit(9000)))
    hits = await me.memory.search_items("beacon", embedding=as_list(unit(9000)), own_only=True)
    assert ids(hits) == [low, high]
    assert [h.score for h in hits] == pytest.approx([1 / (RRF_K + 1)] * 2, rel=1e-9)


async def test_hybrid_equals_rrf_of_the_branches(view: View) -> None:
    """Hybrid results equal ``_rules.fuse_rrf`` over the keyword and vector results the same
    backend returns (ids, order, scores and both ranks), when every row fits in the limit."""
    me = view()
    query = unit(10_000)
    for n in range(8):
        # Even rows match the keyword, each with a different term frequency (no keyword ties).
        summary = "falcon " * (n // 2 + 1) + f"sighting {n}" if n % 2 == 0 else f"row {n}"
        await me.memory.create_item(
            summary, embedding=as_list(with_cosine(query, 0.2 + 0.09 * n, 10_100 + n))
        )
    keyword = await me.memory.search_items("falcon", mode="keyword", own_only=True)
    vector = await me.memory.search_items(
        "falcon", embedding=as_list(query), mode="vector", own_only=True
    )
    hybrid = await me.memory.search_items("falcon", embedding=as_list(query), own_only=True)
    assert len(keyword) == 4
    assert len(vector) == 8
    fused = fuse_rrf(ids(keyword), ids(vector), limit=10)
    assert [(h.item.id, h.keyword_rank, h.vector_rank) for h in hybrid] == [
        (row[0], row[2], row[3]) for row in fused
    ]
    assert [h.score for h in hybrid] == pytest.approx([row[1] for row in fused], rel=1e-9)


async def test_filters_apply_inside_each_branch(view: View) -> None:
    """A memory_type filter is applied inside the keyword and vector branches, not after
    fusion: the two matching rows come back although 30 closer, better-matching rows of another
    type exist."""
    me = view()
    query = unit(11_000)
    await me.memory.create_items(
        [{"summary": f"signal signal flare {n}", "memory_type": "skill",
          "embedding": as_list(with_cosine(query, 0.95, 11_100 + n))} for n in range(30)]
    )  # fmt: skip
    events = await me.memory.create_items(
        [{"summary": f"signal report {n}", "memory_type": "event",
          "embedding": as_list(with_cosine(query, 0.3, 11_200 + n))} for n in range(2)]
    )  # fmt: skip
    wanted = {item.id for item in events}
    for mode in ("hybrid", "keyword", "vector"):
        hits = await me.memory.search_items(
            "signal", embedding=as_list(query), mode=mode, limit=2, memory_type="event"
        )
        assert set(ids(hits)) == wanted, mode
        assert {h.item.memory_type for h in hits} == {"event"}
    hybrid = await me.memory.search_items(
        "signal", embedding=as_list(query), limit=2, memory_type="event"
    )
    assert sorted(h.keyword_rank for h in hybrid) == [1, 2]  # ranks within the filtered branch
    assert sorted(h.vector_rank for h in hybrid) == [1, 2]
