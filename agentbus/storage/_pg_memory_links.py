"""Memory on PostgreSQL, part two: categories and entities (get-or-create, links), reflections
and lessons. These rows are private to their agent; a link needs both ends visible."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ._canonical import (
    canonical_json,
    check_optional_text,
    check_text,
    check_unit,
    now_utc,
    optional_utc,
)
from ._errors import NotFoundError, ValidationError
from ._models import (
    MAX_LABEL_CHARS,
    MAX_NAME_CHARS,
    MAX_SUMMARY_CHARS,
    MAX_TEXT_CHARS,
    Category,
    Entity,
    Lesson,
    Reflection,
)
from ._pg_checks import affected, new_id, ref_id
from ._pg_core import Conn, Scope
from ._pg_rows import (
    CATEGORY_COLUMNS,
    ENTITY_COLUMNS,
    LESSON_COLUMNS,
    REFLECTION_COLUMNS,
    category as category_row,
    entity as entity_row,
    lesson as lesson_row,
    reflection as reflection_row,
)
from ._rules import check_limit, step_confidence


def name_key(name: str) -> str:
    """The case-insensitive key of a category or entity name, computed here (not by the
    database's collation) so that every backend uses the same one."""
    return name.lower()


class MemoryLinks:
    _scope: Scope
    _agent: str

    # categories -------------------------------------------------------------------------------

    async def create_category(self, name: str, *, description: str | None = None) -> Category:
        """Get-or-create by name (case-insensitive): concurrent calls make one row."""
        name = check_text("name", name, max_chars=MAX_NAME_CHARS)
        description = check_optional_text("description", description, max_chars=MAX_SUMMARY_CHARS)
        async with self._scope.tx("creating a category") as conn:
            # DO NOTHING waits for a concurrent insert of the same key and then yields to it;
            # the next statement (a new snapshot) sees whichever row won.
            await conn.execute(
                "INSERT INTO categories (id, agent_id, name, name_key, description, created_at)"
                " VALUES ($1, $2, $3, $4, $5, $6)"
                " ON CONFLICT ON CONSTRAINT categories_name DO NOTHING",
                new_id(), self._agent, name, name_key(name), description, now_utc(),
            )  # fmt: skip
            row = await conn.fetchrow(
                f"SELECT {CATEGORY_COLUMNS} FROM categories c"
                " WHERE c.agent_id = $1 AND c.name_key = $2",
                self._agent, name_key(name),
            )  # fmt: skip
        assert row is not None
        return category_row(row)

    async def list_categories(self) -> list[Category]:
        async with self._scope.tx("listing categories") as conn:
            rows = await conn.fetch(
                f"SELECT {CATEGORY_COLUMNS} FROM categories c WHERE c.agent_id = $1"
                " ORDER BY c.created_at DESC, c.id DESC",
                self._agent,
            )
        return [category_row(row) for row in rows]

    async def link_item_category(self, item_id: str, category_id: str) -> None:
        """Idempotent. Raises: NotFoundError when the item or the category is not visible."""
        await self._link(
            "item_categories", "category_id", "categories", "category",
            ref_id(item_id, "item_id"), ref_id(category_id, "category_id"),
        )  # fmt: skip

    async def get_item_categories(self, item_id: str) -> list[Category]:
        """This agent's categories linked to the item, newest first ([] for an item it cannot
        see, now or any more)."""
        async with self._scope.tx("reading an item's categories") as conn:
            rows = await conn.fetch(
                f"SELECT {CATEGORY_COLUMNS} FROM categories c"
                " JOIN item_categories ic ON ic.category_id = c.id"
                " JOIN memory_items m ON m.id = ic.item_id"  # the select policy: visible items
                " WHERE ic.item_id = $1 AND c.agent_id = $2"
                " ORDER BY c.created_at DESC, c.id DESC",
                ref_id(item_id, "item_id"), self._agent,
            )  # fmt: skip
        return [category_row(row) for row in rows]

    # entities ---------------------------------------------------------------------------------

    async def create_entity(
        self, name: str, *, entity_type: str = "person", profile: str | None = None
    ) -> Entity:
        """Get-or-create by name (case-insensitive): concurrent calls make one row."""
        name = check_text("name", name, max_chars=MAX_NAME_CHARS)
        kind = check_text("entity_type", entity_type, max_chars=MAX_LABEL_CHARS)
        profile = check_optional_text("profile", profile, max_chars=MAX_TEXT_CHARS)
        now = now_utc()
        async with self._scope.tx("creating an entity") as conn:
            await conn.execute(
                "INSERT INTO entities (id, agent_id, name, name_key, entity_type, profile,"
                " created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7)"
                " ON CONFLICT ON CONSTRAINT entities_name DO NOTHING",
                new_id(), self._agent, name, name_key(name), kind, profile, now,
            )  # fmt: skip
            row = await conn.fetchrow(
                f"SELECT {ENTITY_COLUMNS} FROM entities e"
                " WHERE e.agent_id = $1 AND e.name_key = $2",
                self._agent, name_key(name),
            )  # fmt: skip
        assert row is not None
        return entity_row(row)

    async def get_entity(self, entity_id_or_name: str) -> Entity | None:
        """By id, else by name (case-insensitive)."""
        key = check_text("entity_id_or_name", entity_id_or_name, max_chars=MAX_NAME_CHARS)
        async with self._scope.tx("reading an entity") as conn:
            row = await conn.fetchrow(
                f"SELECT {ENTITY_COLUMNS} FROM entities e"
                " WHERE e.agent_id = $1 AND (e.id = $2 OR e.name_key = $3)"
                " ORDER BY e.id = $2 DESC LIMIT 1",
                self._agent, key, name_key(key),
            )  # fmt: skip
        return None if row is None else entity_row(row)

    async def list_entities(self, *, limit: int = 50) -> list[Entity]:
        async with self._scope.tx("listing entities") as conn:
            rows = await conn.fetch(
                f"SELECT {ENTITY_COLUMNS} FROM entities e WHERE e.agent_id = $1"
                " ORDER BY e.created_at DESC, e.id DESC LIMIT $2",
                self._agent, check_limit(limit),
            )  # fmt: skip
        return [entity_row(row) for row in rows]

    async def link_item_entity(self, item_id: str, entity_id: str) -> None:
        """Idempotent; ``memory_count`` counts distinct items. Raises: NotFoundError."""
        await self._link(
            "item_entities", "entity_id", "entities", "entity",
            ref_id(item_id, "item_id"), ref_id(entity_id, "entity_id"),
        )  # fmt: skip

    async def get_item_entities(self, item_id: str) -> list[Entity]:
        """This agent's entities linked to the item, newest first ([] for an item it cannot
        see, now or any more)."""
        async with self._scope.tx("reading an item's entities") as conn:
            rows = await conn.fetch(
                f"SELECT {ENTITY_COLUMNS} FROM entities e"
                " JOIN item_entities ie ON ie.entity_id = e.id"
                " JOIN memory_items m ON m.id = ie.item_id"  # the select policy: visible items
                " WHERE ie.item_id = $1 AND e.agent_id = $2"
                " ORDER BY e.created_at DESC, e.id DESC",
                ref_id(item_id, "item_id"), self._agent,
            )  # fmt: skip
        return [entity_row(row) for row in rows]

    async def _link(
        self, table: str, column: str, target: str, noun: str, item_id: str, target_id: str
    ) -> None:
        async with self._scope.tx(f"linking an item and a {noun}") as conn:
            await _require_visible(conn, self._agent, item_id, target, noun, target_id)
            now = now_utc()
            status = await conn.execute(
                f"INSERT INTO {table} (item_id, {column}, agent_id, created_at)"
                " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                item_id, target_id, self._agent, now,
            )  # fmt: skip
            if target == "entities" and affected(status):  # a new link changes memory_count
                await conn.execute(
                    "UPDATE entities SET updated_at = $2 WHERE id = $1", target_id, now
                )

    # reflections ------------------------------------------------------------------------------

    async def create_reflection(
        self, content: str, *, period_start: datetime | None = None,
        period_end: datetime | None = None, metadata: Mapping[str, Any] | None = None,
    ) -> Reflection:  # fmt: skip
        content = check_text("content", content, max_chars=MAX_TEXT_CHARS)
        start, end = optional_utc(period_start), optional_utc(period_end)
        if start is not None and end is not None and end < start:
            raise ValidationError("period_end is before period_start")
        async with self._scope.tx("creating a reflection") as conn:
            row = await conn.fetchrow(
                "INSERT INTO reflections AS f (id, agent_id, content, period_start, period_end,"
                " metadata, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)"
                f" RETURNING {REFLECTION_COLUMNS}",
                new_id(), self._agent, content, start, end, canonical_json(metadata), now_utc(),
            )  # fmt: skip
        assert row is not None
        return reflection_row(row)

    async def list_reflections(self, *, limit: int = 50) -> list[Reflection]:
        async with self._scope.tx("listing reflections") as conn:
            rows = await conn.fetch(
                f"SELECT {REFLECTION_COLUMNS} FROM reflections f WHERE f.agent_id = $1"
                " ORDER BY f.created_at DESC, f.id DESC LIMIT $2",
                self._agent, check_limit(limit),
            )  # fmt: skip
        return [reflection_row(row) for row in rows]

    # lessons ----------------------------------------------------------------------------------

    async def create_lesson(
        self, lesson: str, *, context: str | None = None, confidence: float = 0.5
    ) -> Lesson:
        text = check_text("lesson", lesson, max_chars=MAX_SUMMARY_CHARS)
        context = check_optional_text("context", context, max_chars=MAX_TEXT_CHARS)
        level = check_unit("confidence", confidence)
        async with self._scope.tx("creating a lesson") as conn:
            row = await conn.fetchrow(
                "INSERT INTO lessons AS l (id, agent_id, lesson, context, confidence, created_at,"
                f" updated_at) VALUES ($1, $2, $3, $4, $5, $6, $6) RETURNING {LESSON_COLUMNS}",
                new_id(), self._agent, text, context, level, now_utc(),
            )  # fmt: skip
        assert row is not None
        return lesson_row(row)

    async def list_lessons(self, *, limit: int = 50) -> list[Lesson]:
        async with self._scope.tx("listing lessons") as conn:
            rows = await conn.fetch(
                f"SELECT {LESSON_COLUMNS} FROM lessons l WHERE l.agent_id = $1"
                " ORDER BY l.created_at DESC, l.id DESC LIMIT $2",
                self._agent, check_limit(limit),
            )  # fmt: skip
        return [lesson_row(row) for row in rows]

    async def search_lessons(self, query: str, *, limit: int = 10) -> list[Lesson]:
        """This agent's lessons matching every term (``plainto_tsquery('english', …)``)."""
        query = check_text("query", query, max_chars=MAX_TEXT_CHARS, allow_empty=True)
        async with self._scope.tx("searching lessons") as conn:
            rows = await conn.fetch(
                f"SELECT {LESSON_COLUMNS} FROM lessons l,"
                " plainto_tsquery('english', $2) AS q"
                " WHERE l.agent_id = $1 AND numnode(q) > 0 AND l.lesson_tsv @@ q"
                " ORDER BY ts_rank(l.lesson_tsv, q) DESC, l.id LIMIT $3",
                self._agent, query, check_limit(limit),
            )  # fmt: skip
        return [lesson_row(row) for row in rows]

    async def reinforce_lesson(self, lesson_id: str, *, step: float = 0.1) -> Lesson:
        """confidence = min(1, confidence + step); counts a reinforcement."""
        return await self._step_lesson(lesson_id, check_unit("step", step), reinforce=True)

    async def decay_lesson(self, lesson_id: str, *, step: float = 0.1) -> Lesson:
        """confidence = max(0, confidence - step)."""
        return await self._step_lesson(lesson_id, -check_unit("step", step), reinforce=False)

    async def _step_lesson(self, lesson_id: str, step: float, *, reinforce: bool) -> Lesson:
        lesson_id = ref_id(lesson_id, "lesson_id")
        async with self._scope.tx("updating a lesson") as conn:
            current = await conn.fetchval(
                "SELECT confidence FROM lessons WHERE id = $1 AND agent_id = $2 FOR UPDATE",
                lesson_id, self._agent,
            )  # fmt: skip
            if current is None:
                raise NotFoundError(f"lesson {lesson_id} not found")
            row = await conn.fetchrow(
                "UPDATE lessons AS l SET confidence = $2, updated_at = $3,"
                " reinforcement_count = l.reinforcement_count + $4"
                f" WHERE l.id = $1 RETURNING {LESSON_COLUMNS}",
                lesson_id, step_confidence(current, step), now_utc(), int(reinforce),
            )  # fmt: skip
        assert row is not None
        return lesson_row(row)


async def _require_visible(
    conn: Conn, agent: str, item_id: str, target: str, noun: str, target_id: str
) -> None:
    # Foreign keys ignore row-level security; the insert policy checks visibility too.
    row = await conn.fetchrow(
        "SELECT EXISTS (SELECT 1 FROM memory_items m WHERE m.id = $1) AS item,"
        f" EXISTS (SELECT 1 FROM {target} x WHERE x.id = $2 AND x.agent_id = $3) AS target",
        item_id, target_id, agent,
    )  # fmt: skip
    assert row is not None
    if not row["item"]:
        raise NotFoundError(f"item {item_id} not found")
    if not row["target"]:
        raise NotFoundError(f"{noun} {target_id} not found")
