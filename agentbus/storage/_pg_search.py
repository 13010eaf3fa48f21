"""Memory search on PostgreSQL: keyword, vector and hybrid (RRF) in one statement.

Both branches run in SECURITY DEFINER functions (migration 0003) that apply the transaction's
agent id themselves, because under row-level security the planner will not use the GIN index
for ``@@`` (not leakproof). The functions return ids and scores; the statement below joins them
to ``memory_items`` under RLS, so every id is checked against the policies once more.

- keyword: ``plainto_tsquery('english', query)`` — every term must match after English stemming
  and stop-word removal (a query of stop words only matches nothing); ranked by ``ts_rank``,
  ties by id. SQLite's FTS5 ``porter`` keeps stop words: result sets agree where both stem alike.
- vector: cosine distance, score = 1 - distance; ``limit`` rows whenever that many are visible
  (exact scan for small visible sets, iterative HNSW for large ones, exact fallback).
- hybrid: Reciprocal Rank Fusion (k = 60) of the two branches, each cut at ``limit`` with the
  filters applied inside it, ties by id; without an embedding, keyword only.
"""

from __future__ import annotations

from pgvector import Vector

from ._canonical import check_choice, check_text
from ._errors import ValidationError
from ._models import MAX_TEXT_CHARS, MEMORY_TYPES, VISIBILITIES, SearchHit, SearchMode
from ._pg_core import Scope
from ._pg_rows import ITEM_COLUMNS, item as item_row
from ._rules import check_limit, fuse_rrf

SEARCH_MODES: tuple[SearchMode, ...] = ("hybrid", "keyword", "vector")

# $1 query (NULL: no keyword branch), $2 embedding (NULL: no vector branch), $3 limit,
# $4 memory_type, $5 visibility, $6 own_only, $7 exact-path bound (NULL: automatic),
# $8 hnsw.ef_search of the HNSW path.
# The rows are read one primary-key lookup per id (LATERAL … OFFSET 0 keeps the planner from
# turning it into a join): asyncpg caches this statement, and a generic plan made while a
# small agent searched once scanned and hashed every visible row of the agent instead — 210 ms
# instead of 5 for an agent with 49,539 rows (bench/storage_search.py).
_SEARCH = f"""
WITH keyword AS (
    SELECT k.id, k.score, row_number() OVER (ORDER BY k.score DESC, k.id) AS rank
    FROM agentbus_search_items_keyword($1, $3, $4, $5, $6) AS k
), nearest AS (
    SELECT v.id, v.distance, row_number() OVER (ORDER BY v.distance, v.id) AS rank
    FROM agentbus_search_items_vector($2, $3, $4, $5, $6, $7, $8) AS v
)
SELECT item.*, keyword.rank AS keyword_rank, keyword.score AS keyword_score,
       nearest.rank AS vector_rank, nearest.distance AS vector_distance
FROM (SELECT id FROM keyword UNION SELECT id FROM nearest) AS hit
CROSS JOIN LATERAL (
    SELECT {ITEM_COLUMNS} FROM memory_items m WHERE m.id = hit.id OFFSET 0) AS item
LEFT JOIN keyword ON keyword.id = hit.id
LEFT JOIN nearest ON nearest.id = hit.id
"""


async def search_items(
    scope: Scope, query: str, *, embedding: Vector | None, limit: int, mode: SearchMode,
    memory_type: str | None, visibility: str | None, own_only: bool,
) -> list[SearchHit]:  # fmt: skip
    """See :meth:`MemoryStore.search_items`.

    Raises: ValidationError (unknown mode/filter, ``mode="vector"`` without an embedding).
    """
    mode = check_choice("mode", mode, SEARCH_MODES)
    query = check_text("query", query, max_chars=MAX_TEXT_CHARS, allow_empty=True)
    limit = check_limit(limit)
    kind = None if memory_type is None else check_choice("memory_type", memory_type, MEMORY_TYPES)
    vis = None if visibility is None else check_choice("visibility", visibility, VISIBILITIES)
    if mode == "vector" and embedding is None:
        raise ValidationError('mode="vector" needs an embedding')
    keyword_query = None if mode == "vector" else query
    vector_query = None if mode == "keyword" else embedding
    async with scope.tx("searching items") as conn:
        rows = await conn.fetch(
            _SEARCH, keyword_query, vector_query, limit, kind, vis, bool(own_only),
            scope.core.vector_exact_max, scope.core.hnsw_ef_search,
        )  # fmt: skip
    by_id = {row["id"]: row for row in rows}
    if mode == "keyword":
        ranked = sorted((r for r in rows if r["keyword_rank"]), key=lambda r: r["keyword_rank"])
        return [
            SearchHit(item=item_row(r), score=float(r["keyword_score"]),
                      keyword_rank=r["keyword_rank"], vector_rank=None)
            for r in ranked
        ]  # fmt: skip
    if mode == "vector":
        ranked = sorted((r for r in rows if r["vector_rank"]), key=lambda r: r["vector_rank"])
        return [
            SearchHit(item=item_row(r), score=1.0 - float(r["vector_distance"]),
                      keyword_rank=None, vector_rank=r["vector_rank"])
            for r in ranked
        ]  # fmt: skip
    keyword_ids = [r["id"] for r in sorted(
        (r for r in rows if r["keyword_rank"]), key=lambda r: r["keyword_rank"])]  # fmt: skip
    vector_ids = [r["id"] for r in sorted(
        (r for r in rows if r["vector_rank"]), key=lambda r: r["vector_rank"])]  # fmt: skip
    return [
        SearchHit(item=item_row(by_id[item_id]), score=score,
                  keyword_rank=kw, vector_rank=vec)
        for item_id, score, kw, vec in fuse_rrf(keyword_ids, vector_ids, limit=limit)
    ]  # fmt: skip
