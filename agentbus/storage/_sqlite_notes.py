"""SQLite reflections and lessons: an agent's own notes about its memory.

``search_lessons`` follows the keyword rule of item search (every word must match, FTS5
``porter`` stemming) over the lesson and its context, best bm25 first. Reinforce/decay move
``confidence`` by the step with :func:`step_confidence` (bounded 0..1, rounded identically on
every backend); reinforcing also counts in ``reinforcement_count``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from .._ids import uuid7
from ._canonical import (
    canonical_json,
    check_optional_text,
    check_text,
    check_unit,
    now_utc,
    optional_utc,
)
from ._errors import NotFoundError, ValidationError
from ._models import MAX_SUMMARY_CHARS, MAX_TEXT_CHARS, Lesson, Reflection
from ._rules import check_limit, check_ref, step_confidence
from ._sqlite_codec import (
    LESSON_COLUMNS,
    REFLECTION_COLUMNS,
    lesson_from_row,
    opt_ts,
    reflection_from_row,
    ts,
)
from ._sqlite_db import Scoped
from ._sqlite_search import fts_query


def _check_step(step: float) -> float:
    if not isinstance(step, (int, float)) or isinstance(step, bool) or not 0 <= step <= 1:
        raise ValidationError(f"step must be a number from 0 to 1, got {step!r}")
    return float(step)


class NoteOps(Scoped):
    # -- reflections --------------------------------------------------------------------------

    async def create_reflection(
        self, content: str, *, period_start: datetime | None = None,
        period_end: datetime | None = None, metadata: Mapping[str, Any] | None = None,
    ) -> Reflection:  # fmt: skip
        start, end = optional_utc(period_start), optional_utc(period_end)
        if start is not None and end is not None and end < start:
            raise ValidationError("period_end is before period_start")
        values = (
            uuid7(),
            self._agent,
            check_text("content", content, max_chars=MAX_TEXT_CHARS),
            opt_ts(start),
            opt_ts(end),
            canonical_json(metadata),
            ts(now_utc()),
        )

        def write(conn: sqlite3.Connection) -> Reflection:
            conn.execute(
                f"INSERT INTO reflections ({REFLECTION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                values,
            )
            return reflection_from_row(values)

        return await self._db.write(write)

    async def list_reflections(self, *, limit: int = 50) -> list[Reflection]:
        check_limit(limit)

        def read(conn: sqlite3.Connection) -> list[Reflection]:
            rows = conn.execute(
                f"SELECT {REFLECTION_COLUMNS} FROM reflections WHERE agent_id = ?"
                " ORDER BY created_at DESC, id DESC LIMIT ?",
                (self._agent, limit),
            )
            return [reflection_from_row(row) for row in rows]

        return await self._db.read(read)

    # -- lessons ------------------------------------------------------------------------------

    async def create_lesson(
        self, lesson: str, *, context: str | None = None, confidence: float = 0.5
    ) -> Lesson:
        check_text("lesson", lesson, max_chars=MAX_SUMMARY_CHARS)
        check_optional_text("context", context, max_chars=MAX_TEXT_CHARS)
        confidence = check_unit("confidence", confidence)

        def write(conn: sqlite3.Connection) -> Lesson:
            now = ts(now_utc())
            lesson_id = uuid7()
            conn.execute(
                "INSERT INTO lessons (id, agent_id, lesson, context, confidence, created_at,"
                " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (lesson_id, self._agent, lesson, context, confidence, now, now),
            )
            return self._fetch_lesson(conn, lesson_id)

        return await self._db.write(write)

    def _fetch_lesson(self, conn: sqlite3.Connection, lesson_id: str) -> Lesson:
        row = conn.execute(
            f"SELECT {LESSON_COLUMNS} FROM lessons l WHERE l.id = ?", (lesson_id,)
        ).fetchone()
        return lesson_from_row(row)

    async def list_lessons(self, *, limit: int = 50) -> list[Lesson]:
        check_limit(limit)

        def read(conn: sqlite3.Connection) -> list[Lesson]:
            rows = conn.execute(
                f"SELECT {LESSON_COLUMNS} FROM lessons l WHERE l.agent_id = ?"
                " ORDER BY l.created_at DESC, l.id DESC LIMIT ?",
                (self._agent, limit),
            )
            return [lesson_from_row(row) for row in rows]

        return await self._db.read(read)

    async def search_lessons(self, query: str, *, limit: int = 10) -> list[Lesson]:
        """This agent's lessons matching every word of ``query`` (lesson or context)."""
        check_text("query", query, max_chars=MAX_TEXT_CHARS, allow_empty=True)
        check_limit(limit)
        match = fts_query(query)
        if match is None:
            return []

        def read(conn: sqlite3.Connection) -> list[Lesson]:
            rows = conn.execute(
                f"SELECT {LESSON_COLUMNS} FROM lessons_fts JOIN lessons l"
                " ON l.rowid_key = lessons_fts.rowid WHERE lessons_fts MATCH ? AND l.agent_id = ?"
                " ORDER BY bm25(lessons_fts), l.id LIMIT ?",
                (match, self._agent, limit),
            )
            return [lesson_from_row(row) for row in rows]

        return await self._db.read(read)

    async def reinforce_lesson(self, lesson_id: str, *, step: float = 0.1) -> Lesson:
        """confidence = min(1, confidence + step). Raises: NotFoundError."""
        return await self._step(lesson_id, _check_step(step), reinforce=True)

    async def decay_lesson(self, lesson_id: str, *, step: float = 0.1) -> Lesson:
        """confidence = max(0, confidence - step). Raises: NotFoundError."""
        return await self._step(lesson_id, -_check_step(step), reinforce=False)

    async def _step(self, lesson_id: str, step: float, *, reinforce: bool) -> Lesson:
        check_ref("lesson_id", lesson_id)

        def write(conn: sqlite3.Connection) -> Lesson:
            row = conn.execute(
                "SELECT confidence FROM lessons WHERE id = ? AND agent_id = ?",
                (lesson_id, self._agent),
            ).fetchone()
            if row is None:
                raise NotFoundError(f"lesson {lesson_id} not found")
            conn.execute(
                "UPDATE lessons SET confidence = ?, updated_at = ?,"
                " reinforcement_count = reinforcement_count + ? WHERE id = ?",
                (step_confidence(row[0], step), ts(now_utc()), int(reinforce), lesson_id),
            )
            return self._fetch_lesson(conn, lesson_id)

        return await self._db.write(write)
