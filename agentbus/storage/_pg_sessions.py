"""Session records on PostgreSQL: observations (session events, keyword-searchable) and model
feedback (self-evaluation, and a user rating that is set once).

Every row belongs to one agent: the policies of migrations 0002/0006 let an agent see and write
only its own, and every query names the agent as well (index-friendly). Keyword search over
observations runs in a SECURITY DEFINER function (``agentbus_search_observations``), because under
RLS the planner will not use the GIN index for ``@@``.
"""

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
    utc,
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
from ._pg_checks import new_id, ref_id
from ._pg_core import Scope
from ._pg_rows import (
    FEEDBACK_COLUMNS,
    OBSERVATION_COLUMNS,
    feedback as feedback_row,
    observation as observation_row,
)
from ._rules import check_limit

_SEARCH_OBSERVATIONS = f"""
SELECT {OBSERVATION_COLUMNS}
FROM agentbus_search_observations($1, $2) WITH ORDINALITY AS s(id, score, n)
JOIN observations o ON o.id = s.id
ORDER BY s.n
"""


class PgObservations:
    """:class:`~agentbus.storage.ObservationStore` for one agent (``PgAdapter.for_agent``)."""

    def __init__(self, scope: Scope) -> None:
        self._scope = scope
        self._agent = scope.agent

    async def record(
        self, session_id: str, kind: str, summary: str, *,
        detail: Mapping[str, Any] | None = None, tool: str | None = None,
        started_at: datetime | None = None, ended_at: datetime | None = None,
    ) -> Observation:  # fmt: skip
        """Record one session event (``started_at`` defaults to now).

        Raises: ValidationError (also: ``ended_at`` before ``started_at``).
        """
        now = now_utc()
        start = now if started_at is None else utc(started_at)
        end = optional_utc(ended_at)
        if end is not None and end < start:
            raise ValidationError("ended_at is before started_at")
        values = (
            new_id(), self._agent, check_text("session_id", session_id, max_chars=MAX_NAME_CHARS),
            check_text("kind", kind, max_chars=MAX_NAME_CHARS),
            check_text("summary", summary, max_chars=MAX_SUMMARY_CHARS), canonical_json(detail),
            check_optional_text("tool", tool, max_chars=MAX_NAME_CHARS), start, end, now,
        )  # fmt: skip
        async with self._scope.tx("recording an observation") as conn:
            row = await conn.fetchrow(
                "INSERT INTO observations AS o (id, agent_id, session_id, kind, summary, detail,"
                " tool, started_at, ended_at, created_at)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
                f" RETURNING {OBSERVATION_COLUMNS}",
                *values,
            )
        assert row is not None
        return observation_row(row)

    async def list_observations(
        self, *, session_id: str | None = None, kind: str | None = None, limit: int = 50
    ) -> list[Observation]:
        """This agent's observations, newest first (of one session / kind if given)."""
        session = check_optional_text("session_id", session_id, max_chars=MAX_NAME_CHARS)
        kind = check_optional_text("kind", kind, max_chars=MAX_NAME_CHARS)
        async with self._scope.tx("listing observations") as conn:
            rows = await conn.fetch(
                f"SELECT {OBSERVATION_COLUMNS} FROM observations o WHERE o.agent_id = $1"
                " AND ($2::text IS NULL OR o.session_id = $2)"
                " AND ($3::text IS NULL OR o.kind = $3)"
                " ORDER BY o.created_at DESC, o.id DESC LIMIT $4",
                self._agent, session, kind, check_limit(limit),
            )  # fmt: skip
        return [observation_row(row) for row in rows]

    async def search(self, query: str, *, limit: int = 20) -> list[Observation]:
        """Every term must match (``plainto_tsquery('english', …)``); best ``ts_rank`` first."""
        query = check_text("query", query, max_chars=MAX_TEXT_CHARS, allow_empty=True)
        async with self._scope.tx("searching observations") as conn:
            rows = await conn.fetch(_SEARCH_OBSERVATIONS, query, check_limit(limit))
        return [observation_row(row) for row in rows]


class PgFeedback:
    """:class:`~agentbus.storage.FeedbackStore` for one agent (``PgAdapter.for_agent``)."""

    def __init__(self, scope: Scope) -> None:
        self._scope = scope
        self._agent = scope.agent

    async def record(
        self, session_id: str, model: str, *, task: str | None = None,
        self_evaluation: float | None = None, metadata: Mapping[str, Any] | None = None,
    ) -> ModelFeedback:  # fmt: skip
        """Raises: ValidationError (``self_evaluation`` outside 0..1 …)."""
        values = (
            new_id(), self._agent, check_text("session_id", session_id, max_chars=MAX_NAME_CHARS),
            check_text("model", model, max_chars=MAX_NAME_CHARS),
            check_optional_text("task", task, max_chars=MAX_SUMMARY_CHARS),
            None if self_evaluation is None else check_unit("self_evaluation", self_evaluation),
            canonical_json(metadata), now_utc(),
        )  # fmt: skip
        async with self._scope.tx("recording model feedback") as conn:
            row = await conn.fetchrow(
                "INSERT INTO model_feedback AS fb (id, agent_id, session_id, model, task,"
                " self_evaluation, metadata, created_at)"
                f" VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {FEEDBACK_COLUMNS}",
                *values,
            )
        assert row is not None
        return feedback_row(row)

    async def rate(
        self, feedback_id: str, rating: int, *, comment: str | None = None
    ) -> RatingResult:
        """Set the user's rating (1..5) once, atomically: of two concurrent calls one applies;
        the other (and any later call) changes nothing and returns ``applied=False`` with the
        record as it stands.

        Raises: NotFoundError, ValidationError.
        """
        if isinstance(rating, bool) or not isinstance(rating, int) or not 1 <= rating <= 5:
            raise ValidationError(f"rating must be an integer from 1 to 5, got {rating!r}")
        feedback_id = ref_id(feedback_id, "feedback_id")
        note = check_optional_text("comment", comment, max_chars=MAX_SUMMARY_CHARS)
        async with self._scope.tx("rating model feedback") as conn:
            row = await conn.fetchrow(
                "UPDATE model_feedback fb SET rating = $3, comment = $4, rated_at = $5"
                " WHERE fb.id = $1 AND fb.agent_id = $2 AND fb.rating IS NULL"
                f" RETURNING {FEEDBACK_COLUMNS}",
                feedback_id, self._agent, rating, note, now_utc(),
            )  # fmt: skip
            if row is not None:
                return RatingResult(feedback=feedback_row(row), applied=True)
            row = await conn.fetchrow(
                f"SELECT {FEEDBACK_COLUMNS} FROM model_feedback fb"
                " WHERE fb.id = $1 AND fb.agent_id = $2",
                feedback_id, self._agent,
            )  # fmt: skip
        if row is None:
            raise NotFoundError(f"model feedback {feedback_id} not found")
        return RatingResult(feedback=feedback_row(row), applied=False)

    async def latest(self, session_id: str) -> ModelFeedback | None:
        """This agent's newest feedback record of the session."""
        async with self._scope.tx("reading model feedback") as conn:
            row = await conn.fetchrow(
                f"SELECT {FEEDBACK_COLUMNS} FROM model_feedback fb"
                " WHERE fb.agent_id = $1 AND fb.session_id = $2"
                " ORDER BY fb.created_at DESC, fb.id DESC LIMIT 1",
                self._agent, check_text("session_id", session_id, max_chars=MAX_NAME_CHARS),
            )  # fmt: skip
        return None if row is None else feedback_row(row)

    async def list_feedback(
        self, *, model: str | None = None, limit: int = 50
    ) -> list[ModelFeedback]:
        """Newest first (of one model if given)."""
        model = check_optional_text("model", model, max_chars=MAX_NAME_CHARS)
        async with self._scope.tx("listing model feedback") as conn:
            rows = await conn.fetch(
                f"SELECT {FEEDBACK_COLUMNS} FROM model_feedback fb WHERE fb.agent_id = $1"
                " AND ($2::text IS NULL OR fb.model = $2)"
                " ORDER BY fb.created_at DESC, fb.id DESC LIMIT $3",
                self._agent, model, check_limit(limit),
            )  # fmt: skip
        return [feedback_row(row) for row in rows]
