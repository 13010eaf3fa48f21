"""Knowledge search over 100 collections of the shared corpus, of which agent B may read 10.

Fixture (per backend, once per module): the corpus's 100 largest agents each own one private
collection holding 8 of their rows as documents (real changelog entries with their MiniLM
vectors; every document also ends with the line "source: <package> changelog", so one keyword
matches all 800). The owners of every tenth collection grant B 'read' — 80 permitted documents
(one chunk each), 720 forbidden. Queries are held-out rows (never stored) of permitted and
forbidden agents alike: a forbidden agent's query has its nearest neighbours in a collection B
may not read, so a search that ranked first and filtered after would come back short.

Truth: numpy exact cosine search over the 80 permitted chunks. Recall@10 counts a hit as correct
when its exact similarity reaches the 10th best (ties at the boundary count either way).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from ._stores import Corpus, load_corpus, store

pytestmark = pytest.mark.anyio

COLLECTIONS = 100
PERMITTED_EVERY = 10  # B may read collections 0, 10, 20, ... (10 of 100)
DOCS = 8  # stored rows per collection
QUERIES = 2  # held-out rows per collection
K = 10
RECALL_TARGET = 0.95
MAX_TEXT = 1000  # rows longer than this are skipped (each document stays one chunk)
_WORD = re.compile(r"[A-Za-z]{4,}")


@dataclass
class Library:
    adapter: Any
    reader: str  # agent B
    doc_row: dict[str, int] = field(default_factory=dict)  # document id -> corpus row
    collection_of: dict[str, str] = field(default_factory=dict)  # document id -> collection id
    permitted: set[str] = field(default_factory=set)  # collection ids B may read
    permitted_rows: list[int] = field(default_factory=list)
    forbidden_rows: list[int] = field(default_factory=list)
    queries: list[tuple[int, bool]] = field(default_factory=list)  # (held-out row, permitted?)


def suffix(agent: str) -> str:
    return f"\n\nsource: {agent} changelog"


def words(text: str) -> str:
    """The first two words of 4+ letters (a keyword query that is not a whole sentence)."""
    found = []
    for w in _WORD.findall(text):
        if w.lower() not in found:
            found.append(w.lower())
        if len(found) == 2:
            break
    return " ".join(found) or text.split()[0]


@pytest.fixture(scope="module")
def corpus() -> tuple[Corpus, list[str]]:
    """The corpus rows of the 100 largest agents, and those agents, largest first."""
    full = load_corpus()
    sizes = {agent: len(rows) for agent, rows in full.by_agent.items()}
    largest = sorted(sizes, key=lambda a: (-sizes[a], a))[:COLLECTIONS]
    return full, largest


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def corpus_adapter(request: pytest.FixtureRequest) -> Any:
    """The module's adapter of each backend (resolved outside the event loop)."""
    return request.getfixturevalue(f"{request.param}_adapter")


@pytest.fixture(scope="module")
async def library(corpus_adapter: Any, corpus: tuple[Corpus, list[str]]) -> Library:
    """100 collections, one per agent, 8 documents each; B may read every tenth."""
    data, agents = corpus
    tag = secrets.token_hex(3)
    reader = f"reader-{tag}"
    lib = Library(corpus_adapter, reader)
    for n, agent in enumerate(agents):
        owner = corpus_adapter.for_agent(f"{agent}-{tag}"[:64])
        knowledge = store(owner, "knowledge")
        rows = [r for r in data.by_agent[agent] if len(data.texts[r]) <= MAX_TEXT]
        stored, held = rows[:DOCS], rows[DOCS : DOCS + QUERIES]
        collection = await knowledge.create_collection(f"{agent} changelog")
        vectors = data.vectors(stored)
        for row, vector in zip(stored, vectors, strict=True):
            doc = await knowledge.ingest_document(
                collection.id, f"{agent} entry {row}", data.texts[row] + suffix(agent),
                metadata={"row": row}, embeddings=[vector.tolist()],
            )  # fmt: skip
            assert doc.chunk_count == 1
            lib.doc_row[doc.id] = row
            lib.collection_of[doc.id] = collection.id
        permitted = n % PERMITTED_EVERY == 0
        if permitted:
            await knowledge.grant(collection.id, reader, "read")
            lib.permitted.add(collection.id)
            lib.permitted_rows += stored
        else:
            lib.forbidden_rows += stored
        lib.queries += [(row, permitted) for row in held]
    assert len(lib.permitted) == COLLECTIONS // PERMITTED_EVERY
    assert len(lib.permitted_rows) == DOCS * len(lib.permitted)
    return lib


def reader_knowledge(library: Library) -> Any:
    return store(library.adapter.for_agent(library.reader), "knowledge")


def forbidden(library: Library, hits: list[Any]) -> list[str]:
    return [h.document_id for h in hits if h.collection_id not in library.permitted]


async def test_reader_lists_exactly_its_ten_collections(library: Library) -> None:
    """B lists exactly the 10 collections it was granted (permission 'read') out of 100."""
    listed = await reader_knowledge(library).list_collections()
    assert {c.id for c in listed} == library.permitted
    assert {c.permission for c in listed} == {"read"}


async def test_vector_search_returns_k_permitted_hits_with_recall(
    library: Library, corpus: tuple[Corpus, list[str]]
) -> None:
    """For every query — near B's permitted documents or near forbidden ones — B's vector search
    returns exactly k hits, all from permitted collections, with scores equal to the exact
    cosine and recall@10 >= 0.95 against numpy exact search over the permitted chunks."""
    data = corpus[0]
    knowledge = reader_knowledge(library)
    matrix = data.vectors(library.permitted_rows)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    position = {row: i for i, row in enumerate(library.permitted_rows)}
    recalls = {True: [], False: []}
    for row, near_permitted in library.queries:
        query = data.vectors([row])[0]
        hits = await knowledge.search(
            data.texts[row], embedding=query.tolist(), mode="vector", limit=K
        )
        assert len(hits) == K, f"query row {row}: {len(hits)} hits"
        assert forbidden(library, hits) == [], f"query row {row}"
        exact = matrix @ (query / np.linalg.norm(query))
        threshold = np.sort(exact)[-K]
        got = [position[library.doc_row[h.document_id]] for h in hits]
        recalls[near_permitted].append(sum(exact[i] >= threshold - 1e-6 for i in got) / K)
        for hit, i in zip(hits, got, strict=True):
            assert hit.score == pytest.approx(float(exact[i]), abs=1e-4)
    for near_permitted, values in recalls.items():
        recall = float(np.mean(values))
        where = "near permitted" if near_permitted else "near forbidden"
        print(f"recall@{K} {where}: {recall:.3f} over {len(values)} queries")
        assert recall >= RECALL_TARGET, f"{where}: recall@{K} {recall:.3f}"


async def test_hybrid_search_returns_k_permitted_hits(
    library: Library, corpus: tuple[Corpus, list[str]]
) -> None:
    """B's hybrid search (two words of the held-out row plus its embedding) returns exactly k
    hits for every query, all from permitted collections."""
    data = corpus[0]
    knowledge = reader_knowledge(library)
    for row, _ in library.queries:
        hits = await knowledge.search(
            words(data.texts[row]), embedding=data.vector(row), mode="hybrid", limit=K
        )
        assert len(hits) == K, f"query row {row}: {len(hits)} hits"
        assert forbidden(library, hits) == [], f"query row {row}"


async def test_keyword_search_matching_all_documents_returns_the_permitted_ones(
    library: Library,
) -> None:
    """A word that all 800 documents contain returns k permitted hits at limit k, and exactly
    the 80 permitted documents at a larger limit — never one of the 720 others."""
    knowledge = reader_knowledge(library)
    top = await knowledge.search("changelog", mode="keyword", limit=K)
    assert len(top) == K
    assert forbidden(library, top) == []
    everything = await knowledge.search("changelog", mode="keyword", limit=1000)
    assert forbidden(library, everything) == []
    assert sorted(library.doc_row[h.document_id] for h in everything) == sorted(
        library.permitted_rows
    )
    hybrid = await knowledge.search("changelog", limit=K)  # no embedding: keyword only
    assert len(hybrid) == K
    assert forbidden(library, hybrid) == []


async def test_forbidden_documents_never_show_even_for_their_exact_text_or_vector(
    library: Library, corpus: tuple[Corpus, list[str]]
) -> None:
    """Queried with a forbidden document's exact text (as keywords and whole) and exact vector,
    in every mode and at limits 1, 10 and 100, B gets only permitted documents — and still k of
    them for vector and hybrid."""
    data = corpus[0]
    knowledge = reader_knowledge(library)
    for row in library.forbidden_rows[::24]:  # 30 of the 720
        vector = data.vector(row)
        for text in (data.texts[row], words(data.texts[row])):
            for mode in ("keyword", "vector", "hybrid"):
                for limit in (1, 10, 100):
                    hits = await knowledge.search(text, embedding=vector, mode=mode, limit=limit)
                    assert forbidden(library, hits) == [], (row, text, mode, limit)
                    if mode != "keyword":
                        assert len(hits) == min(limit, len(library.permitted_rows))
