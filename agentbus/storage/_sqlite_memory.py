"""SQLite memory store: resources, items (content-hash de-duplication, embeddings), stats; the
search, graph (categories, entities) and notes (reflections, lessons) parts live beside it.

Who may do what: an agent reads every item it can see (its own, ``family``/``public``, its
active teams' ``team`` rows); it changes (delete, reinforce, embed) only its own items — another
agent's id is "not found". Resources, categories, entities, reflections and lessons belong to
their agent alone. Ids follow the rule of every backend (``_rules``): a malformed id is a
ValidationError, a well-formed one naming no row this agent may use is "not found".
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from ._canonical import (
    canonical_json,
    check_choice,
    check_optional_text,
    check_text,
    check_unit,
    check_vector,
    content_hash,
    now_utc,
    optional_utc,
)
from ._errors import NotFoundError, ValidationError
from ._models import (
    MAX_LABEL_CHARS,
    MAX_SUMMARY_CHARS,
    MAX_TEXT_CHARS,
    MAX_URL_CHARS,
    MEMORY_TYPES,
    VISIBILITIES,
    MemoryItem,
    MemoryStats,
    MemoryType,
    Resource,
    Visibility,
)
from ._protocol import Vector
from ._rules import check_limit, check_offset, check_optional_ref, check_ref, new_id
from ._sqlite_codec import (
    ITEM_COLUMNS,
    RESOURCE_COLUMNS,
    item_from_row,
    one,
    opt_ts,
    resource_from_row,
    ts,
    vector_blob,
    visible_branches,
    visible_sql,
)
from ._sqlite_db import Scoped
from ._sqlite_graph import GraphOps
from ._sqlite_notes import NoteOps
from ._sqlite_search import SearchOps
from ._sqlite_stats import read_stats

_INSERT_ITEM = (
    "INSERT INTO memory_items (id, agent_id, summary, memory_type, visibility, team_id,"
    " resource_id, content_hash, significance, happened_at, embedding, metadata, created_at,"
    " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (agent_id, content_hash) DO UPDATE SET"
    " reinforcement_count = reinforcement_count + 1,"
    " last_reinforced_at = excluded.updated_at, updated_at = excluded.updated_at,"
    " embedding = coalesce(memory_items.embedding, excluded.embedding)"
    " RETURNING id"
)


class ItemOps(Scoped):
    # -- resources ----------------------------------------------------------------------------

    async def create_resource(
        self, url: str, *, modality: str = "text", caption: str | None = None,
        metadata: Mapping[str, Any] | None = None, id: str | None = None,
    ) -> Resource:  # fmt: skip
        values = [
            new_id(id),
            self._agent,
            check_text("url", url, max_chars=MAX_URL_CHARS),
            check_text("modality", modality, max_chars=MAX_LABEL_CHARS),
            check_optional_text("caption", caption, max_chars=MAX_TEXT_CHARS),
            canonical_json(metadata),
            ts(now_utc()),
        ]

        def write(conn: sqlite3.Connection) -> Resource:
            conn.execute(
                f"INSERT INTO resources ({RESOURCE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)", values
            )
            return resource_from_row(values)

        return await self._db.write(write)

    async def get_resource(self, resource_id: str) -> Resource | None:
        check_ref("resource_id", resource_id)

        def read(conn: sqlite3.Connection) -> Resource | None:
            row = conn.execute(
                f"SELECT {RESOURCE_COLUMNS} FROM resources WHERE id = ? AND agent_id = ?",
                (resource_id, self._agent),
            ).fetchone()
            return None if row is None else resource_from_row(row)

        return await self._db.read(read)

    async def list_resources(self, *, limit: int = 50) -> list[Resource]:
        check_limit(limit)

        def read(conn: sqlite3.Connection) -> list[Resource]:
            rows = conn.execute(
                f"SELECT {RESOURCE_COLUMNS} FROM resources WHERE agent_id = ?"
                " ORDER BY created_at DESC, id DESC LIMIT ?",
                (self._agent, limit),
            )
            return [resource_from_row(row) for row in rows]

        return await self._db.read(read)

    # -- items --------------------------------------------------------------------------------

    def _new_item(
        self, summary: str, *, memory_type: MemoryType = "knowledge",
        visibility: Visibility = "private", team_id: str | None = None,
        resource_id: str | None = None, significance: float = 0.5,
        happened_at: datetime | None = None, metadata: Mapping[str, Any] | None = None,
        embedding: Vector | None = None, id: str | None = None,
    ) -> list[Any]:  # fmt: skip
        """The validated column values of a ``create_item`` call, ready to insert."""
        check_text("summary", summary, max_chars=MAX_SUMMARY_CHARS)
        visibility = check_choice("visibility", visibility, VISIBILITIES)
        if visibility == "team" and team_id is None:
            raise ValidationError('visibility "team" needs a team_id')
        vector = None if embedding is None else check_vector(embedding, self._db.embedding_dim)
        return [
            new_id(id),
            self._agent,
            summary,
            check_choice("memory_type", memory_type, MEMORY_TYPES),
            visibility,
            check_optional_ref("team_id", team_id),
            check_optional_ref("resource_id", resource_id),
            content_hash(summary),
            check_unit("significance", significance),
            opt_ts(optional_utc(happened_at)),
            None if vector is None else vector_blob(vector),
            canonical_json(metadata),
        ]

    def _insert(self, conn: sqlite3.Connection, values: list[Any], now: str) -> MemoryItem:
        team_id, resource_id = values[5], values[6]
        self._require_team(conn, team_id)
        if resource_id is not None and not one(
            conn,
            "SELECT 1 FROM resources WHERE id = ? AND agent_id = ?",
            (resource_id, self._agent),
        ):
            raise NotFoundError(f"resource {resource_id} not found")
        item_id = one(conn, _INSERT_ITEM, [*values, now, now])
        return self._fetch_item(conn, item_id)

    def _fetch_item(self, conn: sqlite3.Connection, item_id: str) -> MemoryItem:
        row = conn.execute(
            f"SELECT {ITEM_COLUMNS} FROM memory_items m WHERE m.id = ?", (item_id,)
        ).fetchone()
        return item_from_row(row)

    async def create_item(
        self, summary: str, *, memory_type: MemoryType = "knowledge",
        visibility: Visibility = "private", team_id: str | None = None,
        resource_id: str | None = None, significance: float = 0.5,
        happened_at: datetime | None = None, metadata: Mapping[str, Any] | None = None,
        embedding: Vector | None = None, id: str | None = None,
    ) -> MemoryItem:  # fmt: skip
        """Create an item; the same summary (content hash) for the same agent returns the
        existing item reinforced (``reinforcement_count`` + 1, ``last_reinforced_at`` set; an
        embedding fills in a missing one) instead of a duplicate.

        Raises: ValidationError, DimensionMismatchError, NotFoundError (a team this agent is
        not an active member of, a resource that is not its own).
        """
        item = self._new_item(
            summary, memory_type=memory_type, visibility=visibility, team_id=team_id,
            resource_id=resource_id, significance=significance, happened_at=happened_at,
            metadata=metadata, embedding=embedding, id=id,
        )  # fmt: skip
        return await self._db.write(lambda conn: self._insert(conn, item, ts(now_utc())))

    async def create_items(self, items: Sequence[Mapping[str, Any]]) -> list[MemoryItem]:
        """Batched create in one transaction: every item is validated before anything is
        written, and an error leaves nothing written."""
        prepared = []
        for index, fields in enumerate(items):
            if not isinstance(fields, Mapping) or "summary" not in fields:
                raise ValidationError(f"items[{index}] must be a mapping with a summary")
            try:
                prepared.append(self._new_item(**fields))
            except TypeError as exc:
                raise ValidationError(f"items[{index}]: {exc}") from exc

        def write(conn: sqlite3.Connection) -> list[MemoryItem]:
            now = ts(now_utc())
            return [self._insert(conn, item, now) for item in prepared]

        return await self._db.write(write) if prepared else []

    async def get_item(self, item_id: str) -> MemoryItem | None:
        check_ref("item_id", item_id)

        def read(conn: sqlite3.Connection) -> MemoryItem | None:
            row = conn.execute(
                f"SELECT {ITEM_COLUMNS} FROM memory_items m WHERE m.id = ? AND {visible_sql('m')}",
                (item_id, self._agent, self._agent),
            ).fetchone()
            return None if row is None else item_from_row(row)

        return await self._db.read(read)

    async def list_items(
        self, *, memory_type: MemoryType | None = None, visibility: Visibility | None = None,
        limit: int = 50, offset: int = 0,
    ) -> list[MemoryItem]:  # fmt: skip
        """Visible items, newest first (``created_at`` desc, then ``id`` desc)."""
        check_limit(limit)
        check_offset(offset)
        where, params = "", list[str]()
        if memory_type is not None:
            where += " AND m.memory_type = ?"
            params.append(check_choice("memory_type", memory_type, MEMORY_TYPES))
        if visibility is not None:
            where += " AND m.visibility = ?"
            params.append(check_choice("visibility", visibility, VISIBILITIES))

        # Each visibility branch contributes its newest limit + offset rows from its index;
        # the newest of those are the newest visible rows.
        branches, branch_params = [], []
        for branch in visible_branches("m"):
            branches.append(
                f"SELECT * FROM (SELECT m.rowid_key AS k FROM memory_items m WHERE {branch}{where}"
                " ORDER BY m.created_at DESC, m.id DESC LIMIT ?)"
            )
            branch_params += [self._agent] * branch.count("?") + params + [limit + offset]

        def read(conn: sqlite3.Connection) -> list[MemoryItem]:
            rows = conn.execute(
                f"WITH candidates (k) AS ({' UNION ALL '.join(branches)})"
                f" SELECT {ITEM_COLUMNS} FROM candidates c JOIN memory_items m"
                " ON m.rowid_key = c.k ORDER BY m.created_at DESC, m.id DESC LIMIT ? OFFSET ?",
                [*branch_params, limit, offset],
            )
            return [item_from_row(row) for row in rows]

        return await self._db.read(read)

    async def delete_item(self, item_id: str) -> bool:
        """Delete one of this agent's items (its links go with it); True when deleted.

        Raises: NotFoundError (no such item of this agent's, e.g. deleted already).
        """
        check_ref("item_id", item_id)

        def write(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "DELETE FROM memory_items WHERE id = ? AND agent_id = ?", (item_id, self._agent)
            )
            if cursor.rowcount == 0:
                raise NotFoundError(f"memory item {item_id} not found")
            return True

        return await self._db.write(write)

    async def reinforce_item(self, item_id: str) -> MemoryItem:
        """Raises: NotFoundError unless the item is this agent's own."""
        check_ref("item_id", item_id)
        return await self._db.write(lambda conn: self._reinforce(conn, item_id, ts(now_utc())))

    def _reinforce(self, conn: sqlite3.Connection, item_id: str, now: str) -> MemoryItem:
        cursor = conn.execute(
            "UPDATE memory_items SET reinforcement_count = reinforcement_count + 1,"
            " last_reinforced_at = ?, updated_at = ? WHERE id = ? AND agent_id = ?",
            (now, now, item_id, self._agent),
        )
        if cursor.rowcount == 0:
            raise NotFoundError(f"memory item {item_id} not found")
        return self._fetch_item(conn, item_id)

    async def embed_item(self, item_id: str, embedding: Vector) -> None:
        """Store (or replace) the embedding of one of this agent's items.

        Raises: DimensionMismatchError, ValidationError (NaN/inf), NotFoundError.
        """
        blob = vector_blob(check_vector(embedding, self._db.embedding_dim))
        check_ref("item_id", item_id)

        def write(conn: sqlite3.Connection) -> None:
            cursor = conn.execute(
                "UPDATE memory_items SET embedding = ?, updated_at = ?"
                " WHERE id = ? AND agent_id = ?",
                (blob, ts(now_utc()), item_id, self._agent),
            )
            if cursor.rowcount == 0:
                raise NotFoundError(f"memory item {item_id} not found")

        await self._db.write(write)

    async def get_stats(self) -> MemoryStats:
        """Counts of this agent's own rows, and of the knowledge it may read (see
        ``MemoryStats``)."""
        return await self._db.read(lambda conn: read_stats(conn, self._agent))


class SQLiteMemoryStore(ItemOps, SearchOps, GraphOps, NoteOps):
    """One agent's view of memory in SQLite (see the module docstring for who may do what)."""
