"""SQLite memory graph: categories and entities (get-or-create by name) and their links to items.

Names are unique per agent, case-insensitively: ``name_key`` is the name lower-cased in Python
(Unicode-aware, like PostgreSQL's ``lower``), with a UNIQUE (agent_id, name_key) constraint and
``INSERT … ON CONFLICT DO NOTHING``, so concurrent calls for one name make one row. Links are
idempotent; a link needs the item to be visible and the category/entity to be this agent's own
(else NotFoundError). Counts are computed from the link tables, so they count distinct items.
"""

from __future__ import annotations

import sqlite3

from .._ids import uuid7
from ._canonical import check_optional_text, check_text, now_utc
from ._errors import NotFoundError
from ._models import (
    MAX_LABEL_CHARS,
    MAX_NAME_CHARS,
    MAX_SUMMARY_CHARS,
    MAX_TEXT_CHARS,
    Category,
    Entity,
)
from ._rules import check_limit, check_ref
from ._sqlite_codec import (
    CATEGORY_COLUMNS,
    ENTITY_COLUMNS,
    category_from_row,
    entity_from_row,
    one,
    ts,
    visible_sql,
)
from ._sqlite_db import Scoped


class GraphOps(Scoped):
    def _require_item(self, conn: sqlite3.Connection, item_id: str) -> None:
        if not one(
            conn,
            f"SELECT 1 FROM memory_items m WHERE m.id = ? AND {visible_sql('m')}",
            (item_id, self._agent, self._agent),
        ):
            raise NotFoundError(f"memory item {item_id} not found")

    # -- categories ---------------------------------------------------------------------------

    async def create_category(self, name: str, *, description: str | None = None) -> Category:
        """Get-or-create by name (case-insensitive) for this agent; an existing category is
        returned unchanged."""
        check_text("name", name, max_chars=MAX_NAME_CHARS)
        check_optional_text("description", description, max_chars=MAX_SUMMARY_CHARS)

        def write(conn: sqlite3.Connection) -> Category:
            conn.execute(
                "INSERT INTO categories (id, agent_id, name, name_key, description, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (agent_id, name_key) DO NOTHING",
                (uuid7(), self._agent, name, name.lower(), description, ts(now_utc())),
            )
            row = conn.execute(
                f"SELECT {CATEGORY_COLUMNS} FROM categories c"
                " WHERE c.agent_id = ? AND c.name_key = ?",
                (self._agent, name.lower()),
            ).fetchone()
            return category_from_row(row)

        return await self._db.write(write)

    async def list_categories(self) -> list[Category]:
        """This agent's categories, newest first."""

        def read(conn: sqlite3.Connection) -> list[Category]:
            rows = conn.execute(
                f"SELECT {CATEGORY_COLUMNS} FROM categories c WHERE c.agent_id = ?"
                " ORDER BY c.created_at DESC, c.id DESC",
                (self._agent,),
            )
            return [category_from_row(row) for row in rows]

        return await self._db.read(read)

    async def link_item_category(self, item_id: str, category_id: str) -> None:
        """Idempotent. Raises: NotFoundError (item not visible, category not this agent's)."""
        check_ref("item_id", item_id)
        check_ref("category_id", category_id)

        def write(conn: sqlite3.Connection) -> None:
            self._require_item(conn, item_id)
            if not one(
                conn,
                "SELECT 1 FROM categories WHERE id = ? AND agent_id = ?",
                (category_id, self._agent),
            ):
                raise NotFoundError(f"category {category_id} not found")
            conn.execute(
                "INSERT INTO item_categories (item_id, category_id, created_at) VALUES (?, ?, ?)"
                " ON CONFLICT DO NOTHING",
                (item_id, category_id, ts(now_utc())),
            )

        await self._db.write(write)

    async def get_item_categories(self, item_id: str) -> list[Category]:
        """This agent's categories of a visible item, newest first ([] for an unknown item)."""
        check_ref("item_id", item_id)

        def read(conn: sqlite3.Connection) -> list[Category]:
            rows = conn.execute(
                f"SELECT {CATEGORY_COLUMNS} FROM categories c"
                " JOIN item_categories ic ON ic.category_id = c.id"
                " JOIN memory_items m ON m.id = ic.item_id"
                f" WHERE ic.item_id = ? AND c.agent_id = ? AND {visible_sql('m')}"
                " ORDER BY c.created_at DESC, c.id DESC",
                (item_id, self._agent, self._agent, self._agent),
            )
            return [category_from_row(row) for row in rows]

        return await self._db.read(read)

    # -- entities -----------------------------------------------------------------------------

    async def create_entity(
        self, name: str, *, entity_type: str = "person", profile: str | None = None
    ) -> Entity:
        """Get-or-create by name (case-insensitive) for this agent; concurrent calls for one
        name make one row, and an existing entity is returned unchanged."""
        check_text("name", name, max_chars=MAX_NAME_CHARS)
        check_text("entity_type", entity_type, max_chars=MAX_LABEL_CHARS)
        check_optional_text("profile", profile, max_chars=MAX_TEXT_CHARS)

        def write(conn: sqlite3.Connection) -> Entity:
            now = ts(now_utc())
            conn.execute(
                "INSERT INTO entities (id, agent_id, name, name_key, entity_type, profile,"
                " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (agent_id, name_key) DO NOTHING",
                (uuid7(), self._agent, name, name.lower(), entity_type, profile, now, now),
            )
            row = conn.execute(
                f"SELECT {ENTITY_COLUMNS} FROM entities e WHERE e.agent_id = ? AND e.name_key = ?",
                (self._agent, name.lower()),
            ).fetchone()
            return entity_from_row(row)

        return await self._db.write(write)

    async def get_entity(self, entity_id_or_name: str) -> Entity | None:
        """One of this agent's entities by id, or else by name (case-insensitive)."""
        check_text("entity_id_or_name", entity_id_or_name, max_chars=MAX_NAME_CHARS)

        def read(conn: sqlite3.Connection) -> Entity | None:
            row = conn.execute(
                f"SELECT {ENTITY_COLUMNS} FROM entities e WHERE e.agent_id = ?"
                " AND (e.id = ? OR e.name_key = ?) ORDER BY e.id = ? DESC LIMIT 1",
                (self._agent, entity_id_or_name, entity_id_or_name.lower(), entity_id_or_name),
            ).fetchone()
            return None if row is None else entity_from_row(row)

        return await self._db.read(read)

    async def list_entities(self, *, limit: int = 50) -> list[Entity]:
        check_limit(limit)

        def read(conn: sqlite3.Connection) -> list[Entity]:
            rows = conn.execute(
                f"SELECT {ENTITY_COLUMNS} FROM entities e WHERE e.agent_id = ?"
                " ORDER BY e.created_at DESC, e.id DESC LIMIT ?",
                (self._agent, limit),
            )
            return [entity_from_row(row) for row in rows]

        return await self._db.read(read)

    async def link_item_entity(self, item_id: str, entity_id: str) -> None:
        """Idempotent; ``memory_count`` counts distinct linked items.

        Raises: NotFoundError (item not visible, entity not this agent's).
        """
        check_ref("item_id", item_id)
        check_ref("entity_id", entity_id)

        def write(conn: sqlite3.Connection) -> None:
            self._require_item(conn, item_id)
            if not one(
                conn,
                "SELECT 1 FROM entities WHERE id = ? AND agent_id = ?",
                (entity_id, self._agent),
            ):
                raise NotFoundError(f"entity {entity_id} not found")
            now = ts(now_utc())
            cursor = conn.execute(
                "INSERT INTO item_entities (item_id, entity_id, created_at) VALUES (?, ?, ?)"
                " ON CONFLICT DO NOTHING",
                (item_id, entity_id, now),
            )
            if cursor.rowcount:
                conn.execute("UPDATE entities SET updated_at = ? WHERE id = ?", (now, entity_id))

        await self._db.write(write)

    async def get_item_entities(self, item_id: str) -> list[Entity]:
        """This agent's entities linked to a visible item, newest first."""
        check_ref("item_id", item_id)

        def read(conn: sqlite3.Connection) -> list[Entity]:
            rows = conn.execute(
                f"SELECT {ENTITY_COLUMNS} FROM entities e"
                " JOIN item_entities ie ON ie.entity_id = e.id"
                " JOIN memory_items m ON m.id = ie.item_id"
                f" WHERE ie.item_id = ? AND e.agent_id = ? AND {visible_sql('m')}"
                " ORDER BY e.created_at DESC, e.id DESC",
                (item_id, self._agent, self._agent, self._agent),
            )
            return [entity_from_row(row) for row in rows]

        return await self._db.read(read)
