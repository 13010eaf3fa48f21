"""Memory on PostgreSQL: resources, items (batched writes, de-duplication), search, stats.

Categories, entities, reflections and lessons are in ``_pg_memory_links``; search SQL in
``_pg_search``. Reads see what the policies let this agent see (own, family/public, its teams'
team rows) and also carry that rule as an explicit predicate so that the planner can use the
per-arm indexes; writes touch this agent's own rows only. A row another agent owns is "not
found" to every mutation.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import anyio
import asyncpg
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
from ._errors import NotFoundError, StorageUnavailableError, ValidationError
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

# create_items shares a batch among several connections from this many embedded rows (each
# HNSW insert costs milliseconds, measured ~4 ms a row at 20-70k rows); chunks of a share.
PARALLEL_MIN_EMBEDDED = 32
_CHUNK_MIN = 8
_CHUNK_MAX = 128


class _Contended(Exception):
    """A share of a batched insert waited too long for a lock; the batch runs again whole."""


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
        """Create many items with ``INSERT … SELECT FROM unnest``, all or nothing.

        Returns one item per input, in input order, as if ``create_item`` had been called for
        each in turn (a summary repeated within the batch reinforces the first).

        Every item is checked before anything is sent. A batch of fewer than
        ``PARALLEL_MIN_EMBEDDED`` embedded rows, or with ``insert_connections=1``, is one
        transaction. A larger one is shared out, a chunk at a time, among up to
        ``insert_connections`` transactions on separate pool connections, so that the HNSW
        index inserts (milliseconds a row) run on several server processes at once. The
        shares commit only after every share is inserted: if one fails, or the call is
        cancelled before then, all roll back. Their COMMITs are separate statements, so another
        reader may see one share a moment before the others, and a connection lost during that
        last step may leave some shares committed (``StorageUnavailableError`` says to check,
        as for any lost COMMIT). Each summary goes to one share, so the content-hash rule holds
        as in one transaction. A share that waits for a lock longer than about a second (a
        concurrent batch of this agent holding the same summaries, a table lock queued in
        between) makes the whole batch roll back and run again as one transaction, which
        waits normally — shares waiting for each other across two such batches could
        otherwise wait forever, unseen by PostgreSQL's deadlock detector. Rows go in in
        content-hash order, so that two batches of one agent never deadlock either.
        """
        specs = [_NewItem(spec, self._dim) for spec in items]
        if not specs:
            return []
        first: dict[str, _NewItem] = {}
        repeats: dict[str, int] = {}
        for spec in specs:
            if spec.content_hash in first:
                repeats[spec.content_hash] = repeats.get(spec.content_hash, 0) + 1
            else:
                first[spec.content_hash] = spec
        # In content-hash order: concurrent batches of one agent meet each other's rows in the
        # same order, so their transactions never deadlock over shared summaries.
        batch = sorted(first.values(), key=lambda spec: spec.content_hash)
        now = now_utc()
        states: dict[str, list[MemoryItem]] | None = None
        if self._shareable(batch):
            states = await self._insert_shares(batch, repeats, now)
        if states is None:
            async with self._scope.tx("creating items") as conn:
                states = await self._insert(conn, batch, repeats, now)
        seen: dict[str, int] = {}
        results: list[MemoryItem] = []
        for spec in specs:  # the n-th occurrence of a summary gets the n-th state of its row
            n = seen.get(spec.content_hash, 0)
            seen[spec.content_hash] = n + 1
            results.append(states[spec.content_hash][n])
        return results

    def _shareable(self, batch: Sequence[_NewItem]) -> bool:
        if self._scope.core.insert_connections < 2:
            return False
        if sum(1 for s in batch if s.embedding is not None) < PARALLEL_MIN_EMBEDDED:
            return False
        # Two rows with one id in two shares would wait for each other until the lock
        # timeout; in one transaction the second one is refused at once.
        return len({s.id for s in batch}) == len(batch)

    async def _insert(
        self, conn: Conn, batch: Sequence[_NewItem], repeats: Mapping[str, int], now: datetime
    ) -> dict[str, list[MemoryItem]]:
        """Insert (or reinforce) ``batch`` — one row per summary — then reinforce each row once
        per repeat; returns each summary's states in that order."""
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
        states = {row["content_hash"]: [item_row(row)] for row in rows}
        for spec in batch:
            for _ in range(repeats.get(spec.content_hash, 0)):
                row = await conn.fetchrow(
                    _REINFORCE, states[spec.content_hash][-1].id, self._agent, now
                )
                assert row is not None
                states[spec.content_hash].append(item_row(row))
        return states

    async def _insert_shares(
        self, batch: Sequence[_NewItem], repeats: Mapping[str, int], now: datetime
    ) -> dict[str, list[MemoryItem]] | None:
        """``batch`` inserted by up to ``insert_connections`` transactions that commit together
        (see ``create_items``); None when one of them waited too long for a lock (all rolled
        back)."""
        core = self._scope.core
        workers = core.insert_connections
        size = min(_CHUNK_MAX, max(_CHUNK_MIN, -(-len(batch) // (workers * 4))))
        chunks = deque(batch[start : start + size] for start in range(0, len(batch), size))
        states: dict[str, list[MemoryItem]] = {}
        inserted = anyio.Event()  # every chunk is in: the shares may commit
        busy = 0  # shares holding a connection and inserting
        waiting: set[anyio.CancelScope] = set()  # shares still waiting for a connection
        hopeful = workers  # shares that have a connection or may still get one

        async def share() -> None:
            nonlocal busy, hopeful
            started = False
            try:
                with anyio.CancelScope() as scope:
                    waiting.add(scope)
                    async with core.transaction(
                        self._agent, "creating items", lock_timeout=core.share_lock_timeout
                    ) as conn:
                        started = True
                        waiting.discard(scope)
                        if not chunks:
                            return  # the others did everything: commit nothing
                        busy += 1
                        try:
                            while chunks:
                                chunk = chunks.popleft()
                                states.update(await self._insert(conn, chunk, repeats, now))
                        except asyncpg.LockNotAvailableError as exc:
                            raise _Contended from exc
                        busy -= 1
                        if not busy and not chunks:
                            inserted.set()
                            for other in waiting:  # no work left for shares still waiting
                                other.cancel()
                        await inserted.wait()
            except StorageUnavailableError:
                hopeful -= 0 if started else 1
                if started or not hopeful:
                    raise
                # No spare connection to be had (too many clients, the server going away):
                # the other shares carry on, and fail on their own if it is gone.

        try:
            async with anyio.create_task_group() as tg:
                for _ in range(workers):
                    tg.start_soon(share)
        except BaseExceptionGroup as group:
            if group.subgroup(_Contended) is not None:
                return None
            # Not an ExceptionGroup out of the store: the first failure (shares that failed
            # together, e.g. when the server went away, fail alike), its cause kept.
            error = group.exceptions[0]
            raise error from error.__cause__
        return states

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
