"""Bulk loading of memory items on PostgreSQL: a maintenance path for imports and backfills.

Inserting into an existing HNSW index costs milliseconds a row (DESIGN.md §4); building the index
once after the rows are in is far cheaper for a large load. :func:`bulk_load_items` therefore
runs as the **owner role** (``admin_dsn``: BYPASSRLS, so rows of many agents go in at once) and,
in **one transaction**:

1. drops the HNSW index on ``memory_items.embedding``, remembering its definition
   (``pg_get_indexdef``) so that it comes back exactly as the migrations made it;
2. inserts the rows in chunks with ``INSERT … SELECT FROM unnest`` — ``ON CONFLICT DO NOTHING``,
   so a row whose id, or whose summary for the same agent (content hash), is already stored is
   skipped and a re-run loads nothing twice;
3. rebuilds the index over the **whole table** (``maintenance_work_mem`` raised for this
   transaction so the graph is built in memory; parallel workers as the server allows);

and after COMMIT runs ``VACUUM (ANALYZE) memory_items``: the planner and the vector-search
path choice see the new row counts, the visibility map lets the index-only counts of visible
rows skip the heap, the GIN index's pending list is merged (a keyword search reads it whole),
and autovacuum is left nothing to do in the middle of the next searches.

Costs and effects, stated plainly: dropping the index takes an ACCESS EXCLUSIVE lock on
``memory_items`` until COMMIT, so every reader and writer of the table waits for the whole load
(it is a maintenance-window tool, not an online one); the rebuild covers the rows already in
the table too, so it only pays off when the load is large next to them. If anything fails, the
transaction rolls back: no row is loaded and the index is as it was. A VACUUM that fails
after COMMIT raises although the rows are loaded (a re-run skips them; autovacuum catches up).

The caller vouches for the rows: policies do not run for the owner role, so team membership of
``team`` rows is not checked (a ``resource_id`` still must exist: foreign keys hold).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg

from .._errors import ConfigError, InvalidAgentIdError
from .._ids import validate_agent_id
from ._canonical import now_utc
from ._errors import ValidationError
from ._pg_core import init_connection
from ._pg_errors import map_pg_errors
from ._pg_memory import _NewItem

HNSW_INDEX = "memory_items_embedding_hnsw"
# What migration 0001 creates; used only if the index is missing when a load starts.
_HNSW_DEFAULT = (
    f"CREATE INDEX {HNSW_INDEX} ON public.memory_items"
    " USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 200)"
)
_CHUNK = 5000

_INSERT = """
INSERT INTO memory_items (
    id, agent_id, summary, memory_type, visibility, team_id, resource_id, content_hash,
    significance, happened_at, embedding, metadata, created_at, updated_at)
SELECT u.id, u.agent_id, u.summary, u.memory_type, u.visibility, u.team_id, u.resource_id,
       u.content_hash, u.significance, u.happened_at, u.embedding, u.metadata, $1, $1
FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
            $9::text[], $10::float8[], $11::timestamptz[], $12::vector[], $13::jsonb[])
     AS u(id, agent_id, summary, memory_type, visibility, team_id, resource_id, content_hash,
          significance, happened_at, embedding, metadata)
ON CONFLICT DO NOTHING
"""


def _checked(rows: Sequence[Mapping[str, Any]], dim: int) -> list[tuple[str, _NewItem]]:
    checked = []
    for n, row in enumerate(rows):
        if "agent_id" not in row:
            raise ValidationError(f"row {n}: a bulk-loaded item needs an agent_id")
        try:
            agent = validate_agent_id(row["agent_id"])
        except InvalidAgentIdError as exc:
            raise ValidationError(f"row {n}: {exc}") from exc
        spec = {key: value for key, value in row.items() if key != "agent_id"}
        checked.append((agent, _NewItem(spec, dim)))
    return checked


async def bulk_load_items(
    admin_dsn: str | None, rows: Sequence[Mapping[str, Any]], *, embedding_dim: int,
    maintenance_work_mem: str,
) -> int:  # fmt: skip
    """Load ``rows`` (``create_item`` keyword arguments plus ``agent_id``) as described above.

    Returns the number of rows inserted (skipped duplicates not counted).

    Raises: ConfigError (no admin_dsn), ValidationError (a bad row: nothing is loaded),
    StorageUnavailableError, MigrationError, StorageError.
    """
    if admin_dsn is None:
        raise ConfigError(
            "bulk_load_items runs as the owner role: create the PgAdapter with admin_dsn "
            "(storage.postgres.adminConnectionString)"
        )
    checked = _checked(rows, embedding_dim)  # every row is checked before anything is sent
    if not checked:
        return 0
    now = now_utc()
    inserted = 0
    with map_pg_errors("connecting as the owner role to bulk-load items"):
        conn: asyncpg.Connection[asyncpg.Record] = await asyncpg.connect(admin_dsn)
    try:
        with map_pg_errors("bulk-loading items"):
            await init_connection(conn)
            async with conn.transaction():
                await conn.execute(
                    "SELECT set_config('maintenance_work_mem', $1, true)", maintenance_work_mem
                )
                definition = await conn.fetchval(
                    "SELECT pg_get_indexdef(to_regclass($1))", f"public.{HNSW_INDEX}"
                )
                await conn.execute(f"DROP INDEX IF EXISTS public.{HNSW_INDEX}")
                for start in range(0, len(checked), _CHUNK):
                    chunk = checked[start : start + _CHUNK]
                    status = await conn.execute(_INSERT, now, *_columns(chunk))
                    inserted += int(status.rsplit(" ", 1)[-1])
                await conn.execute(definition or _HNSW_DEFAULT)
            await conn.execute("VACUUM (ANALYZE) memory_items")
    finally:
        with map_pg_errors("closing the bulk-load connection"):
            await conn.close(timeout=5)
    return inserted


def _columns(chunk: Sequence[tuple[str, _NewItem]]) -> list[list[Any]]:
    specs = [spec for _, spec in chunk]
    return [
        [s.id for s in specs], [agent for agent, _ in chunk], [s.summary for s in specs],
        [s.memory_type for s in specs], [s.visibility for s in specs],
        [s.team_id for s in specs], [s.resource_id for s in specs],
        [s.content_hash for s in specs], [s.significance for s in specs],
        [s.happened_at for s in specs], [s.embedding for s in specs],
        [s.metadata for s in specs],
    ]  # fmt: skip
