"""Memory search on PostgreSQL: keyword, vector and hybrid (RRF) in one statement.

``agentbus_search_items`` (migration 0008) is a SECURITY DEFINER function that applies the
agent id itself, because under row-level security the planner will not use the GIN index for
``@@`` (not leakproof). It runs both branches and their fusion and picks the best ``limit`` ids
with their rank and score in each branch; ``agentbus_search_item_rows`` (migration 0011) returns
those rows, read by primary key and checked by the policies' visibility rule once more. The
search is one statement outside a transaction, which sets the agent id itself (``set_config`` as
the function's first argument): one round trip instead of BEGIN, ``set_config``, the search and
COMMIT, and no second read of the hits under RLS.

- keyword: ``plainto_tsquery('english', query)`` — every term must match after English stemming
  and stop-word removal (a query of stop words only matches nothing); ranked by ``ts_rank``,
  ties by id. SQLite's FTS5 ``porter`` keeps stop words: result sets agree where both stem alike.
- vector: cosine distance, score = 1 - distance; ``limit`` rows whenever that many are visible
  (exact scan for small visible sets, iterative HNSW for large ones, exact fallback). The HNSW
  scan's ``hnsw.ef_search`` follows the estimated share of the index the agent may see: 40 when
  it sees most rows, more (up to ``PgAdapter(hnsw_ef_search=)``) when it sees fewer, where a
  filtered HNSW scan needs more candidates (migration 0008 has the measurements).
- hybrid: Reciprocal Rank Fusion (k = 60) of the two branches, each cut at ``limit`` with the
  filters applied inside it, ties by id; without an embedding, keyword only.
"""

from __future__ import annotations

from pgvector import Vector

from ._canonical import check_choice, check_text
from ._errors import ValidationError
from ._models import (
    MAX_TEXT_CHARS,
    MEMORY_TYPES,
    SEARCH_MODES,
    VISIBILITIES,
    SearchHit,
    SearchMode,
)
from ._pg_core import Scope
from ._pg_rows import ITEM_COLUMNS, item as item_row, search_score
from ._rules import check_limit, effective_mode

# $1 agent, $2 query (NULL: no keyword branch), $3 embedding (NULL: no vector branch), $4 limit,
# $5 memory_type, $6 visibility, $7 own_only, $8 exact-path bound (NULL: automatic), $9 the
# highest hnsw.ef_search of the HNSW path. One statement on its own: the set_config in the
# function's first argument sets the agent id for this statement's transaction before the
# function runs. The rows come in the function's order (fused, or the one list); the item's
# columns are taken from the whole row the function returns.
_SEARCH = f"""
SELECT {ITEM_COLUMNS}, hit.keyword_rank, hit.keyword_score, hit.vector_rank,
       hit.distance AS vector_distance
FROM agentbus_search_item_rows(set_config('app.agent_id', $1, true), $2, $3, $4, $5, $6, $7,
                               $8, $9) WITH ORDINALITY AS hit
CROSS JOIN LATERAL (SELECT (hit.item).*) AS m
ORDER BY hit.ordinality
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
    core = scope.core
    async with core.connection("searching items") as conn:
        rows = await conn.fetch(
            _SEARCH, scope.agent, keyword_query, vector_query, limit, kind, vis, bool(own_only),
            core.vector_exact_max, core.hnsw_ef_search,
        )  # fmt: skip
    scored_as = effective_mode(mode, has_vector=vector_query is not None)
    hits = []
    for row in rows:
        kw, vec = row["keyword_rank"], row["vector_rank"]
        score = search_score(row, scored_as)
        hits.append(SearchHit(item=item_row(row), score=score, keyword_rank=kw, vector_rank=vec))
    return hits
