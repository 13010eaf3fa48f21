"""Memory search on SQLite: FTS5 keyword search, exact vector search, and their RRF fusion.

Keyword rule (the same on every backend): every query term must match. The query is split into
words (runs of letters and digits, as FTS5's ``unicode61`` tokenizer splits text); each word is
quoted as an FTS5 string, so user text is never FTS5 syntax (``NEAR``, ``*``, ``-``, ``"``…),
and the strings are joined with ``AND``. The ``porter`` tokenizer stems both sides (so
"running" matches "runs"); FTS5 keeps stop words, so "the" must occur too (PostgreSQL's
``english`` configuration drops it). A query with no words finds nothing — not an error.
Keyword scores are ``-bm25`` (higher is better).
"""

from __future__ import annotations

import re
import sqlite3
from typing import Any

import msgspec
import numpy as np

from ._canonical import check_choice, check_text, check_vector
from ._errors import ValidationError
from ._models import (
    MAX_TEXT_CHARS,
    MEMORY_TYPES,
    SEARCH_MODES,
    VISIBILITIES,
    MemoryItem,
    MemoryType,
    SearchHit,
    SearchMode,
    Visibility,
)
from ._protocol import Vector
from ._rules import check_limit, effective_mode, fuse_rrf
from ._sqlite_codec import ITEM_COLUMNS, item_from_row, placeholders, visible_sql
from ._sqlite_db import Scoped
from ._sqlite_vectors import Matrix

_WORD = re.compile(r"[^\W_]+")


def fts_query(text: str) -> str | None:
    """The FTS5 query for the keyword rule: each word quoted, all ANDed (None: no words)."""
    words = _WORD.findall(text)
    if not words:
        return None
    return " AND ".join(f'"{word}"' for word in words)


def search_branches(
    query: str, embedding: Vector | None, limit: int, mode: SearchMode, dim: int
) -> tuple[str | None, Matrix | None]:
    """The checked arguments of a memory or knowledge search, as what each branch runs with:
    the FTS5 query (None: no keyword branch, or no words) and the query vector (None: no vector
    branch). Without an embedding, hybrid is keyword only.

    Raises: ValidationError (bad query, limit or mode; ``mode="vector"`` without an
    embedding), DimensionMismatchError.
    """
    check_text("query", query, max_chars=MAX_TEXT_CHARS, allow_empty=True)
    check_limit(limit)
    check_choice("mode", mode, SEARCH_MODES)
    vector = None if embedding is None else check_vector(embedding, dim)
    if mode == "vector" and vector is None:
        raise ValidationError('mode="vector" needs an embedding')
    keyword = None if mode == "vector" else fts_query(query)
    return keyword, (None if mode == "keyword" else vector)


def branch_size(limit: int) -> int:
    """Candidates each branch contributes to the fusion."""
    return max(limit * 4, 40)


class SearchOps(Scoped):
    async def search_items(
        self, query: str, *, embedding: Vector | None = None, limit: int = 10,
        mode: SearchMode = "hybrid", memory_type: MemoryType | None = None,
        visibility: Visibility | None = None, own_only: bool = False,
    ) -> list[SearchHit]:  # fmt: skip
        """Search visible items: ``keyword``, ``vector`` or ``hybrid`` (RRF of both branches,
        filters applied inside each branch; without an embedding, hybrid is keyword only).

        Raises: ValidationError (mode ``vector`` without an embedding, unknown filter values),
        DimensionMismatchError.
        """
        filters = _Filters.checked(memory_type, visibility, own_only)
        if mode == "vector" and embedding is not None:
            hits = self._vector_now(query, embedding, limit, filters)
            if hits is not None:  # answered from the fresh cache, without the worker thread
                return hits
        keyword, vector = search_branches(query, embedding, limit, mode, self._db.embedding_dim)
        mode = effective_mode(mode, has_vector=vector is not None)
        probe = self._db.probe() if vector is not None else None

        def run(conn: sqlite3.Connection) -> list[SearchHit]:
            size = limit if mode != "hybrid" else branch_size(limit)
            kw = self._keyword(conn, keyword, size, filters)
            vec = (
                self._db.vectors.search(
                    self._agent, vector, size, memory_type=filters.memory_type,
                    visibility=filters.visibility, own_only=filters.own_only, probe=probe,
                )
                if vector is not None
                else []
            )  # fmt: skip
            ranked: list[tuple[str, float, int | None, int | None]]
            if mode == "keyword":
                ranked = [(i, s, r, None) for r, (i, s) in enumerate(kw, 1)]
            elif mode == "vector":
                ranked = [(i, s, None, r) for r, (i, s) in enumerate(vec, 1)]
            else:
                ranked = fuse_rrf([i for i, _ in kw], [i for i, _ in vec], limit=limit)
            items = self._load(conn, [row[0] for row in ranked])
            return [
                SearchHit(item=items[i], score=s, keyword_rank=kr, vector_rank=vr)
                for i, s, kr, vr in ranked
                if i in items  # deleted between the branch and the load
            ]

        return await self._db.read(run)

    def _vector_now(
        self, query: str, embedding: Vector, limit: int, filters: _Filters
    ) -> list[SearchHit] | None:
        """A vector search answered on the event loop from the in-process cache when it is
        fresh (None: take the thread path). The same checks as :func:`search_branches`, but a
        float32 array's values are left to the cache, which refuses a NaN or infinity (None), so
        that the thread path raises for it."""
        check_text("query", query, max_chars=MAX_TEXT_CHARS, allow_empty=True)
        check_limit(limit)
        dim = self._db.embedding_dim
        if isinstance(embedding, np.ndarray) and embedding.dtype == np.float32:
            vector: Matrix = embedding
            if vector.shape != (dim,):
                vector = check_vector(embedding, dim)  # raises, naming expected and got
        else:
            vector = check_vector(embedding, dim)
        probe = self._db.probe()
        if probe is None:
            return None
        found = self._db.vectors.search_now(
            self._agent, vector, limit, probe=probe, memory_type=filters.memory_type,
            visibility=filters.visibility, own_only=filters.own_only,
        )  # fmt: skip
        if found is None:
            return None
        return [
            SearchHit(item=own_copy(item), score=score, keyword_rank=None, vector_rank=rank)
            for rank, (item, score) in enumerate(found, 1)
        ]

    def _keyword(
        self, conn: sqlite3.Connection, match: str | None, size: int, filters: _Filters
    ) -> list[tuple[str, float]]:
        if match is None:
            return []
        where, params = filters.sql(self._agent)
        rows = conn.execute(
            "SELECT m.id, bm25(memory_items_fts) AS rank FROM memory_items_fts"
            " JOIN memory_items m ON m.rowid_key = memory_items_fts.rowid"
            f" WHERE memory_items_fts MATCH ? AND {visible_sql('m')}{where}"
            " ORDER BY rank, m.id LIMIT ?",
            [match, self._agent, self._agent, *params, size],
        ).fetchall()
        return [(item_id, -float(rank)) for item_id, rank in rows]

    def _load(self, conn: sqlite3.Connection, ids: list[str]) -> dict[str, MemoryItem]:
        if not ids:
            return {}
        rows = conn.execute(
            f"SELECT {ITEM_COLUMNS} FROM memory_items m WHERE m.id IN ({placeholders(ids)})"
            f" AND {visible_sql('m')}",
            [*ids, self._agent, self._agent],
        ).fetchall()
        return {row[0]: item_from_row(row) for row in rows}


def own_copy(item: MemoryItem) -> MemoryItem:
    """``item`` with metadata of its own: the cache's items are shared, and a caller may change
    the dict it was given (the struct itself is frozen)."""
    if not item.metadata:
        return msgspec.structs.replace(item, metadata={})
    return msgspec.structs.replace(
        item, metadata=_JSON_COPY.decode(_JSON_COPY_ENC.encode(item.metadata))
    )


_JSON_COPY = msgspec.json.Decoder(dict[str, Any])
_JSON_COPY_ENC = msgspec.json.Encoder()


class _Filters:
    __slots__ = ("memory_type", "own_only", "visibility")

    def __init__(self, memory_type: str | None, visibility: str | None, own_only: bool) -> None:
        self.memory_type = memory_type
        self.visibility = visibility
        self.own_only = own_only

    @classmethod
    def checked(cls, memory_type: object, visibility: object, own_only: object) -> _Filters:
        """Raises: ValidationError (an unknown memory type or visibility)."""
        return cls(
            None if memory_type is None else check_choice("memory_type", memory_type, MEMORY_TYPES),
            None if visibility is None else check_choice("visibility", visibility, VISIBILITIES),
            bool(own_only),
        )

    def sql(self, agent_id: str) -> tuple[str, list[Any]]:
        where, params = "", []
        if self.memory_type is not None:
            where += " AND m.memory_type = ?"
            params.append(self.memory_type)
        if self.visibility is not None:
            where += " AND m.visibility = ?"
            params.append(self.visibility)
        if self.own_only:
            where += " AND m.agent_id = ?"
            params.append(agent_id)
        return where, params
