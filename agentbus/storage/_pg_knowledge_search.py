"""Knowledge search on PostgreSQL: keyword, vector and hybrid (RRF) over permitted chunks.

Both branches run in SECURITY DEFINER functions (migration 0005) that compute the collections the
transaction's agent may read first (own, granted, the family/public library; narrowed to
``collection_ids`` when given) and rank only chunks with ``collection_id = ANY (permitted)``: the
grant check is inside the query, so the top k are computed over permitted chunks and never
filtered after ranking, and the planner still uses the GIN and HNSW indexes (under RLS it could
not use GIN: ``@@`` is not leakproof). The statement below joins the returned chunk ids to
``knowledge_chunks`` and ``knowledge_documents`` under RLS, which checks each one again.

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
from ._rules import check_limit, fuse_rrf

# The chunks are read one primary-key lookup per hit (LATERAL … OFFSET 0 keeps the planner from
# making it a join over every permitted chunk, which a cached generic plan may otherwise do; see
# _pg_search). One statement per mode, so that a search runs only the branches it needs.
_CHUNK = """
CROSS JOIN LATERAL (
    SELECT ch.document_id, ch.collection_id, ch.chunk_index, ch.content AS text, kd.title
    FROM knowledge_chunks ch JOIN knowledge_documents kd ON kd.id = ch.document_id
    WHERE ch.id = hit.id OFFSET 0) AS chunk
"""
_KEYWORD_RANKS = """
    SELECT k.id, k.score, row_number() OVER (ORDER BY k.score DESC, k.id) AS rank
    FROM agentbus_search_knowledge_keyword({query}, {limit}, {among}) AS k"""
_VECTOR_RANKS = """
    SELECT v.id, v.distance, row_number() OVER (ORDER BY v.distance, v.id) AS rank
    FROM agentbus_search_knowledge_vector({embedding}, {limit}, {among}, {exact}, {ef}) AS v"""

# keyword: $1 query, $2 limit, $3 collection ids asked for (NULL: every readable one).
_KEYWORD = f"""
SELECT hit.id, hit.rank AS keyword_rank, hit.score AS keyword_score, NULL::bigint AS vector_rank,
       NULL::float8 AS vector_distance, chunk.*
FROM ({_KEYWORD_RANKS.format(query="$1", limit="$2", among="$3")}) AS hit {_CHUNK}
"""
# vector: $1 embedding, $2 limit, $3 collection ids, $4 exact-path bound (NULL: automatic), $5
# hnsw.ef_search of the HNSW path.
_VECTOR = f"""
SELECT hit.id, NULL::bigint AS keyword_rank, NULL::real AS keyword_score,
       hit.rank AS vector_rank, hit.distance AS vector_distance, chunk.*
FROM ({_VECTOR_RANKS.format(embedding="$1", limit="$2", among="$3", exact="$4", ef="$5")})
    AS hit {_CHUNK}
"""
# hybrid: $1 query, $2 embedding, $3 limit, $4 collection ids, $5 bound, $6 ef_search.
_HYBRID = f"""
WITH keyword AS ({_KEYWORD_RANKS.format(query="$1", limit="$3", among="$4")}),
nearest AS ({_VECTOR_RANKS.format(embedding="$2", limit="$3", among="$4", exact="$5", ef="$6")})
SELECT hit.id, keyword.rank AS keyword_rank, keyword.score AS keyword_score,
       nearest.rank AS vector_rank, nearest.distance AS vector_distance, chunk.*
FROM (SELECT id FROM keyword UNION SELECT id FROM nearest) AS hit {_CHUNK}
LEFT JOIN keyword ON keyword.id = hit.id
LEFT JOIN nearest ON nearest.id = hit.id
"""


def _hit(row: Record, score: float, keyword: int | None, vector: int | None) -> KnowledgeHit:
    return KnowledgeHit(
        document_id=row["document_id"], collection_id=row["collection_id"], title=row["title"],
        chunk_index=row["chunk_index"], text=row["text"], score=score,
        keyword_rank=keyword, vector_rank=vector,
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
    core = scope.core
    async with scope.tx("searching knowledge") as conn:
        if mode == "vector":
            rows = await conn.fetch(
                _VECTOR, embedding, limit, among, core.vector_exact_max, core.hnsw_ef_search
            )
        elif mode == "keyword" or embedding is None:  # hybrid without an embedding: keyword
            rows = await conn.fetch(_KEYWORD, query, limit, among)
        else:
            rows = await conn.fetch(
                _HYBRID, query, embedding, limit, among, core.vector_exact_max,
                core.hnsw_ef_search,
            )  # fmt: skip
    keyword = sorted((r for r in rows if r["keyword_rank"]), key=lambda r: r["keyword_rank"])
    nearest = sorted((r for r in rows if r["vector_rank"]), key=lambda r: r["vector_rank"])
    if mode == "keyword":
        return [_hit(r, float(r["keyword_score"]), r["keyword_rank"], None) for r in keyword]
    if mode == "vector":
        return [_hit(r, 1.0 - float(r["vector_distance"]), None, r["vector_rank"]) for r in nearest]
    by_id = {row["id"]: row for row in rows}
    fused = fuse_rrf([r["id"] for r in keyword], [r["id"] for r in nearest], limit=limit)
    return [_hit(by_id[chunk_id], score, kw, vec) for chunk_id, score, kw, vec in fused]
