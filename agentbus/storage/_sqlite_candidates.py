"""SQLite live candidates: memories that may duplicate an existing item, awaiting a decision.

A candidate belongs to its agent alone and starts ``pending``; ``merge``, ``promote`` and
``reject`` each move a pending candidate to its final status (anything else is a
``ValidationError``), in one transaction with the memory write they imply:

- ``merge`` reinforces the target item exactly as ``memory.reinforce_item`` does, so the target
  must be one of this agent's own items (another agent's item, even a visible one, is "not
  found", as for ``reinforce_item``);
- ``promote`` creates the item exactly as ``memory.create_item`` does (the same summary already
  stored by this agent is reinforced instead: that item becomes ``resolved_item_id``).

``similar_item_id`` must name an item this agent can see when the candidate is created. Both item
ids stay as they were after that item is deleted: a candidate is a record of the decision.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

from .._ids import uuid7
from ._canonical import (
    canonical_json,
    check_choice,
    check_text,
    check_unit,
    now_utc,
    parse_json,
)
from ._errors import NotFoundError, ValidationError
from ._models import (
    CANDIDATE_STATUSES,
    MAX_SUMMARY_CHARS,
    CandidateStatus,
    LiveCandidate,
    MemoryItem,
    Visibility,
)
from ._rules import check_limit, check_optional_ref, check_ref
from ._sqlite_codec import one, parse_ts, ts, visible_sql
from ._sqlite_db import Database, Scoped
from ._sqlite_memory import ItemOps

COLUMNS = (
    "id, agent_id, summary, similar_item_id, similarity, status, resolved_item_id, metadata,"
    " created_at, updated_at"
)


def candidate_from_row(row: Sequence[Any]) -> LiveCandidate:
    return LiveCandidate(
        id=row[0],
        agent_id=row[1],
        summary=row[2],
        similar_item_id=row[3],
        similarity=row[4],
        status=cast(CandidateStatus, row[5]),
        resolved_item_id=row[6],
        metadata=parse_json(row[7]),
        created_at=parse_ts(row[8]),
        updated_at=parse_ts(row[9]),
    )


class SQLiteLiveCandidateStore(Scoped):
    """One agent's live candidates in SQLite (see the module docstring)."""

    def __init__(self, db: Database, agent_id: str) -> None:
        super().__init__(db, agent_id)
        self._items = ItemOps(db, agent_id)  # the memory store's own write logic

    async def create(
        self, summary: str, *, similar_item_id: str | None = None,
        similarity: float | None = None, metadata: Mapping[str, Any] | None = None,
    ) -> LiveCandidate:  # fmt: skip
        """Record a pending candidate.

        Raises: ValidationError, NotFoundError (``similar_item_id`` not visible).
        """
        now = ts(now_utc())
        row = (
            uuid7(),
            self._agent,
            check_text("summary", summary, max_chars=MAX_SUMMARY_CHARS),
            check_optional_ref("similar_item_id", similar_item_id),
            None if similarity is None else check_unit("similarity", similarity),
            "pending",
            None,
            canonical_json(metadata),
            now,
            now,
        )

        def write(conn: sqlite3.Connection) -> LiveCandidate:
            if similar_item_id is not None and not one(
                conn,
                f"SELECT 1 FROM memory_items m WHERE m.id = ? AND {visible_sql('m')}",
                (similar_item_id, self._agent, self._agent),
            ):
                raise NotFoundError(f"memory item {similar_item_id} not found")
            conn.execute(f"INSERT INTO live_candidates ({COLUMNS}) VALUES ({'?, ' * 9}?)", row)
            return candidate_from_row(row)

        return await self._db.write(write)

    async def list_candidates(
        self, *, status: CandidateStatus | None = "pending", limit: int = 50
    ) -> list[LiveCandidate]:
        """This agent's candidates of ``status`` (None: all), newest first."""
        check_limit(limit)
        where, params = "agent_id = ?", [self._agent]
        if status is not None:
            where += " AND status = ?"
            params.append(check_choice("status", status, CANDIDATE_STATUSES))

        def read(conn: sqlite3.Connection) -> list[LiveCandidate]:
            rows = conn.execute(
                f"SELECT {COLUMNS} FROM live_candidates WHERE {where}"
                " ORDER BY created_at DESC, id DESC LIMIT ?",
                [*params, limit],
            )
            return [candidate_from_row(row) for row in rows]

        return await self._db.read(read)

    async def merge(self, candidate_id: str, *, into: str | None = None) -> LiveCandidate:
        """Fold a pending candidate into an item of this agent's (default: its
        ``similar_item_id``), which is reinforced; status ``merged``.

        Raises: NotFoundError (candidate or item), ValidationError (not pending, no target).
        """
        check_optional_ref("into", into)

        def resolve(conn: sqlite3.Connection, candidate: LiveCandidate, now: str) -> MemoryItem:
            target = into or candidate.similar_item_id
            if target is None:
                raise ValidationError(
                    f"live candidate {candidate.id} has no similar_item_id: pass into=<item id>"
                )
            return self._items._reinforce(conn, target, now)

        return await self._resolve(candidate_id, "merged", resolve)

    async def promote(
        self, candidate_id: str, *, visibility: Visibility = "private"
    ) -> LiveCandidate:
        """Create a memory item from a pending candidate (its summary and metadata);
        status ``promoted``, ``resolved_item_id`` the item.

        Raises: NotFoundError, ValidationError (not pending, visibility ``team``: promote
        privately, then share the item).
        """

        def resolve(conn: sqlite3.Connection, candidate: LiveCandidate, now: str) -> MemoryItem:
            values = self._items._new_item(
                candidate.summary, visibility=visibility, metadata=candidate.metadata
            )
            return self._items._insert(conn, values, now)

        return await self._resolve(candidate_id, "promoted", resolve)

    async def reject(self, candidate_id: str) -> LiveCandidate:
        """Status ``rejected``. Raises: NotFoundError, ValidationError (not pending)."""
        return await self._resolve(candidate_id, "rejected", None)

    async def _resolve(
        self, candidate_id: str, status: CandidateStatus,
        resolve: Callable[[sqlite3.Connection, LiveCandidate, str], MemoryItem] | None,
    ) -> LiveCandidate:  # fmt: skip
        check_ref("candidate_id", candidate_id)

        def write(conn: sqlite3.Connection) -> LiveCandidate:
            row = conn.execute(
                f"SELECT {COLUMNS} FROM live_candidates WHERE id = ? AND agent_id = ?",
                (candidate_id, self._agent),
            ).fetchone()
            if row is None:
                raise NotFoundError(f"live candidate {candidate_id} not found")
            candidate = candidate_from_row(row)
            if candidate.status != "pending":
                raise ValidationError(
                    f"live candidate {candidate_id} is already {candidate.status}; only a "
                    f"pending candidate can be {status}"
                )
            now = ts(now_utc())
            item = None if resolve is None else resolve(conn, candidate, now)
            row = conn.execute(
                "UPDATE live_candidates SET status = ?, resolved_item_id = ?, updated_at = ?"
                f" WHERE id = ? AND status = 'pending' RETURNING {COLUMNS}",
                (status, None if item is None else item.id, now, candidate_id),
            ).fetchone()
            return candidate_from_row(row)

        return await self._db.write(write)
