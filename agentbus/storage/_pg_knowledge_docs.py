"""Knowledge documents on PostgreSQL: ingest (chunked by ``chunk_text``), read, delete, search.

Documents and chunks are read by whoever may read their collection and written by whoever may
write it (migration 0004's policies; the methods check first, so the error is the contract's).
A document is stored whole and as chunks: ``knowledge_chunks`` carries the chunk text, its
``tsvector`` (GIN) and optional embedding (HNSW), and is what search ranks
(``_pg_knowledge_search``).
Ingesting writes every chunk with one ``INSERT … SELECT FROM unnest`` (COPY is refused under RLS).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pgvector import Vector

from ._canonical import canonical_json, check_text, chunk_text, content_hash, now_utc
from ._errors import NotFoundError, PermissionDeniedError, ValidationError
from ._knowledge_rules import RANK, check_embeddings
from ._models import (
    MAX_NAME_CHARS,
    MAX_TEXT_CHARS,
    KnowledgeDocument,
    KnowledgeHit,
    Permission,
    SearchMode,
)
from ._pg_checks import affected, ref_id, vector
from ._pg_core import Conn, Scope
from ._pg_knowledge_search import search_chunks
from ._pg_rows import DOCUMENT_COLUMNS, document as document_row
from ._rules import check_limit, check_offset, new_id

_INSERT_CHUNKS = """
INSERT INTO knowledge_chunks (id, document_id, collection_id, agent_id, chunk_index, content,
                              embedding, created_at)
SELECT $1 || ':' || u.n, $1, $2, $3, u.n - 1, u.content, u.embedding, $4
FROM unnest($5::text[], $6::vector[]) WITH ORDINALITY AS u(content, embedding, n)
"""


async def require(
    conn: Conn, agent: str, collection_id: str, needed: Permission, action: str
) -> tuple[str, str]:
    """This agent's permission on a collection (library: ``read``) and the collection's creator.

    Raises: NotFoundError (not readable), PermissionDeniedError (readable, below ``needed``).
    """
    row = await conn.fetchrow(
        "SELECT agentbus_can_read_collection($1) AS readable,"
        " agentbus_collection_permission($1) AS permission,"
        " (SELECT kc.agent_id FROM knowledge_collections kc WHERE kc.id = $1) AS owner",
        collection_id,
    )
    if row is None or not row["readable"] or row["owner"] is None:
        raise NotFoundError(f"collection {collection_id} not found")
    held: Permission = row["permission"] or "read"
    if RANK[held] < RANK[needed]:
        raise PermissionDeniedError(
            f"agent {agent!r} may {held} collection {collection_id}; {action} needs {needed} "
            "permission, which only an owner of the collection can grant"
        )
    return held, row["owner"]


class KnowledgeDocuments:
    """The document half of :class:`~agentbus.storage._pg_knowledge.PgKnowledge`."""

    _scope: Scope
    _agent: str
    _dim: int

    async def ingest_document(
        self, collection_id: str, title: str, content: str, *,
        metadata: Mapping[str, Any] | None = None,
        embeddings: Sequence[Sequence[float]] | None = None, id: str | None = None,
    ) -> KnowledgeDocument:  # fmt: skip
        """Store a document and its chunks (``chunk_text``); write permission needed.

        ``embeddings``: one per chunk, in order (call ``chunk_text(content)`` to get them).

        Raises: NotFoundError, PermissionDeniedError, ValidationError (also: the number of
        embeddings differs from the number of chunks), DimensionMismatchError.
        """
        collection_id = ref_id(collection_id, "collection_id")
        title = check_text("title", title, max_chars=MAX_NAME_CHARS)
        content = check_text("content", content, max_chars=MAX_TEXT_CHARS)
        chunks = chunk_text(content)
        vectors = self._vectors(embeddings, len(chunks))
        document_id = new_id(id)
        meta, now = canonical_json(metadata), now_utc()
        async with self._scope.tx("ingesting a document") as conn:
            await require(conn, self._agent, collection_id, "write", "ingesting a document")
            row = await conn.fetchrow(
                "INSERT INTO knowledge_documents AS kd (id, collection_id, agent_id, title,"
                " content, content_hash, chunk_count, metadata, created_at, updated_at)"
                f" VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) RETURNING {DOCUMENT_COLUMNS}",
                document_id, collection_id, self._agent, title, content, content_hash(content),
                len(chunks), meta, now,
            )  # fmt: skip
            await conn.execute(
                _INSERT_CHUNKS, document_id, collection_id, self._agent, now, chunks, vectors
            )
        assert row is not None
        return document_row(row)

    def _vectors(
        self, embeddings: Sequence[Sequence[float]] | None, chunks: int
    ) -> list[Vector | None]:
        checked = check_embeddings(embeddings, chunks, self._dim)
        if checked is None:
            return [None] * chunks
        return [Vector(value) for value in checked]

    async def get_document(self, document_id: str) -> KnowledgeDocument | None:
        """None when it does not exist or its collection is not readable by this agent."""
        async with self._scope.tx("reading a document") as conn:
            row = await conn.fetchrow(
                f"SELECT {DOCUMENT_COLUMNS} FROM knowledge_documents kd WHERE kd.id = $1",
                ref_id(document_id, "document_id"),
            )
        return None if row is None else document_row(row)

    async def list_documents(
        self, collection_id: str, *, limit: int = 50, offset: int = 0
    ) -> list[KnowledgeDocument]:
        """Newest first.

        Raises: NotFoundError (the collection is not readable by this agent).
        """
        collection_id = ref_id(collection_id, "collection_id")
        limit, skip = check_limit(limit), check_offset(offset)
        async with self._scope.tx("listing documents") as conn:
            await require(conn, self._agent, collection_id, "read", "listing documents")
            rows = await conn.fetch(
                f"SELECT {DOCUMENT_COLUMNS} FROM knowledge_documents kd"
                " WHERE kd.collection_id = $1 ORDER BY kd.created_at DESC, kd.id DESC"
                " LIMIT $2 OFFSET $3",
                collection_id, limit, skip,
            )  # fmt: skip
        return [document_row(row) for row in rows]

    async def delete_document(self, document_id: str) -> None:
        """Delete a document and its chunks; write permission on its collection needed.

        Raises: NotFoundError, PermissionDeniedError.
        """
        document_id = ref_id(document_id, "document_id")
        async with self._scope.tx("deleting a document") as conn:
            collection_id = await conn.fetchval(
                "SELECT kd.collection_id FROM knowledge_documents kd WHERE kd.id = $1",
                document_id,
            )
            if collection_id is None:
                raise NotFoundError(f"document {document_id} not found")
            await require(conn, self._agent, collection_id, "write", "deleting a document")
            status = await conn.execute(
                "DELETE FROM knowledge_documents kd WHERE kd.id = $1", document_id
            )
        if affected(status) == 0:
            raise NotFoundError(f"document {document_id} not found")

    async def search(
        self, query: str, *, embedding: Sequence[float] | None = None, limit: int = 10,
        mode: SearchMode = "hybrid", collection_ids: Sequence[str] | None = None,
    ) -> list[KnowledgeHit]:  # fmt: skip
        """Keyword, vector or hybrid (RRF) search over the chunks of every collection this agent
        may read (or the readable ones among ``collection_ids``); see ``_pg_knowledge_search``.

        Raises: ValidationError, DimensionMismatchError.
        """
        if collection_ids is None:
            among = None
        elif isinstance(collection_ids, str):
            raise ValidationError("collection_ids must be a sequence of ids, not one string")
        else:
            among = [ref_id(value, "collection_ids") for value in collection_ids]
        checked = None if embedding is None else vector(embedding, self._dim)
        return await search_chunks(
            self._scope, query, embedding=checked, limit=limit, mode=mode, collection_ids=among
        )
