"""SQLite knowledge documents: ingest (chunked by ``chunk_text``), read, list, delete.

Reading a document needs read access to its collection; ingesting and deleting need ``write``
(writers manage the documents; only owners manage the collection and its grants). Each chunk is
a row of ``knowledge_chunks`` (its text indexed by FTS5, its optional embedding a float32 BLOB
for the chunk vector cache).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

from ._canonical import canonical_json, check_text, chunk_text, now_utc, parse_json
from ._knowledge_rules import check_embeddings
from ._models import (
    CHUNK_CHARS,
    CHUNK_OVERLAP,
    MAX_NAME_CHARS,
    MAX_TEXT_CHARS,
    KnowledgeDocument,
)
from ._protocol import Vector
from ._rules import check_limit, check_offset, check_ref, new_id
from ._sqlite_codec import parse_ts, ts, vector_blob
from ._sqlite_knowledge_acl import PERMITTED_SQL, AccessOps

DOCUMENT_COLUMNS = "id, collection_id, agent_id, title, content, metadata, chunk_count, created_at"


def document_from_row(row: Sequence[Any]) -> KnowledgeDocument:
    return KnowledgeDocument(
        id=row[0],
        collection_id=row[1],
        agent_id=row[2],
        title=row[3],
        content=row[4],
        metadata=parse_json(row[5]),
        chunk_count=row[6],
        created_at=parse_ts(row[7]),
    )


class DocumentOps(AccessOps):
    async def ingest_document(
        self, collection_id: str, title: str, content: str, *,
        metadata: Mapping[str, Any] | None = None, embeddings: Sequence[Vector] | None = None,
        id: str | None = None,
    ) -> KnowledgeDocument:  # fmt: skip
        """Add a document to a collection (write permission needed). The content is split by
        ``chunk_text``; ``embeddings`` (one per chunk, in order) make the chunks
        vector-searchable.

        Raises: NotFoundError (collection not readable), PermissionDeniedError (no write
        permission), ValidationError (bad field, embedding count), DimensionMismatchError.
        """
        check_ref("collection_id", collection_id)
        document_id = new_id(id)
        check_text("title", title, max_chars=MAX_NAME_CHARS)
        check_text("content", content, max_chars=MAX_TEXT_CHARS)
        meta = canonical_json(metadata)
        chunks = chunk_text(content, size=CHUNK_CHARS, overlap=CHUNK_OVERLAP)
        vectors = check_embeddings(embeddings, len(chunks), self._db.embedding_dim)
        blobs = [None] * len(chunks) if vectors is None else [vector_blob(v) for v in vectors]

        def write(conn: sqlite3.Connection) -> KnowledgeDocument:
            self._require(conn, collection_id, "write")
            row = (
                document_id, collection_id, self._agent, title, content, meta, len(chunks),
                ts(now_utc()),
            )  # fmt: skip
            conn.execute(
                f"INSERT INTO knowledge_documents ({DOCUMENT_COLUMNS})"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
            conn.executemany(
                "INSERT INTO knowledge_chunks (document_id, collection_id, chunk_index, text,"
                " embedding) VALUES (?, ?, ?, ?, ?)",
                [
                    (document_id, collection_id, index, text, blob)
                    for index, (text, blob) in enumerate(zip(chunks, blobs, strict=True))
                ],
            )
            return document_from_row(row)

        return await self._db.write(write)

    async def get_document(self, document_id: str) -> KnowledgeDocument | None:
        """The document, or None when its collection is not readable by this agent.

        Raises: ValidationError (a malformed id).
        """
        check_ref("document_id", document_id)

        def read(conn: sqlite3.Connection) -> KnowledgeDocument | None:
            row = conn.execute(
                f"SELECT {DOCUMENT_COLUMNS} FROM knowledge_documents"
                f" WHERE id = :id AND collection_id IN ({PERMITTED_SQL})",
                {"me": self._agent, "id": document_id},
            ).fetchone()
            return None if row is None else document_from_row(row)

        return await self._db.read(read)

    async def list_documents(
        self, collection_id: str, *, limit: int = 50, offset: int = 0
    ) -> list[KnowledgeDocument]:
        """A readable collection's documents, newest first.

        Raises: NotFoundError (collection not readable), ValidationError.
        """
        check_ref("collection_id", collection_id)
        check_limit(limit)
        check_offset(offset)

        def read(conn: sqlite3.Connection) -> list[KnowledgeDocument]:
            self._require(conn, collection_id, "read")
            rows = conn.execute(
                f"SELECT {DOCUMENT_COLUMNS} FROM knowledge_documents WHERE collection_id = ?"
                " ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?",
                (collection_id, limit, offset),
            )
            return [document_from_row(row) for row in rows]

        return await self._db.read(read)

    async def delete_document(self, document_id: str) -> None:
        """Delete a document and its chunks: ``write`` (or ``owner``) on its collection needed,
        whoever ingested it.

        Raises: NotFoundError (no such readable document), PermissionDeniedError (a reader),
        ValidationError (a malformed id).
        """
        check_ref("document_id", document_id)

        def write(conn: sqlite3.Connection) -> None:
            collection_id = self._document_collection(conn, document_id)
            self._require(conn, collection_id, "write")
            conn.execute("DELETE FROM knowledge_documents WHERE id = ?", (document_id,))

        await self._db.write(write)
