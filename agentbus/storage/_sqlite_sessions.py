"""SQLite session records: observations (session event capture) and model feedback.

Both belong to their agent alone: an agent lists, searches and rates only its own rows (another
agent's id is "not found"). Observation search follows the keyword rule of memory search (every
word must match, FTS5 ``porter`` stemming; see ``_sqlite_search``) over summaries, best bm25
first. A feedback record's user rating is set once: ``rate`` writes it with
``UPDATE … WHERE rating IS NULL``, so of two racing calls exactly one applies.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
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
    parse_json,
)
from ._errors import NotFoundError, ValidationError
from ._models import (
    MAX_NAME_CHARS,
    MAX_SUMMARY_CHARS,
    MAX_TEXT_CHARS,
    ModelFeedback,
    Observation,
    RatingResult,
)
from ._rules import check_limit, check_ref
from ._sqlite_codec import opt_parse_ts, opt_ts, parse_ts, ts
from ._sqlite_db import Scoped
from ._sqlite_search import fts_query

OBSERVATION_COLUMNS = (
    "o.id, o.agent_id, o.session_id, o.kind, o.summary, o.detail, o.tool, o.started_at,"
    " o.ended_at, o.created_at"
)
FEEDBACK_COLUMNS = (
    "id, agent_id, session_id, model, task, self_evaluation, rating, comment, metadata,"
    " created_at, rated_at"
)


def observation_from_row(row: Sequence[Any]) -> Observation:
    return Observation(
        id=row[0],
        agent_id=row[1],
        session_id=row[2],
        kind=row[3],
        summary=row[4],
        detail=parse_json(row[5]),
        tool=row[6],
        started_at=parse_ts(row[7]),
        ended_at=opt_parse_ts(row[8]),
        created_at=parse_ts(row[9]),
    )


def feedback_from_row(row: Sequence[Any]) -> ModelFeedback:
    return ModelFeedback(
        id=row[0],
        agent_id=row[1],
        session_id=row[2],
        model=row[3],
        task=row[4],
        self_evaluation=row[5],
        rating=row[6],
        comment=row[7],
        metadata=parse_json(row[8]),
        created_at=parse_ts(row[9]),
        rated_at=opt_parse_ts(row[10]),
    )


class SQLiteObservationStore(Scoped):
    """One agent's observations in SQLite."""

    async def record(
        self, session_id: str, kind: str, summary: str, *,
        detail: Mapping[str, Any] | None = None, tool: str | None = None,
        started_at: datetime | None = None, ended_at: datetime | None = None,
    ) -> Observation:  # fmt: skip
        """Record one event of a session (``started_at`` defaults to now).

        Raises: ValidationError (a field, ``ended_at`` before ``started_at``).
        """
        now = now_utc()
        start = optional_utc(started_at) or now
        end = optional_utc(ended_at)
        if end is not None and end < start:
            raise ValidationError("ended_at is before started_at")
        row = (
            uuid7(),
            self._agent,
            check_text("session_id", session_id, max_chars=MAX_NAME_CHARS),
            check_text("kind", kind, max_chars=MAX_NAME_CHARS),
            check_text("summary", summary, max_chars=MAX_SUMMARY_CHARS),
            canonical_json(detail),
            check_optional_text("tool", tool, max_chars=MAX_NAME_CHARS),
            ts(start),
            opt_ts(end),
            ts(now),
        )

        def write(conn: sqlite3.Connection) -> Observation:
            conn.execute(
                "INSERT INTO observations (id, agent_id, session_id, kind, summary, detail, tool,"
                " started_at, ended_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
            return observation_from_row(row)

        return await self._db.write(write)

    async def list_observations(
        self, *, session_id: str | None = None, kind: str | None = None, limit: int = 50
    ) -> list[Observation]:
        """This agent's observations, newest first (``created_at`` desc, then ``id`` desc).

        Raises: ValidationError (a filter that ``record`` would refuse, the limit).
        """
        check_limit(limit)
        where, params = "o.agent_id = ?", [self._agent]
        if session_id is not None:
            where += " AND o.session_id = ?"
            params.append(check_text("session_id", session_id, max_chars=MAX_NAME_CHARS))
        if kind is not None:
            where += " AND o.kind = ?"
            params.append(check_text("kind", kind, max_chars=MAX_NAME_CHARS))

        def read(conn: sqlite3.Connection) -> list[Observation]:
            rows = conn.execute(
                f"SELECT {OBSERVATION_COLUMNS} FROM observations o WHERE {where}"
                " ORDER BY o.created_at DESC, o.id DESC LIMIT ?",
                [*params, limit],
            )
            return [observation_from_row(row) for row in rows]

        return await self._db.read(read)

    async def search(self, query: str, *, limit: int = 20) -> list[Observation]:
        """This agent's observations whose summary holds every word of ``query``."""
        check_text("query", query, max_chars=MAX_TEXT_CHARS, allow_empty=True)
        check_limit(limit)
        match = fts_query(query)
        if match is None:
            return []

        def read(conn: sqlite3.Connection) -> list[Observation]:
            rows = conn.execute(
                f"SELECT {OBSERVATION_COLUMNS} FROM observations_fts"
                " JOIN observations o ON o.rowid_key = observations_fts.rowid"
                " WHERE observations_fts MATCH ? AND o.agent_id = ?"
                " ORDER BY bm25(observations_fts), o.id LIMIT ?",
                (match, self._agent, limit),
            )
            return [observation_from_row(row) for row in rows]

        return await self._db.read(read)


def check_rating(rating: object) -> int:
    if not isinstance(rating, int) or isinstance(rating, bool) or not 1 <= rating <= 5:
        raise ValidationError(f"rating must be an integer from 1 to 5, got {rating!r}")
    return rating


class SQLiteFeedbackStore(Scoped):
    """One agent's model feedback in SQLite."""

    async def record(
        self, session_id: str, model: str, *, task: str | None = None,
        self_evaluation: float | None = None, metadata: Mapping[str, Any] | None = None,
    ) -> ModelFeedback:  # fmt: skip
        """Record how a model did in a session (``self_evaluation``: 0..1, the agent's own).

        Raises: ValidationError.
        """
        row = (
            uuid7(),
            self._agent,
            check_text("session_id", session_id, max_chars=MAX_NAME_CHARS),
            check_text("model", model, max_chars=MAX_NAME_CHARS),
            check_optional_text("task", task, max_chars=MAX_SUMMARY_CHARS),
            None if self_evaluation is None else check_unit("self_evaluation", self_evaluation),
            None,
            None,
            canonical_json(metadata),
            ts(now_utc()),
            None,
        )

        def write(conn: sqlite3.Connection) -> ModelFeedback:
            conn.execute(
                f"INSERT INTO model_feedback ({FEEDBACK_COLUMNS})"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
            return feedback_from_row(row)

        return await self._db.write(write)

    async def rate(
        self, feedback_id: str, rating: int, *, comment: str | None = None
    ) -> RatingResult:
        """Set the user's rating (1..5) once. A record already rated keeps its rating and
        comment: the result says ``applied=False`` and carries the record as it is.

        Raises: ValidationError, NotFoundError (no such record of this agent's).
        """
        check_ref("feedback_id", feedback_id)
        check_rating(rating)
        check_optional_text("comment", comment, max_chars=MAX_SUMMARY_CHARS)

        def write(conn: sqlite3.Connection) -> RatingResult:
            applied = conn.execute(
                "UPDATE model_feedback SET rating = ?, comment = ?, rated_at = ?"
                " WHERE id = ? AND agent_id = ? AND rating IS NULL",
                (rating, comment, ts(now_utc()), feedback_id, self._agent),
            ).rowcount
            row = conn.execute(
                f"SELECT {FEEDBACK_COLUMNS} FROM model_feedback WHERE id = ? AND agent_id = ?",
                (feedback_id, self._agent),
            ).fetchone()
            if row is None:
                raise NotFoundError(f"model feedback {feedback_id} not found")
            return RatingResult(feedback=feedback_from_row(row), applied=applied == 1)

        return await self._db.write(write)

    async def latest(self, session_id: str) -> ModelFeedback | None:
        """This agent's newest feedback record of the session, or None.

        Raises: ValidationError (the session id).
        """
        check_text("session_id", session_id, max_chars=MAX_NAME_CHARS)
        found = await self.list_feedback(limit=1, session_id=session_id)
        return found[0] if found else None

    async def list_feedback(
        self, *, model: str | None = None, limit: int = 50, session_id: str | None = None
    ) -> list[ModelFeedback]:
        """This agent's feedback, newest first (``created_at`` desc, then ``id`` desc).

        Raises: ValidationError (a filter that ``record`` would refuse, the limit).
        """
        check_limit(limit)
        where, params = "agent_id = ?", [self._agent]
        if model is not None:
            where += " AND model = ?"
            params.append(check_text("model", model, max_chars=MAX_NAME_CHARS))
        if session_id is not None:
            where += " AND session_id = ?"
            params.append(check_text("session_id", session_id, max_chars=MAX_NAME_CHARS))

        def read(conn: sqlite3.Connection) -> list[ModelFeedback]:
            rows = conn.execute(
                f"SELECT {FEEDBACK_COLUMNS} FROM model_feedback WHERE {where}"
                " ORDER BY created_at DESC, id DESC LIMIT ?",
                [*params, limit],
            )
            return [feedback_from_row(row) for row in rows]

        return await self._db.read(read)
