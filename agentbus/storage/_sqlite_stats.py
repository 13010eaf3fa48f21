"""``memory.get_stats()`` on SQLite: counts of what one agent has and may use (``MemoryStats``).

Own rows for memory, service keys, observations, feedback and live candidates; for knowledge, the
collections the agent may read (own, granted, the family/public library) by the same SQL that
checks reads (``_sqlite_knowledge_acl``), so a collection it cannot read is never counted.
"""

from __future__ import annotations

import sqlite3

from ._models import CANDIDATE_STATUSES, MemoryStats
from ._sqlite_knowledge_acl import COLLECTION_FROM, HELD, PERMITTED_SQL, READABLE

_OWN_COUNTS = {
    "resources": "SELECT count(*) FROM resources WHERE agent_id = :me",
    "categories": "SELECT count(*) FROM categories WHERE agent_id = :me",
    "entities": "SELECT count(*) FROM entities WHERE agent_id = :me",
    "reflections": "SELECT count(*) FROM reflections WHERE agent_id = :me",
    "lessons": "SELECT count(*) FROM lessons WHERE agent_id = :me",
    "embedded_items": (
        "SELECT count(*) FROM memory_items WHERE agent_id = :me AND embedding IS NOT NULL"
    ),
    "service_keys": "SELECT count(*) FROM service_keys WHERE agent_id = :me",
    "observations": "SELECT count(*) FROM observations WHERE agent_id = :me",
    "observation_sessions": (
        "SELECT count(DISTINCT session_id) FROM observations WHERE agent_id = :me"
    ),
    "model_feedback": "SELECT count(*) FROM model_feedback WHERE agent_id = :me",
    "rated_model_feedback": (
        "SELECT count(*) FROM model_feedback WHERE agent_id = :me AND rating IS NOT NULL"
    ),
}

# One pass over the readable collections with this agent's permission on each.
_COLLECTIONS = f"""
SELECT count(*), coalesce(sum({HELD} IN ('write', 'owner')), 0), coalesce(sum({HELD} = 'owner'), 0)
FROM {COLLECTION_FROM} WHERE {READABLE}
"""
_DOCUMENTS = f"""
SELECT count(*), coalesce(sum(chunk_count), 0) FROM knowledge_documents
WHERE collection_id IN ({PERMITTED_SQL})
"""
_EMBEDDED_CHUNKS = f"""
SELECT count(*) FROM knowledge_chunks
WHERE embedding IS NOT NULL AND collection_id IN ({PERMITTED_SQL})
"""


def read_stats(conn: sqlite3.Connection, agent: str) -> MemoryStats:
    """The agent's stats, read in the caller's (read) transaction: one consistent snapshot."""
    me = {"me": agent}
    by_type = dict(
        conn.execute(
            "SELECT memory_type, count(*) FROM memory_items WHERE agent_id = :me"
            " GROUP BY memory_type ORDER BY memory_type",
            me,
        ).fetchall()
    )
    own = {field: int(conn.execute(sql, me).fetchone()[0]) for field, sql in _OWN_COUNTS.items()}
    readable, writable, owned = conn.execute(_COLLECTIONS, me).fetchone()
    documents, chunks = conn.execute(_DOCUMENTS, me).fetchone()
    candidates: dict[str, int] = dict.fromkeys(CANDIDATE_STATUSES, 0)
    candidates.update(
        conn.execute(
            "SELECT status, count(*) FROM live_candidates WHERE agent_id = :me GROUP BY status",
            me,
        ).fetchall()
    )
    return MemoryStats(
        items=sum(by_type.values()),
        by_type=by_type,
        knowledge_collections=readable,
        knowledge_collections_writable=writable,
        knowledge_collections_owned=owned,
        knowledge_documents=documents,
        knowledge_chunks=chunks,
        knowledge_embedded_chunks=int(conn.execute(_EMBEDDED_CHUNKS, me).fetchone()[0]),
        live_candidates=candidates,
        **own,
    )
