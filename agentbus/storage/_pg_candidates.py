"""Live candidates on PostgreSQL: memories that may duplicate an item, waiting for a decision.

A candidate is ``pending`` until it is merged (into an existing item, which is reinforced),
promoted (a new memory item is made from it) or rejected; only a pending candidate moves, and each
move is one transaction that locks the candidate first, so two concurrent decisions cannot both
apply. Candidates are the agent's own rows (migration 0006). The item a candidate resembles
(``similar_item_id``) must be visible to it (own, family/public, its teams'), else "not found";
``merge`` folds only into one of the agent's own items, reinforced exactly as
``memory.reinforce_item`` does — another agent's item, even a visible one, is "not found", like
any mutation of a row the agent does not own (migration 0007 holds the app role to the same rule).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._canonical import canonical_json, check_choice, check_text, check_unit, now_utc
from ._errors import NotFoundError, ValidationError
from ._models import (
    CANDIDATE_STATUSES,
    MAX_SUMMARY_CHARS,
    CandidateStatus,
    LiveCandidate,
    Visibility,
)
from ._pg_checks import new_id, optional_ref, ref_id
from ._pg_core import Conn, Scope
from ._pg_memory import _INSERT_ITEMS, _REINFORCE, _NewItem
from ._pg_rows import CANDIDATE_COLUMNS, candidate as candidate_row
from ._rules import check_limit

_VISIBLE_ITEM = """SELECT EXISTS (SELECT 1 FROM memory_items m WHERE m.id = $2
    AND (m.agent_id = $1 OR m.visibility IN ('family', 'public')
         OR (m.visibility = 'team' AND m.team_id = ANY (agentbus_my_teams()))))"""

_RESOLVE = f"""
UPDATE live_candidates lc SET status = $3, resolved_item_id = $4, updated_at = $5
WHERE lc.id = $1 AND lc.agent_id = $2 AND lc.status = 'pending'
RETURNING {CANDIDATE_COLUMNS}
"""


class PgLiveCandidates:
    """:class:`~agentbus.storage.LiveCandidateStore` for one agent (``PgAdapter.for_agent``)."""

    def __init__(self, scope: Scope) -> None:
        self._scope = scope
        self._agent = scope.agent
        self._dim = scope.core.embedding_dim

    async def create(
        self, summary: str, *, similar_item_id: str | None = None,
        similarity: float | None = None, metadata: Mapping[str, Any] | None = None,
    ) -> LiveCandidate:  # fmt: skip
        """A pending candidate, optionally naming the visible item it resembles.

        Raises: ValidationError, NotFoundError (``similar_item_id`` not visible).
        """
        similar = optional_ref(similar_item_id, "similar_item_id")
        now = now_utc()
        values = (
            new_id(), self._agent, check_text("summary", summary, max_chars=MAX_SUMMARY_CHARS),
            similar, None if similarity is None else check_unit("similarity", similarity),
            canonical_json(metadata), now,
        )  # fmt: skip
        async with self._scope.tx("creating a live candidate") as conn:
            if similar is not None:
                await self._check_visible(conn, similar)
            row = await conn.fetchrow(
                "INSERT INTO live_candidates AS lc (id, agent_id, summary, similar_item_id,"
                " similarity, status, metadata, created_at, updated_at)"
                " VALUES ($1, $2, $3, $4, $5, 'pending', $6, $7, $7)"
                f" RETURNING {CANDIDATE_COLUMNS}",
                *values,
            )
        assert row is not None
        return candidate_row(row)

    async def list_candidates(
        self, *, status: CandidateStatus | None = "pending", limit: int = 50
    ) -> list[LiveCandidate]:
        """This agent's candidates of ``status`` (None: any), newest first."""
        wanted = None if status is None else check_choice("status", status, CANDIDATE_STATUSES)
        async with self._scope.tx("listing live candidates") as conn:
            rows = await conn.fetch(
                f"SELECT {CANDIDATE_COLUMNS} FROM live_candidates lc WHERE lc.agent_id = $1"
                " AND ($2::text IS NULL OR lc.status = $2)"
                " ORDER BY lc.created_at DESC, lc.id DESC LIMIT $3",
                self._agent, wanted, check_limit(limit),
            )  # fmt: skip
        return [candidate_row(row) for row in rows]

    async def merge(self, candidate_id: str, *, into: str | None = None) -> LiveCandidate:
        """Fold the candidate into one of this agent's own items (default:
        ``similar_item_id``), reinforcing it.

        Raises: NotFoundError (candidate, or the item is not this agent's), ValidationError (not
        pending, or no item to merge into).
        """
        target = optional_ref(into, "into")
        async with self._scope.tx("merging a live candidate") as conn:
            pending = await self._pending(conn, ref_id(candidate_id, "candidate_id"))
            target = target or pending["similar_item_id"]
            if target is None:
                raise ValidationError(
                    f"candidate {pending['id']} names no similar item: pass into=<item id>"
                )
            if await conn.fetchrow(_REINFORCE, target, self._agent, now_utc()) is None:
                raise NotFoundError(f"item {target} not found among agent {self._agent!r}'s items")
            return await self._resolve(conn, pending["id"], "merged", target)

    async def promote(
        self, candidate_id: str, *, visibility: Visibility = "private"
    ) -> LiveCandidate:
        """Create a memory item from the candidate (its summary and metadata), as ``create_item``
        would (the same summary reinforces this agent's existing item).

        Raises: NotFoundError, ValidationError (not pending; ``team`` visibility, which needs a
        team id).
        """
        async with self._scope.tx("promoting a live candidate") as conn:
            pending = await self._pending(conn, ref_id(candidate_id, "candidate_id"))
            spec = _NewItem(
                {"summary": pending["summary"], "visibility": visibility,
                 "metadata": pending["metadata"]},
                self._dim,
            )  # fmt: skip
            item = await conn.fetchrow(
                _INSERT_ITEMS, self._agent, now_utc(), [spec.id], [spec.summary],
                [spec.memory_type], [spec.visibility], [None], [None], [spec.content_hash],
                [spec.significance], [None], [None], [spec.metadata],
            )  # fmt: skip
            assert item is not None
            return await self._resolve(conn, pending["id"], "promoted", item["id"])

    async def reject(self, candidate_id: str) -> LiveCandidate:
        """Raises: NotFoundError, ValidationError (not pending)."""
        async with self._scope.tx("rejecting a live candidate") as conn:
            pending = await self._pending(conn, ref_id(candidate_id, "candidate_id"))
            return await self._resolve(conn, pending["id"], "rejected", None)

    async def _pending(self, conn: Conn, candidate_id: str) -> Any:
        row = await conn.fetchrow(
            "SELECT lc.id, lc.status, lc.summary, lc.similar_item_id, lc.metadata"
            " FROM live_candidates lc WHERE lc.id = $1 AND lc.agent_id = $2 FOR UPDATE",
            candidate_id, self._agent,
        )  # fmt: skip
        if row is None:
            raise NotFoundError(f"live candidate {candidate_id} not found")
        if row["status"] != "pending":
            raise ValidationError(
                f"live candidate {candidate_id} is {row['status']}; only a pending candidate "
                "can be merged, promoted or rejected"
            )
        return row

    async def _resolve(
        self, conn: Conn, candidate_id: str, status: str, item_id: str | None
    ) -> LiveCandidate:
        row = await conn.fetchrow(_RESOLVE, candidate_id, self._agent, status, item_id, now_utc())
        assert row is not None  # locked and pending in this transaction
        return candidate_row(row)

    async def _check_visible(self, conn: Conn, item_id: str) -> None:
        if not await conn.fetchval(_VISIBLE_ITEM, self._agent, item_id):
            raise NotFoundError(f"item {item_id} not found")
