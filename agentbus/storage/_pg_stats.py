"""``memory.get_stats()`` on PostgreSQL: counts of what one agent has and may use
(``MemoryStats``), in one statement (one snapshot).

Own rows for memory, service keys, observations, feedback and live candidates (each count names
the agent: index-friendly, and the policies hold it to its rows anyway); for knowledge, the
collections the agent may read — ``agentbus_readable_collections()``, the set the policies and
the search use — so a collection it cannot read is never counted. Embedded chunks are summed
from the per-collection counter that the chunk triggers keep (migration 0004).
"""

from __future__ import annotations

from ._models import CANDIDATE_STATUSES, MemoryStats
from ._pg_core import Conn

_STATS = """
WITH readable AS MATERIALIZED (SELECT agentbus_readable_collections() AS ids),
held AS (
    SELECT kc.embedded_chunks,
           CASE WHEN kc.agent_id = $1 THEN 'owner' ELSE kg.permission END AS permission
    FROM knowledge_collections kc
    LEFT JOIN knowledge_collection_grants kg ON kg.collection_id = kc.id AND kg.agent_id = $1
    WHERE kc.id = ANY ((SELECT ids FROM readable)::text[])
),
collections AS (
    SELECT count(*) AS readable,
           count(*) FILTER (WHERE permission IN ('write', 'owner')) AS writable,
           count(*) FILTER (WHERE permission = 'owner') AS owned,
           coalesce(sum(embedded_chunks), 0)::bigint AS embedded_chunks
    FROM held
),
documents AS (
    SELECT count(*) AS documents, coalesce(sum(kd.chunk_count), 0)::bigint AS chunks
    FROM knowledge_documents kd WHERE kd.collection_id = ANY ((SELECT ids FROM readable)::text[])
)
SELECT
    (SELECT count(*) FROM memory_items WHERE agent_id = $1) AS items,
    (SELECT count(*) FROM memory_items WHERE agent_id = $1 AND embedding IS NOT NULL)
        AS embedded_items,
    (SELECT coalesce(jsonb_object_agg(s.memory_type, s.n), '{}'::jsonb) FROM (
        SELECT memory_type, count(*) AS n FROM memory_items WHERE agent_id = $1
        GROUP BY memory_type) s) AS by_type,
    (SELECT count(*) FROM resources WHERE agent_id = $1) AS resources,
    (SELECT count(*) FROM categories WHERE agent_id = $1) AS categories,
    (SELECT count(*) FROM entities WHERE agent_id = $1) AS entities,
    (SELECT count(*) FROM reflections WHERE agent_id = $1) AS reflections,
    (SELECT count(*) FROM lessons WHERE agent_id = $1) AS lessons,
    c.readable AS knowledge_collections,
    c.writable AS knowledge_collections_writable,
    c.owned AS knowledge_collections_owned,
    d.documents AS knowledge_documents,
    d.chunks AS knowledge_chunks,
    c.embedded_chunks AS knowledge_embedded_chunks,
    (SELECT count(*) FROM service_keys WHERE agent_id = $1) AS service_keys,
    (SELECT count(*) FROM observations WHERE agent_id = $1) AS observations,
    (SELECT count(DISTINCT session_id) FROM observations WHERE agent_id = $1)
        AS observation_sessions,
    (SELECT count(*) FROM model_feedback WHERE agent_id = $1) AS model_feedback,
    (SELECT count(*) FROM model_feedback WHERE agent_id = $1 AND rating IS NOT NULL)
        AS rated_model_feedback,
    (SELECT coalesce(jsonb_object_agg(s.status, s.n), '{}'::jsonb) FROM (
        SELECT status, count(*) AS n FROM live_candidates WHERE agent_id = $1
        GROUP BY status) s) AS live_candidates
FROM collections c, documents d
"""


async def read_stats(conn: Conn, agent: str) -> MemoryStats:
    """The agent's stats (``conn``: a transaction acting as ``agent``)."""
    row = await conn.fetchrow(_STATS, agent)
    assert row is not None
    values = dict(row.items())
    values["live_candidates"] = dict.fromkeys(CANDIDATE_STATUSES, 0) | values["live_candidates"]
    return MemoryStats(**values)
