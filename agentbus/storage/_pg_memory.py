"""Memory on PostgreSQL: resources, items (batched writes, de-duplication), search, stats.

Categories, entities, reflections and lessons are in ``_pg_memory_links``; search SQL in
``_pg_search``. Reads see what the policies let this agent see (own, family/public, its teams'
team rows) and also carry that rule as an explicit predicate so that the planner can use the
per-arm indexes; writes touch this agent's own rows only. A row another agent owns is "not
found" to every mutation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from pgvector import Vector

from ._canonical import (
    canonical_json,
    check_choice,
    check_optional_text,
    check_text,
    check_unit,
    content_hash,
    now_utc,
    optional_utc,
)
from ._errors import NotFoundError, ValidationError
from ._models import (
    MAX_SUMMARY_CHARS,
    MAX_TEXT_CHARS,
    MEMORY_TYPES,
    VISIBILITIES,
    MemoryItem,
    MemoryStats,
    MemoryType,
    Resource,
    SearchHit,
    SearchMode,
    Visibility,
)
from ._pg_checks import (
    MAX_URL_CHARS,
    affected,
    new_id,
    offset as check_offset,
    optional_ref,
    ref_id,
    vector,
)
from ._pg_core import Conn, Scope
from ._pg_memory_links import MemoryLinks
from ._pg_rows import ITEM_COLUMNS, RESOURCE_COLUMNS, item as item_row, resource as resource_row
from ._pg_search import search_items
from ._pg_stats import read_stats
from ._rules import check_limit

Embedding = Sequence[float]

_ITEM_FIELDS = frozenset({
    "summary", "memory_type", "visibility", "team_id", "resource_id", "significance",
    "happened_at", "metadata", "embedding", "id",
})  # fmt: skip

# One statement for a whole batch: COPY is refused under row-level security, unnest() is not.
# The same summary (content hash) for the same agent reinforces the existing item instead.
_INSERT_ITEMS = f"""
INSERT INTO memory_items AS m (
    id, agent_id, summary, memory_type, visibility, team_id, resource_id, content_hash,
    significance, happened_at, embedding, metadata, created_at, updated_at)
SELECT u.id, $1, u.summary, u.memory_type, u.visibility, u.team_id, u.resource_id,
       u.content_hash, u.significance, u.happened_at, u.embedding, u.metadata, $2, $2
FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[],
            $10::float8[], $11::timestamptz[], $12::vector[], $13::jsonb[])
     AS u(id, summary, memory_type, visibility, team_id, resource_id, content_hash,
          significance, happened_at, embedding, metadata)
ON CONFLICT ON CONSTRAINT memory_items_content DO UPDATE
    SET reinforcement_count = m.reinforcement_count + 1,
        last_reinforced_at = EXCLUDED.created_at, updated_at = EXCLUDED.created_at
RETURNING {ITEM_COLUMNS}
"""

_REINFORCE = f"""
UPDATE memory_items AS m
SET reinforcement_count = m.reinforcement_count + 1, last_reinforced_at = $3, updated_at = $3
WHERE m.id = $1 AND m.agent_id = $2
RETURNING {ITEM_COLUMNS}
"""

# Explicit visibility predicate (what the policy allows), index-friendly: one arm per index.
VISIBLE_ITEM = """(m.agent_id = $1 OR m.visibility IN ('family', 'public')
    OR (m.visibility = 'team' AND m.team_id = ANY ((SELECT agentbus_my_teams())::text[])))"""


class _NewItem:
    __slots__ = (
        "content_hash", "embedding", "happened_at", "id", "memory_type", "metadata",
        "resource_id", "significance", "summary", "team_id", "visibility",
    )  # fmt: skip

    def __init__(self, spec: Mapping[str, Any], dim: int) -> None:
        unknown = set(spec) - _ITEM_FIELDS
        if unknown:
            raise ValidationError(f"unknown item fields {sorted(unknown)}")
        if "summary" not in spec:
            raise ValidationError("an item needs a summary")
        self.summary = check_text("summary", spec["summary"], max_chars=MAX_SUMMARY_CHARS)
        self.content_hash = content_hash(self.summary)
        self.memory_type = check_choice(
            "memory_type", spec.get("memory_type", "knowledge"), MEMORY_TYPES
        )
        self.visibility = check_choice(
            "visibility", spec.get("visibility", "private"), VISIBILITIES
        )
        self.team_id = optional_ref(spec.get("team_id"), "team_id")
        if self.visibility == "team" and self.team_id is None:
            raise ValidationError("visibility 'team' needs a team_id")
        self.resource_id = optional_ref(spec.get("resource_id"), "resource_id")
        self.significance = check_unit("significance", spec.get("significance", 0.5))
        self.happened_at = optional_utc(spec.get("happened_at"))
        self.metadata = canonical_json(spec.get("metadata"))
        raw = spec.get("embedding")
        self.embedding: Vector | None = None if raw is None else vector(raw, dim)
        self.id = new_id(spec.get("id"))


class PgMemory(MemoryLinks):
    """:class:`~agentbus.storage.MemoryStore` for one agent (from ``PgAdapter.for_agent``)."""

    def __init__(self, scope: Scope) -> None:
        self._scope = scope
        self._agent = scope.agent
        self._dim = scope.core.embedding_dim

    # resources --------------------------------------------------------------------------------

    async def create_resource(
        self, url: str, *, modality: str = "text", caption: str | None = None,
        metadata: Mapping[str, Any] | None = None, id: str | None = None,
    ) -> Resource:  # fmt: skip
        values = (
            new_id(id), self._agent, check_text("url", url, max_chars=MAX_URL_CHARS),
            check_text("modality", modality, max_chars=64),
            check_optional_text("caption", caption, max_chars=MAX_TEXT_CHARS),
            canonical_json(metadata), now_utc(),
        )  # fmt: skip
        async with self._scope.tx("creating a resource") as conn:
            row = await conn.fetchrow(
                "INSERT INTO resources AS r (id, agent_id, url, modality, caption, metadata,"
                f" created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {RESOURCE_COLUMNS}",
                *values,
            )
        assert row is not None
        return resource_row(row)

    async def get_resource(self, resource_id: str) -> Resource | None:
        async with self._scope.tx("reading a resource") as conn:
            row = await conn.fetchrow(
                f"SELECT {RESOURCE_COLUMNS} FROM resources r WHERE r.id = $1 AND r.agent_id = $2",
                ref_id(resource_id, "resource_id"), self._agent,
            )  # fmt: skip
        return None if row is None else resource_row(row)

    async def list_resources(self, *, limit: int = 50) -> list[Resource]:
        async with self._scope.tx("listing resources") as conn:
            rows = await conn.fetch(
                f"SELECT {RESOURCE_COLUMNS} FROM resources r WHERE r.agent_id = $1"
                " ORDER BY r.created_at DESC, r.id DESC LIMIT $2",
                self._agent, check_limit(limit),
            )  # fmt: skip
        return [resource_row(row) for row in rows]

    # items ------------------------------------------------------------------------------------

    async def create_item(
        self, summary: str, *, memory_type: MemoryType = "knowledge",
        visibility: Visibility = "private", team_id: str | None = None,
        resource_id: str | None = None, significance: float = 0.5,
        happened_at: datetime | None = None, metadata: Mapping[str, Any] | None = None,
        embedding: Embedding | None = None, id: str | None = None,
    ) -> MemoryItem:  # fmt: skip
        """Create an item, or reinforce this agent's item with the same summary.

        Raises: ValidationError, DimensionMismatchError, NotFoundError (a team this agent is
        not an active member of, a resource it cannot see).
        """
        spec = {
            "summary": summary, "memory_type": memory_type, "visibility": visibility,
            "team_id": team_id, "resource_id": resource_id, "significance": significance,
            "happened_at": happened_at, "metadata": metadata, "embedding": embedding, "id": id,
        }  # fmt: skip
        return (await self.create_items([spec]))[0]

    async def create_items(self, items: Sequence[Mapping[str, Any]]) -> list[MemoryItem]:
        """Create many items in one transaction and one INSERT … SELECT FROM unnest.

        Returns one item per input, in input order, as if ``create_item`` had been called for
        each in turn (a summary repeated within the batch reinforces the first).
        """
        specs = [_NewItem(spec, self._dim) for spec in items]
        if not specs:
            return []
        first: dict[str, _NewItem] = {}
        for spec in specs:
            first.setdefault(spec.content_hash, spec)
        batch = list(first.values())
        now = now_utc()
        async with self._scope.tx("creating items") as conn:
            await self._check_references(conn, batch)
            rows = await conn.fetch(
                _INSERT_ITEMS, self._agent, now,
                [s.id for s in batch], [s.summary for s in batch],
                [s.memory_type for s in batch], [s.visibility for s in batch],
                [s.team_id for s in batch], [s.resource_id for s in batch],
                [s.content_hash for s in batch], [s.significance for s in batch],
                [s.happened_at for s in batch], [s.embedding for s in batch],
                [s.metadata for s in batch],
            )  # fmt: skip
            by_hash = {row["content_hash"]: item_row(row) for row in rows}
            results: list[MemoryItem] = []
            for spec in specs:
                if spec is not first[spec.content_hash]:  # a repeat within this batch
                    row = await conn.fetchrow(
                        _REINFORCE, by_hash[spec.content_hash].id, self._agent, now
                    )
                    assert row is not None
                    by_hash[spec.content_hash] = item_row(row)
                results.append(by_hash[spec.content_hash])
        return results

    async def _check_references(self, conn: Conn, batch: Sequence[_NewItem]) -> None:
        # Foreign keys ignore row-level security: check that referenced rows are visible (the
        # insert policy checks again), so an invisible id is "not found" like a missing one.
        teams = sorted({s.team_id for s in batch if s.team_id is not None})
        resources = sorted({s.resource_id for s in batch if s.resource_id is not None})
        if not teams and not resources:
            return
        row = await conn.fetchrow(
            "SELECT (SELECT array_agg(x) FROM unnest($1::text[]) x"
            "        WHERE NOT agentbus_is_team_member(x)) AS teams,"
            "       (SELECT array_agg(x) FROM unnest($2::text[]) x"
            "        WHERE NOT EXISTS (SELECT 1 FROM resources r WHERE r.id = x)) AS resources",
            teams, resources,
        )  # fmt: skip
        assert row is not None
        if row["teams"]:
            raise NotFoundError(
                f"team {row['teams'][0]} not found, or agent {self._agent!r} is not an active "
                "member of it"
            )
        if row["resources"]:
            raise NotFoundError(f"resource {row['resources'][0]} not found")

    async def get_item(self, item_id: str) -> MemoryItem | None:
        async with self._scope.tx("reading an item") as conn:
            row = await conn.fetchrow(
                f"SELECT {ITEM_COLUMNS} FROM memory_items m WHERE m.id = $2 AND {VISIBLE_ITEM}",
                self._agent, ref_id(item_id, "item_id"),
            )  # fmt: skip
        return None if row is None else item_row(row)

    async def list_items(
        self, *, memory_type: MemoryType | None = None, visibility: Visibility | None = None,
        limit: int = 50, offset: int = 0,
    ) -> list[MemoryItem]:  # fmt: skip
        """Visible items, newest first."""
        kind = (
            None if memory_type is None else check_choice("memory_type", memory_type, MEMORY_TYPES)
        )
        vis = None if visibility is None else check_choice("visibility", visibility, VISIBILITIES)
        async with self._scope.tx("listing items") as conn:
            rows = await conn.fetch(
                f"SELECT {ITEM_COLUMNS} FROM memory_items m WHERE {VISIBLE_ITEM}"
                " AND ($2::text IS NULL OR m.memory_type = $2)"
                " AND ($3::text IS NULL OR m.visibility = $3)"
                " ORDER BY m.created_at DESC, m.id DESC LIMIT $4 OFFSET $5",
                self._agent, kind, vis, check_limit(limit), check_offset(offset),
            )  # fmt: skip
        return [item_row(row) for row in rows]

    async def delete_item(self, item_id: str) -> bool:
        """Delete one of this agent's items (True).

        Raises: NotFoundError when it has none with that id (another agent's included).
        """
        async with self._scope.tx("deleting an item") as conn:
            status = await conn.execute(
                "DELETE FROM memory_items m WHERE m.id = $1 AND m.agent_id = $2",
                ref_id(item_id, "item_id"), self._agent,
            )  # fmt: skip
        if affected(status) == 0:
            raise NotFoundError(f"item {item_id} not found among agent {self._agent!r}'s items")
        return True

    async def reinforce_item(self, item_id: str) -> MemoryItem:
        """Raises: NotFoundError unless this agent owns the item."""
        async with self._scope.tx("reinforcing an item") as conn:
            row = await conn.fetchrow(
                _REINFORCE, ref_id(item_id, "item_id"), self._agent, now_utc()
            )
        if row is None:
            raise NotFoundError(f"item {item_id} not found among agent {self._agent!r}'s items")
        return item_row(row)

    async def embed_item(self, item_id: str, embedding: Embedding) -> None:
        """Set (or replace) the embedding of one of this agent's items.

        Raises: DimensionMismatchError, ValidationError, NotFoundError.
        """
        value = vector(embedding, self._dim)
        async with self._scope.tx("embedding an item") as conn:
            status = await conn.execute(
                "UPDATE memory_items m SET embedding = $3, updated_at = $4"
                " WHERE m.id = $1 AND m.agent_id = $2",
                ref_id(item_id, "item_id"), self._agent, value, now_utc(),
            )  # fmt: skip
        if affected(status) == 0:
            raise NotFoundError(f"item {item_id} not found among agent {self._agent!r}'s items")

    async def search_items(
        self, query: str, *, embedding: Embedding | None = None, limit: int = 10,
        mode: SearchMode = "hybrid", memory_type: MemoryType | None = None,
        visibility: Visibility | None = None, own_only: bool = False,
    ) -> list[SearchHit]:  # fmt: skip
        """Keyword, vector or hybrid (RRF) search over the visible items; see ``_pg_search``."""
        checked = None if embedding is None else vector(embedding, self._dim)
        return await search_items(
            self._scope, query, embedding=checked, limit=limit, mode=mode,
            memory_type=memory_type, visibility=visibility, own_only=own_only,
        )  # fmt: skip

    async def get_stats(self) -> MemoryStats:
        """Counts of this agent's own rows, and of the knowledge it may read (see
        ``MemoryStats``)."""
        async with self._scope.tx("counting memory") as conn:
            return await read_stats(conn, self._agent)
