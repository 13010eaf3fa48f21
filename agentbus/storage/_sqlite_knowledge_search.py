"""Knowledge search on SQLite: keyword, vector and RRF hybrid over the chunks of every
collection the agent may read, with the grant check inside each branch.

- keyword: FTS5 over chunk texts, the keyword rule of memory search (every word must match,
  ``porter`` stemming; see ``_sqlite_search``), filtered by the permitted collection ids in the
  same statement that ranks by bm25 and applies ``LIMIT``;
- vector: only the permitted collections' vectors are scored (``_sqlite_chunk_vectors``: exact,
  so ``k`` hits whenever ``k`` permitted chunks are embedded);
- hybrid: Reciprocal Rank Fusion (``fuse_rrf``) of both lists; without an embedding, keyword
  only. Ties break by the chunk's ``document_id:chunk_index``.

Neither branch ranks a chunk it then has to drop, so the top ``k`` are the top ``k`` permitted
chunks. With an embedding, the permitted ids are read once — by the chunk vector cache, right
after it caught up with every commit, and kept until the next commit anywhere — and both
branches use them. The hits' text and title come from that cache (a chunk without an embedding
is read by key in the keyword branch's transaction). A vector search the fresh cache can answer
(``Database.probe`` unchanged since its last refresh, the agent's permitted ids known) is
answered on the event loop with no SQL at all; any commit since — a revoke by this adapter,
another process or raw SQL — sends it through the worker thread, which reads the grants again.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from ._errors import ValidationError
from ._models import KnowledgeHit, SearchMode
from ._protocol import Vector
from ._rules import check_ref, fuse_rrf
from ._sqlite_chunk_vectors import ChunkRow, Ranked, chunk_ref, within
from ._sqlite_knowledge_acl import PERMITTED_SQL, AccessOps
from ._sqlite_search import branch_size, search_branches
from ._sqlite_vectors import Matrix

_LISTED = 500  # more permitted ids than this are passed as one JSON array


def check_collection_ids(collection_ids: Sequence[str] | None) -> list[str] | None:
    if collection_ids is None:
        return None
    if isinstance(collection_ids, str):
        raise ValidationError("collection_ids must be a list of collection ids, not one string")
    return list(dict.fromkeys(check_ref("collection_ids", value) for value in collection_ids))


def in_ids(column: str, ids: Sequence[str]) -> tuple[str, list[Any]]:
    """``column IN (ids)`` as SQL and its parameters (positional)."""
    if len(ids) > _LISTED:  # within SQLite's parameter limit whatever the count
        return f"{column} IN (SELECT value FROM json_each(?))", [json.dumps(list(ids))]
    return f"{column} IN ({', '.join('?' * len(ids))})", list(ids)


def hit(
    row: ChunkRow, score: float, keyword_rank: int | None, vector_rank: int | None
) -> KnowledgeHit:
    return KnowledgeHit(
        document_id=row.document_id, collection_id=row.collection_id, title=row.title,
        chunk_index=row.chunk_index, text=row.text, score=score, keyword_rank=keyword_rank,
        vector_rank=vector_rank,
    )  # fmt: skip


class KnowledgeSearchOps(AccessOps):
    async def search(
        self, query: str, *, embedding: Vector | None = None, limit: int = 10,
        mode: SearchMode = "hybrid", collection_ids: Sequence[str] | None = None,
    ) -> list[KnowledgeHit]:  # fmt: skip
        """Search the chunks of every readable collection (or of the readable ones among
        ``collection_ids``; the others are ignored, as if they did not exist).

        Raises: ValidationError (mode ``vector`` without an embedding, bad arguments),
        DimensionMismatchError.
        """
        keyword, vector = search_branches(query, embedding, limit, mode, self._db.embedding_dim)
        only = check_collection_ids(collection_ids)
        if only == []:
            return []
        if vector is None:
            words = keyword
            return await self._db.read(lambda conn: self._keyword_search(conn, words, limit, only))
        probe = self._db.probe()
        if mode == "vector" and probe is not None:
            found = self._db.chunk_vectors.search_now(
                self._agent, vector, limit, probe=probe, only=only
            )
            if found is not None:  # answered from the fresh cache, without the worker thread
                return [hit(row, score, None, rank) for rank, (row, score) in enumerate(found, 1)]

        def run(conn: sqlite3.Connection) -> list[KnowledgeHit]:
            return self._search_sync(conn, keyword, vector, limit, mode, only, probe)

        return await self._db.read(run)

    def _search_sync(
        self, conn: sqlite3.Connection, keyword: str | None, vector: Matrix, limit: int,
        mode: SearchMode, only: list[str] | None, probe: int | None,
    ) -> list[KnowledgeHit]:  # fmt: skip
        """Vector or hybrid search in a read transaction (``conn``): the cache's vector branch
        first, which yields the permitted ids the keyword branch then uses."""
        size = limit if mode == "vector" else branch_size(limit)
        cache = self._db.chunk_vectors
        vec, scope = cache.search(
            self._agent, vector, size, permitted=self._permitted_ids, only=only, probe=probe
        )
        if not scope:
            return []
        kw: Ranked = []
        if keyword is not None:
            kw = self._keyword(conn, keyword, size, *in_ids("c.collection_id", scope))
        keys = {ref: key for ref, key, _ in (*kw, *vec)}
        ranked: list[tuple[str, float, int | None, int | None]]
        if mode == "vector":
            ranked = [(ref, s, None, r) for r, (ref, _, s) in enumerate(vec, 1)]
        else:
            ranked = fuse_rrf([r for r, _, _ in kw], [r for r, _, _ in vec], limit=limit)
        wanted = [keys[ref] for ref, *_ in ranked]
        rows = cache.rows(wanted)
        if len(rows) < len(wanted):  # keyword hits without an embedding, or changed since
            rows.update(self._load(conn, [key for key in wanted if key not in rows]))
        return [
            hit(rows[keys[ref]], s, kr, vr)
            for ref, s, kr, vr in ranked
            if keys[ref] in rows  # deleted between the branch and the load
        ]

    def _keyword_search(
        self, conn: sqlite3.Connection, keyword: str | None, limit: int, only: list[str] | None
    ) -> list[KnowledgeHit]:
        """Keyword search (no embedding): the permitted ids read in this transaction."""
        if keyword is None:  # no words
            return []
        scope = within(tuple(sorted(set(self._permitted_ids(conn)))), only)
        if not scope:
            return []
        kw = self._keyword(conn, keyword, limit, *in_ids("c.collection_id", scope))
        rows = self._load(conn, [key for _, key, _ in kw])
        return [hit(rows[key], s, r, None) for r, (_, key, s) in enumerate(kw, 1) if key in rows]

    def _permitted_ids(self, conn: sqlite3.Connection) -> list[str]:
        return [row[0] for row in conn.execute(PERMITTED_SQL, {"me": self._agent})]

    def _keyword(
        self, conn: sqlite3.Connection, match: str, size: int, scope: str, params: list[Any]
    ) -> Ranked:
        rows = conn.execute(
            "SELECT c.document_id, c.chunk_index, c.chunk_key, bm25(knowledge_chunks_fts) AS rank"
            " FROM knowledge_chunks_fts"
            " JOIN knowledge_chunks c ON c.chunk_key = knowledge_chunks_fts.rowid"
            f" WHERE knowledge_chunks_fts MATCH ? AND {scope}"
            " ORDER BY rank, c.document_id, c.chunk_index LIMIT ?",
            [match, *params, size],
        ).fetchall()
        return [(chunk_ref(doc, index), key, -float(rank)) for doc, index, key, rank in rows]

    def _load(self, conn: sqlite3.Connection, keys: list[int]) -> dict[int, ChunkRow]:
        """The rows of chunks ranked in this transaction (by permitted branches), by key."""
        if not keys:
            return {}
        rows = conn.execute(
            "SELECT c.chunk_key, c.document_id, c.collection_id, d.title, c.chunk_index, c.text"
            " FROM knowledge_chunks c JOIN knowledge_documents d ON d.id = c.document_id"
            f" WHERE c.chunk_key IN ({', '.join('?' * len(keys))})",
            keys,
        ).fetchall()
        return {row[0]: ChunkRow(*row[1:]) for row in rows}
