"""Column lists and record -> model conversion for the PostgreSQL stores.

asyncpg returns timestamptz as aware UTC datetimes (microseconds, like the models) and jsonb as
dicts (the codec in ``_pg_core``), so conversion is mostly renaming.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any, cast

import asyncpg
import msgspec

from ._models import (
    AgentRecord,
    Category,
    Entity,
    KnowledgeCollection,
    KnowledgeDocument,
    KnowledgeGrant,
    Lesson,
    LiveCandidate,
    MemoryItem,
    ModelFeedback,
    Observation,
    Reflection,
    Resource,
    SearchMode,
    ServiceKeyInfo,
    Task,
    TaskEvent,
    Team,
    TeamMember,
)
from ._rules import rrf_score

Record = asyncpg.Record

# Every query aliases its table as below: r resources, m memory_items, c categories, e entities,
# f reflections, l lessons, t tasks, a agents.
RESOURCE_COLUMNS = "r.id, r.agent_id, r.url, r.modality, r.caption, r.metadata, r.created_at"
ITEM_COLUMNS = (
    "m.id, m.agent_id, m.summary, m.memory_type, m.visibility, m.team_id, m.resource_id,"
    " m.content_hash, m.significance, m.reinforcement_count, m.last_reinforced_at,"
    " m.happened_at, (m.embedding IS NOT NULL) AS has_embedding, m.metadata, m.created_at,"
    " m.updated_at"
)


CATEGORY_COLUMNS = (
    "c.id, c.agent_id, c.name, c.description, c.created_at,"
    " (SELECT count(*) FROM item_categories ic WHERE ic.category_id = c.id) AS item_count"
)
ENTITY_COLUMNS = (
    "e.id, e.agent_id, e.name, e.entity_type, e.profile, e.created_at, e.updated_at,"
    " (SELECT count(*) FROM item_entities ie WHERE ie.entity_id = e.id) AS memory_count"
)
REFLECTION_COLUMNS = (
    "f.id, f.agent_id, f.content, f.period_start, f.period_end, f.metadata, f.created_at"
)
LESSON_COLUMNS = (
    "l.id, l.agent_id, l.lesson, l.context, l.confidence, l.reinforcement_count, l.created_at,"
    " l.updated_at"
)
TASK_COLUMNS = (
    "t.id, t.short_id, t.agent_id, t.title, t.description, t.status, t.priority, t.assignee,"
    " t.team_id, t.project, t.tags, t.visibility, t.due_at, t.started_at, t.completed_at,"
    " t.metadata, t.created_at, t.updated_at,"
    # Only dependencies this agent can see: another agent's private task id is not shown.
    " ARRAY(SELECT d.depends_on FROM task_dependencies d JOIN tasks dt ON dt.id = d.depends_on"
    " WHERE d.task_id = t.id ORDER BY d.seq) AS depends_on"
)
TASK_ORDER = "t.priority_rank, t.due_at NULLS LAST, t.created_at, t.id"
AGENT_COLUMNS = "a.id, a.name, a.role, a.status, a.config, a.created_at, a.updated_at"

# Storage II: kc knowledge_collections, kg grants, kd documents, sk service_keys,
# o observations, fb model_feedback, lc live_candidates.
COLLECTION_COLUMNS = (
    "kc.id, kc.agent_id AS owner, kc.name, kc.description, kc.visibility, kc.metadata,"
    " kc.created_at, agentbus_collection_permission(kc.id) AS permission,"
    " (SELECT count(*) FROM knowledge_documents kd WHERE kd.collection_id = kc.id)"
    " AS document_count"
)
GRANT_COLUMNS = "kg.collection_id, kg.agent_id, kg.permission, kg.granted_by, kg.granted_at"
DOCUMENT_COLUMNS = (
    "kd.id, kd.collection_id, kd.agent_id, kd.title, kd.content, kd.metadata, kd.chunk_count,"
    " kd.created_at"
)
SERVICE_KEY_COLUMNS = "sk.name, sk.agent_id, sk.version, sk.metadata, sk.created_at, sk.updated_at"
OBSERVATION_COLUMNS = (
    "o.id, o.agent_id, o.session_id, o.kind, o.summary, o.detail, o.tool, o.started_at,"
    " o.ended_at, o.created_at"
)
FEEDBACK_COLUMNS = (
    "fb.id, fb.agent_id, fb.session_id, fb.model, fb.task, fb.self_evaluation, fb.rating,"
    " fb.comment, fb.metadata, fb.created_at, fb.rated_at"
)
CANDIDATE_COLUMNS = (
    "lc.id, lc.agent_id, lc.summary, lc.similar_item_id, lc.similarity, lc.status,"
    " lc.resolved_item_id, lc.metadata, lc.created_at, lc.updated_at"
)


@cache
def _names(cls: type[msgspec.Struct]) -> tuple[str, ...]:
    return cls.__struct_fields__


def _fields(record: Record, cls: type[msgspec.Struct]) -> dict[str, Any]:
    """The record's columns that are fields of ``cls`` (queries may select more)."""
    return {name: record[name] for name in _names(cls)}


def resource(record: Record) -> Resource:
    return Resource(**_fields(record, Resource))


def search_score(row: Record, mode: SearchMode) -> float:
    """A search hit's score from the ranks and raw scores the search functions return, as SQLite
    computes it: ``ts_rank`` (keyword), 1 - cosine distance (vector) or RRF of the ranks."""
    if mode == "keyword":
        return float(row["keyword_score"])
    if mode == "vector":
        return 1.0 - float(row["vector_distance"])
    return rrf_score(row["keyword_rank"], row["vector_rank"])


def item(record: Record) -> MemoryItem:
    return MemoryItem(**_fields(record, MemoryItem))


def category(record: Record) -> Category:
    return Category(**_fields(record, Category))


def entity(record: Record) -> Entity:
    return Entity(**_fields(record, Entity))


def reflection(record: Record) -> Reflection:
    return Reflection(**_fields(record, Reflection))


def lesson(record: Record) -> Lesson:
    return Lesson(**_fields(record, Lesson))


def task(record: Record) -> Task:
    fields = _fields(record, Task)
    fields["tags"] = list(fields["tags"])
    fields["depends_on"] = list(fields["depends_on"])
    return Task(**fields)


def task_event(record: Record) -> TaskEvent:
    return TaskEvent(at=record["at"], kind=record["kind"], by=record["by_agent"],
                     detail=record["detail"])  # fmt: skip


def agent(record: Record) -> AgentRecord:
    return AgentRecord(**_fields(record, AgentRecord))


def team(record: Record, members: Sequence[Record]) -> Team:
    return Team(
        id=record["id"],
        name=record["name"],
        lead=record["lead"],
        status=cast(Any, record["status"]),
        members=[member(m) for m in members],
        metadata=record["metadata"],
        created_at=record["created_at"],
    )


def member(record: Record) -> TeamMember:
    return TeamMember(agent_id=record["agent_id"], role=record["role"],
                      joined_at=record["joined_at"])  # fmt: skip


def collection(record: Record) -> KnowledgeCollection:
    return KnowledgeCollection(**_fields(record, KnowledgeCollection))


def grant(record: Record) -> KnowledgeGrant:
    return KnowledgeGrant(**_fields(record, KnowledgeGrant))


def document(record: Record) -> KnowledgeDocument:
    return KnowledgeDocument(**_fields(record, KnowledgeDocument))


def service_key(record: Record) -> ServiceKeyInfo:
    return ServiceKeyInfo(**_fields(record, ServiceKeyInfo))


def observation(record: Record) -> Observation:
    return Observation(**_fields(record, Observation))


def feedback(record: Record) -> ModelFeedback:
    return ModelFeedback(**_fields(record, ModelFeedback))


def candidate(record: Record) -> LiveCandidate:
    return LiveCandidate(**_fields(record, LiveCandidate))
