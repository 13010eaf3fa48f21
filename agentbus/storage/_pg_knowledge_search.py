"""Knowledge search on PostgreSQL: keyword, vector and hybrid (RRF) over permitted chunks.

``agentbus_search_knowledge`` (migration 0010) is a SECURITY DEFINER function that computes the
collections the transaction's agent may read once (own, granted, the family/public library;
narrowed to ``collection_ids`` when given) and ranks only chunks with ``collection_id = ANY
(permitted)``: the grant check is inside the query, so the top k are computed over permitted
chunks and never filtered after ranking, and the planner still uses the GIN and HNSW indexes
(under RLS it could not use GIN: ``@@`` is not leakproof). It runs both branches and their fusion
and returns the best ``limit`` chunks with their text and document title, read by primary key
among the permitted collections — no second read of the hits under RLS, whose policies would
compute the readable collections again. The search is one statement outside a transaction, which
sets the agent id itself (``set_config`` as the function's first argument): one round trip
instead of BEGIN, ``set_config``, the search and COMMIT (0010 has the measurements).

- keyword: ``plainto_tsquery('english', query)``, every term must match; ``ts_rank``, ties by id.
- vector: cosine distance, score = 1 - distance; ``limit`` rows whenever that many permitted
  chunks have embeddings (exact scan for few, iterative HNSW for many, exact fallback).
- hybrid: Reciprocal Rank Fusion (k = 60) of both branches, each cut at ``limit``, ties by id;
  without an embedding, keyword only.
"""

from __future__ import annotations

from collections.abc import Sequence

from asyncpg import Record
from pgvector import Vector

from ._canonical import check_choice, check_text
from ._errors import ValidationError
from ._models import MAX_TEXT_CHARS, SEARCH_MODES, KnowledgeHit, SearchMode
from ._pg_core import Scope
from ._pg_rows import search_score
from ._rules import check_limit, effective_mode

# $1 agent, $2 query (NULL: no keyword branch), $3 embedding (NULL: no vector branch), $4 limit,
# $5 the collection ids asked for (NULL: every readable one), $6 exact-path bound (NULL:
# automatic), $7 hnsw.ef_search of the HNSW path. One statement on its own: the set_config in the
# function's first argument sets the agent id for this statement's transaction before the
# function runs. The rows come in the function's order (fused, or the one list).
_SEARCH = """
SELECT hit.document_id, hit.collection_id, hit.chunk_index, hit.content AS text, hit.title,
       hit.keyword_rank, hit.keyword_score, hit.vector_rank, hit.distance AS vector_distance
FROM agentbus_search_knowledge(set_config('app.agent_id', $1, true), $2, $3, $4, $5, $6, $7)
    WITH ORDINALITY AS hit
ORDER BY hit.ordinality
"""


def _hit(row: Record, score: float) -> KnowledgeHit:
    return KnowledgeHit(
        document_id=row["document_id"], collection_id=row["collection_id"], title=row["title"],
        chunk_index=row["chunk_index"], text=row["text"], score=score,
        keyword_rank=row["keyword_rank"], vector_rank=row["vector_rank"],
    )  # fmt: skip


async def search_chunks(
    scope: Scope, query: str, *, embedding: Vector | None, limit: int, mode: SearchMode,
    collection_ids: Sequence[str] | None,
) -> list[KnowledgeHit]:  # fmt: skip
    """See :meth:`KnowledgeStore.search`.

    Raises: ValidationError (unknown mode, ``mode="vector"`` without an embedding).
    """
    mode = check_choice("mode", mode, SEARCH_MODES)
    query = check_text("query", query, max_chars=MAX_TEXT_CHARS, allow_empty=True)
    limit = check_limit(limit)
    if mode == "vector" and embedding is None:
        raise ValidationError('mode="vector" needs an embedding')
    among = None if collection_ids is None else list(collection_ids)
    keyword_query = None if mode == "vector" else query
    vector_query = None if mode == "keyword" else embedding
    core = scope.core
    async with core.connection("searching knowledge") as conn:
        rows = await conn.fetch(
            _SEARCH, scope.agent, keyword_query, vector_query, limit, among,
            core.vector_exact_max, core.hnsw_ef_search,
        )  # fmt: skip
    scored_as = effective_mode(mode, has_vector=vector_query is not None)
    return [_hit(row, search_score(row, scored_as)) for row in rows]
