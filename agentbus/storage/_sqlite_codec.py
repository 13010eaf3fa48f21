"""How SQLite rows and values are written and read: timestamps, vectors, JSON, row -> model.

Timestamps are ISO-8601 UTC text with microseconds and a ``Z`` (``2024-05-01T12:00:00.000000Z``):
fixed width, so text order is time order, and they round-trip to the same ``datetime``. JSON is
the canonical text from :func:`canonical_json`. Vectors are float32 BLOBs in native byte order
(``ndarray.tobytes()``), which is how ``array('f').tobytes()`` writes them as well.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from ._canonical import parse_json, utc
from ._models import (
    AgentRecord,
    AgentStatus,
    Category,
    Entity,
    Lesson,
    MemoryItem,
    MemoryType,
    Priority,
    Reflection,
    Resource,
    Task,
    TaskEvent,
    TaskStatus,
    TeamMember,
    TeamRole,
    Visibility,
)


def ts(value: datetime) -> str:
    """A timezone-aware datetime as stored text (UTC, microseconds, ``Z``)."""
    return utc(value).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def opt_ts(value: datetime | None) -> str | None:
    return None if value is None else ts(value)


def parse_ts(text: str) -> datetime:
    return datetime.fromisoformat(text[:-1]).replace(tzinfo=UTC)


def opt_parse_ts(text: str | None) -> datetime | None:
    return None if text is None else parse_ts(text)


def vector_blob(vector: npt.NDArray[np.float32]) -> bytes:
    return np.ascontiguousarray(vector, dtype=np.float32).tobytes()


def placeholders(values: Sequence[object]) -> str:
    return ", ".join("?" * len(values))


def visible_sql(alias: str) -> str:
    """The visibility rule as a predicate on ``alias`` (columns agent_id, visibility, team_id).

    Takes two parameters, both the acting agent's id: its own rows, ``family``/``public`` rows,
    and ``team`` rows of active teams it is a member of.
    """
    return (
        f"({alias}.agent_id = ? OR {alias}.visibility IN ('family', 'public')"
        f" OR ({alias}.visibility = 'team' AND {alias}.team_id IN ("
        "SELECT tm.team_id FROM team_members tm JOIN teams tt ON tt.id = tm.team_id"
        " WHERE tm.agent_id = ? AND tt.status = 'active')))"
    )


def visible_branches(alias: str) -> list[str]:
    """The rule of :func:`visible_sql` split into disjoint predicates, one per index (own rows,
    others' ``family``, others' ``public``, others' ``team`` rows of the agent's active teams),
    so that a newest-first listing reads each branch in index order instead of sorting every
    visible row. Each predicate takes the acting agent's id once per ``?``."""
    others = f"{alias}.agent_id != ?"
    return [
        f"{alias}.agent_id = ?",
        f"{alias}.visibility = 'family' AND {others}",
        f"{alias}.visibility = 'public' AND {others}",
        f"{alias}.visibility = 'team' AND {others} AND {alias}.team_id IN ("
        "SELECT tm.team_id FROM team_members tm JOIN teams tt ON tt.id = tm.team_id"
        " WHERE tm.agent_id = ? AND tt.status = 'active')",
    ]


ITEM_COLUMNS = (
    "m.id, m.agent_id, m.summary, m.memory_type, m.visibility, m.team_id, m.resource_id,"
    " m.content_hash, m.significance, m.reinforcement_count, m.last_reinforced_at,"
    " m.happened_at, m.embedding IS NOT NULL, m.metadata, m.created_at, m.updated_at"
)


def item_from_row(row: Sequence[Any]) -> MemoryItem:
    return MemoryItem(
        id=row[0],
        agent_id=row[1],
        summary=row[2],
        memory_type=cast(MemoryType, row[3]),
        visibility=cast(Visibility, row[4]),
        team_id=row[5],
        resource_id=row[6],
        content_hash=row[7],
        significance=row[8],
        reinforcement_count=row[9],
        last_reinforced_at=opt_parse_ts(row[10]),
        happened_at=opt_parse_ts(row[11]),
        has_embedding=bool(row[12]),
        metadata=parse_json(row[13]),
        created_at=parse_ts(row[14]),
        updated_at=parse_ts(row[15]),
    )


RESOURCE_COLUMNS = "id, agent_id, url, modality, caption, metadata, created_at"


def resource_from_row(row: Sequence[Any]) -> Resource:
    return Resource(
        id=row[0],
        agent_id=row[1],
        url=row[2],
        modality=row[3],
        caption=row[4],
        metadata=parse_json(row[5]),
        created_at=parse_ts(row[6]),
    )


CATEGORY_COLUMNS = (
    "c.id, c.agent_id, c.name, c.description,"
    " (SELECT count(*) FROM item_categories ic WHERE ic.category_id = c.id), c.created_at"
)


def category_from_row(row: Sequence[Any]) -> Category:
    return Category(
        id=row[0],
        agent_id=row[1],
        name=row[2],
        description=row[3],
        item_count=row[4],
        created_at=parse_ts(row[5]),
    )


ENTITY_COLUMNS = (
    "e.id, e.agent_id, e.name, e.entity_type, e.profile,"
    " (SELECT count(*) FROM item_entities ie WHERE ie.entity_id = e.id),"
    " e.created_at, e.updated_at"
)


def entity_from_row(row: Sequence[Any]) -> Entity:
    return Entity(
        id=row[0],
        agent_id=row[1],
        name=row[2],
        entity_type=row[3],
        profile=row[4],
        memory_count=row[5],
        created_at=parse_ts(row[6]),
        updated_at=parse_ts(row[7]),
    )


REFLECTION_COLUMNS = "id, agent_id, content, period_start, period_end, metadata, created_at"


def reflection_from_row(row: Sequence[Any]) -> Reflection:
    return Reflection(
        id=row[0],
        agent_id=row[1],
        content=row[2],
        period_start=opt_parse_ts(row[3]),
        period_end=opt_parse_ts(row[4]),
        metadata=parse_json(row[5]),
        created_at=parse_ts(row[6]),
    )


LESSON_COLUMNS = (
    "l.id, l.agent_id, l.lesson, l.context, l.confidence, l.reinforcement_count,"
    " l.created_at, l.updated_at"
)


def lesson_from_row(row: Sequence[Any]) -> Lesson:
    return Lesson(
        id=row[0],
        agent_id=row[1],
        lesson=row[2],
        context=row[3],
        confidence=row[4],
        reinforcement_count=row[5],
        created_at=parse_ts(row[6]),
        updated_at=parse_ts(row[7]),
    )


TASK_COLUMNS = (
    "t.id, t.short_id, t.agent_id, t.title, t.description, t.status, t.priority, t.assignee,"
    " t.team_id, t.project, t.tags, t.visibility, t.due_at, t.started_at, t.completed_at,"
    " t.metadata, (SELECT json_group_array(d.depends_on) FROM (SELECT td.depends_on FROM"
    " task_dependencies td JOIN tasks dt ON dt.id = td.depends_on"
    f" WHERE td.task_id = t.id AND {visible_sql('dt')} ORDER BY td.dep_key) d),"
    " t.created_at, t.updated_at"
)
"""A task's columns for :func:`task_from_row`; ``depends_on`` lists only the dependencies the
acting agent can see (another agent's private task is never named), so the columns take two
parameters, both the acting agent's id, before any of the query's own."""


def task_from_row(row: Sequence[Any]) -> Task:
    return Task(
        id=row[0],
        short_id=row[1],
        agent_id=row[2],
        title=row[3],
        description=row[4],
        status=cast(TaskStatus, row[5]),
        priority=cast(Priority, row[6]),
        assignee=row[7],
        team_id=row[8],
        project=row[9],
        tags=_json_list(row[10]),
        visibility=cast(Visibility, row[11]),
        due_at=opt_parse_ts(row[12]),
        started_at=opt_parse_ts(row[13]),
        completed_at=opt_parse_ts(row[14]),
        metadata=parse_json(row[15]),
        depends_on=_json_list(row[16]),
        created_at=parse_ts(row[17]),
        updated_at=parse_ts(row[18]),
    )


def event_from_row(row: Sequence[Any]) -> TaskEvent:
    return TaskEvent(at=parse_ts(row[0]), kind=row[1], by=row[2], detail=parse_json(row[3]))


def member_from_row(row: Sequence[Any]) -> TeamMember:
    return TeamMember(agent_id=row[0], role=cast(TeamRole, row[1]), joined_at=parse_ts(row[2]))


AGENT_COLUMNS = "id, name, role, status, config, created_at, updated_at"


def agent_from_row(row: Sequence[Any]) -> AgentRecord:
    return AgentRecord(
        id=row[0],
        name=row[1],
        role=row[2],
        status=cast(AgentStatus, row[3]),
        config=parse_json(row[4]),
        created_at=parse_ts(row[5]),
        updated_at=parse_ts(row[6]),
    )


def _json_list(text: str | None) -> list[str]:
    if not text:
        return []
    parsed = json.loads(text)
    return [str(value) for value in parsed]


def one(conn: sqlite3.Connection, sql: str, params: Sequence[object] = ()) -> Any:
    """The first column of the first row (None when there is no row)."""
    row = conn.execute(sql, params).fetchone()
    return None if row is None else row[0]
