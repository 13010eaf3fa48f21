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
    Lesson,
    MemoryItem,
    Reflection,
    Resource,
    Task,
    TaskEvent,
    Team,
    TeamMember,
)

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


@cache
def _names(cls: type[msgspec.Struct]) -> tuple[str, ...]:
    return cls.__struct_fields__


def _fields(record: Record, cls: type[msgspec.Struct]) -> dict[str, Any]:
    """The record's columns that are fields of ``cls`` (queries may select more)."""
    return {name: record[name] for name in _names(cls)}


def resource(record: Record) -> Resource:
    return Resource(**_fields(record, Resource))


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
