"""Knowledge search on SQLite: keyword, vector and RRF hybrid over the chunks of every
collection the agent may read, with the grant check inside each branch.

- keyword: FTS5 over chunk texts, the keyword rule of memory search (every word must match,
  ``porter`` stemming; see ``_sqlite_search``), filtered by ``collection_id IN (<permitted>)``
  in the same statement that ranks by bm25 and applies ``LIMIT``;
- vector: the permitted collection ids are read in the same read transaction, and only their
  vectors are scored (``_sqlite_chunk_vectors``: exact, so ``k`` hits whenever ``k`` permitted
  chunks are embedded);
- hybrid: Reciprocal Rank Fusion (``fuse_rrf``) of both lists; without an embedding, keyword
  only. Ties break by the chunk's ``document_id:chunk_index``.

Neither branch ranks a chunk it then has to drop, so the top ``k`` are the top ``k`` permitted
chunks. The hits are read back with the same permission filter (a grant revoked, or a document
deleted, between the branches and that read only removes hits).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from ._errors import ValidationError
from ._models import KnowledgeHit, SearchMode
from ._protocol import Vector
from ._rules import check_ref, fuse_rrf
from ._sqlite_chunk_vectors import chunk_ref
from ._sqlite_knowledge_acl import PERMITTED_SQL, AccessOps
from ._sqlite_search import branch_size, search_branches

Ranked = list[tuple[str, int, float]]  # (chunk ref, chunk key, score), best first


def check_collection_ids(collection_ids: Sequence[str] | None) -> list[str] | None:
    if collection_ids is None:
        return None
    if isinstance(collection_ids, str):
        raise ValidationError("collection_ids must be a list of collection ids, not one string")
    return list(dict.fromkeys(check_ref("collection_ids", value) for value in collection_ids))


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
        # The grant check, as a predicate on a collection id column (``{0}``); named parameters.
        scope = "{0} IN (" + PERMITTED_SQL + ")"
        params: dict[str, Any] = {"me": self._agent}
        if only is not None:
            names = [f":c{i}" for i in range(len(only))]
            scope += f" AND {{0}} IN ({', '.join(names)})"
            params.update(zip((name[1:] for name in names), only, strict=True))
        chunk_scope = scope.format("c.collection_id")

        def run(conn: sqlite3.Connection) -> list[KnowledgeHit]:
            size = limit if mode != "hybrid" else branch_size(limit)
            kw = self._keyword(conn, keyword, size, chunk_scope, params)
            vec: Ranked = []
            if vector is not None:
                permitted = [
                    row[0]
                    for row in conn.execute(
                        f"SELECT k.id FROM knowledge_collections k WHERE {scope.format('k.id')}",
                        params,
                    )
                ]
                vec = self._db.chunk_vectors.search(vector, size, permitted)
            keys = {ref: key for ref, key, _ in (*kw, *vec)}
            ranked: list[tuple[str, float, int | None, int | None]]
            if mode == "keyword":
                ranked = [(ref, s, r, None) for r, (ref, _, s) in enumerate(kw, 1)]
            elif mode == "vector":
                ranked = [(ref, s, None, r) for r, (ref, _, s) in enumerate(vec, 1)]
            else:
                ranked = fuse_rrf([r for r, _, _ in kw], [r for r, _, _ in vec], limit=limit)
            chunks = self._load(conn, [keys[ref] for ref, *_ in ranked], chunk_scope, params)
            return [
                KnowledgeHit(**chunks[keys[ref]], score=s, keyword_rank=kr, vector_rank=vr)
                for ref, s, kr, vr in ranked
                if keys[ref] in chunks  # deleted or revoked between the branch and the load
            ]

        return await self._db.read(run)

    def _keyword(
        self, conn: sqlite3.Connection, match: str | None, size: int, scope: str,
        params: dict[str, Any],
    ) -> Ranked:  # fmt: skip
        if match is None:
            return []
        rows = conn.execute(
            "SELECT c.document_id, c.chunk_index, c.chunk_key, bm25(knowledge_chunks_fts) AS rank"
            " FROM knowledge_chunks_fts"
            " JOIN knowledge_chunks c ON c.chunk_key = knowledge_chunks_fts.rowid"
            f" WHERE knowledge_chunks_fts MATCH :match AND {scope}"
            " ORDER BY rank, c.document_id, c.chunk_index LIMIT :size",
            {**params, "match": match, "size": size},
        ).fetchall()
        return [(chunk_ref(doc, index), key, -float(rank)) for doc, index, key, rank in rows]

    def _load(
        self, conn: sqlite3.Connection, keys: list[int], scope: str, params: dict[str, Any]
    ) -> dict[int, dict[str, Any]]:
        if not keys:
            return {}
        key_names = {f"k{i}": key for i, key in enumerate(keys)}
        rows = conn.execute(
            "SELECT c.chunk_key, c.document_id, c.collection_id, d.title, c.chunk_index, c.text"
            " FROM knowledge_chunks c JOIN knowledge_documents d ON d.id = c.document_id"
            f" WHERE c.chunk_key IN ({', '.join(':' + name for name in key_names)}) AND {scope}",
            {**params, **key_names},
        ).fetchall()
        names = ("document_id", "collection_id", "title", "chunk_index", "text")
        return {row[0]: dict(zip(names, row[1:], strict=True)) for row in rows}
