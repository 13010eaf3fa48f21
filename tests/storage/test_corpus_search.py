"""Agent-scoped vector search on a slice of the shared corpus (real texts, real embeddings).

The CI fixture is small: every row of a tiny agent (< k rows), a small agent (< 100 rows) and a
medium one, plus a 2,000-row slice of the largest agent — about 2,500 rows, each loaded as its
agent's private item with ``create_items`` in batches. Queries are held-out rows of the same
agent (not loaded), so no query finds itself. The truth is numpy exact cosine search over the
agent's loaded rows, which are exactly the rows it can see.

Recall@10 counts a returned row as correct when its exact similarity reaches the 10th best
exact similarity (so rows tied at the boundary count either way).
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from ._stores import DATA, require_corpus
from ._support import EMBEDDING_DIM

pytestmark = pytest.mark.anyio

K = 10
BATCH = 500
RECALL_TARGET = 0.95
# agent -> (rows to load, held-out query rows); None loads every row but the queries.
AGENTS: dict[str, tuple[str, int | None, int]] = {
    "tiny": ("libnsl2", None, 1),  # 4 rows: fewer than k visible
    "small": ("cmake", None, 10),  # 96 rows
    "medium": ("openssh-client", None, 20),  # 449 rows
    "large": ("linux-libc-dev", 2000, 20),  # the largest agent (49,771 rows): a slice
}


@dataclass
class AgentRows:
    agent: str
    loaded: list[int] = field(default_factory=list)  # corpus row numbers stored for the agent
    queries: list[int] = field(default_factory=list)  # held out: never stored


@pytest.fixture(scope="module")
def corpus() -> tuple[dict[str, AgentRows], dict[int, str], np.ndarray]:
    """The fixture's rows per size class, their texts, and the unit float32 vectors (all rows,
    memory-mapped)."""
    require_corpus()
    wanted = {agent for agent, _, _ in AGENTS.values()}
    by_agent: dict[str, list[tuple[int, str]]] = {agent: [] for agent in wanted}
    with gzip.open(DATA / "items.jsonl.gz", "rt", encoding="utf-8") as lines:
        for line in lines:
            row = json.loads(line)
            if row["agent"] in wanted:
                by_agent[row["agent"]].append((row["row"], row["text"]))
    texts: dict[int, str] = {}
    classes: dict[str, AgentRows] = {}
    for size, (agent, load, hold_out) in AGENTS.items():
        seen: set[str] = set()
        unique = []
        for number, text in sorted(by_agent[agent]):
            normalised = " ".join(text.split())  # what the content hash de-duplicates
            if normalised not in seen:
                seen.add(normalised)
                unique.append(number)
                texts[number] = text
        count = len(unique) - hold_out if load is None else load
        classes[size] = AgentRows(agent, unique[:count], unique[count : count + hold_out])
    raw = np.load(DATA / "vectors-int8.npy", mmap_mode="r")
    assert raw.shape[1] == EMBEDDING_DIM
    return classes, texts, raw


def vectors(raw: np.ndarray, rows: list[int]) -> np.ndarray:
    """Unit float32 vectors of ``rows`` (int8 / 127)."""
    return (np.asarray(raw[rows], dtype=np.float32) / 127.0).astype(np.float32)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def corpus_adapter(request: pytest.FixtureRequest) -> Any:
    """The module's adapter of each backend (resolved outside the event loop)."""
    return request.getfixturevalue(f"{request.param}_adapter")


@pytest.fixture(scope="module")
async def loaded(
    corpus_adapter: Any, corpus: tuple[dict[str, AgentRows], dict[int, str], np.ndarray]
) -> tuple[Any, dict[str, dict[str, int]]]:
    """The backend with the fixture loaded; maps each size class to {item id: corpus row}."""
    adapter = corpus_adapter
    classes, texts, raw = corpus
    ids: dict[str, dict[str, int]] = {}
    for size, rows in classes.items():
        me = adapter.for_agent(rows.agent)
        matrix = vectors(raw, rows.loaded)
        ids[size] = {}
        for start in range(0, len(rows.loaded), BATCH):
            batch = rows.loaded[start : start + BATCH]
            items = await me.memory.create_items(
                [{"summary": texts[number], "embedding": matrix[start + n].tolist()}
                 for n, number in enumerate(batch)]
            )  # fmt: skip
            ids[size].update({item.id: number for item, number in zip(items, batch, strict=True)})
        assert len(ids[size]) == len(rows.loaded), f"{size}: rows were merged or lost"
    return adapter, ids


def test_fixture_has_the_size_classes(
    corpus: tuple[dict[str, AgentRows], dict[int, str], np.ndarray],
) -> None:
    """The CI fixture holds a tiny (< k), a small (< 100), a medium and a large agent, a few
    thousand rows in all."""
    classes = corpus[0]
    sizes = {size: len(rows.loaded) for size, rows in classes.items()}
    assert sizes["tiny"] < K
    assert K < sizes["small"] < 100
    assert 100 < sizes["medium"] < 1000
    assert sizes["large"] == 2000
    assert 2000 < sum(sizes.values()) < 5000
    assert all(rows.queries for rows in classes.values())


@pytest.mark.parametrize("size", list(AGENTS))
async def test_agent_scoped_vector_search_returns_k_with_recall(
    loaded: tuple[Any, dict[str, dict[str, int]]],
    corpus: tuple[dict[str, AgentRows], dict[int, str], np.ndarray],
    size: str,
) -> None:
    """Agent-scoped vector search returns exactly min(k, visible rows) of the agent's own rows
    for every query, with recall@10 >= 0.95 against numpy exact search over those rows."""
    adapter, ids = loaded
    classes, texts, raw = corpus
    rows = classes[size]
    me = adapter.for_agent(rows.agent)
    stored = vectors(raw, rows.loaded)
    stored /= np.linalg.norm(stored, axis=1, keepdims=True)
    expected_count = min(K, len(rows.loaded))
    recalls = []
    for number in rows.queries:
        query = vectors(raw, [number])[0]
        hits = await me.memory.search_items(
            texts[number], embedding=query.tolist(), mode="vector", limit=K
        )
        assert len(hits) == expected_count, f"{size}: query row {number}"
        got = [ids[size].get(hit.item.id) for hit in hits]
        assert None not in got, f"{size}: a hit outside the agent's rows"
        exact = stored @ (query / np.linalg.norm(query))
        threshold = np.sort(exact)[-expected_count]
        position = {n: i for i, n in enumerate(rows.loaded)}
        correct = sum(exact[position[n]] >= threshold - 1e-6 for n in got)
        recalls.append(correct / expected_count)
        for hit, n in zip(hits, got, strict=True):
            assert hit.score == pytest.approx(float(exact[position[n]]), abs=1e-4)
    recall = float(np.mean(recalls))
    print(f"{size} ({rows.agent}, {len(rows.loaded)} rows): recall@{K} {recall:.3f}")
    assert recall >= RECALL_TARGET, f"{size}: recall@{K} {recall:.3f}"


async def test_hybrid_search_on_the_corpus_returns_k(
    loaded: tuple[Any, dict[str, dict[str, int]]],
    corpus: tuple[dict[str, AgentRows], dict[int, str], np.ndarray],
) -> None:
    """Hybrid search for a small agent returns k of its own rows (the vector branch fills the
    list even when few rows match the words)."""
    adapter, ids = loaded
    classes, texts, raw = corpus
    rows = classes["small"]
    me = adapter.for_agent(rows.agent)
    for number in rows.queries[:5]:
        hits = await me.memory.search_items(
            texts[number], embedding=vectors(raw, [number])[0].tolist(), limit=K
        )
        assert len(hits) == K
        assert all(hit.item.id in ids["small"] for hit in hits)
