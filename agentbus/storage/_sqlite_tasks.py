"""SQLite task store: tasks with dependencies, a ready queue, history and fenced writes.

Who may do what (as on PostgreSQL): an agent reads every task it can see (its own, ``family``/
``public``, its active teams' ``team`` tasks); it changes one — update, hand-off, dependencies —
only as its owner (creator) or its current assignee, and deletes only its own. A task it cannot
see is NotFoundError; one it sees but may not change (or delete) is PermissionDeniedError. A
task's ``depends_on`` lists only the dependencies the reading agent can see. Ids may be full ids
or short ids everywhere (``AmbiguousIdError`` when a short id matches several visible tasks).
``update_task(assignee=UNASSIGNED)`` clears the assignee.

Order of ``list_tasks``/``ready_tasks``/``get_tasks_by_project``: priority rank (urgent first,
an integer column, never text), then ``due_at`` (nulls last), ``created_at``, ``id``, all
ascending. ``due_after``/``due_before`` select ``due_after <= due_at < due_before``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from ._canonical import (
    canonical_json,
    check_choice,
    check_optional_text,
    check_text,
    now_utc,
    optional_utc,
    short_id,
)
from ._errors import NotFoundError, PermissionDeniedError, ValidationError
from ._models import (
    MAX_NAME_CHARS,
    MAX_TEXT_CHARS,
    PRIORITIES,
    PRIORITY_RANK,
    TASK_STATUSES,
    UNASSIGNED,
    VISIBILITIES,
    Priority,
    Task,
    TaskEvent,
    TaskStatus,
    Visibility,
)
from ._rules import (
    check_agent_ref,
    check_limit,
    check_offset,
    check_optional_ref,
    check_tags,
    new_id,
)
from ._sqlite_codec import (
    TASK_COLUMNS,
    event_from_row,
    opt_ts,
    placeholders,
    task_from_row,
    ts,
    visible_sql,
)
from ._sqlite_search import fts_query
from ._sqlite_task_deps import OPEN_SQL, add_event, resolve_task, settle
from ._sqlite_task_edits import TaskEdits, canonical_list, fetch_task

ORDER = " ORDER BY t.priority_rank, t.due_at IS NULL, t.due_at, t.created_at, t.id"


class SQLiteTaskStore(TaskEdits):
    """One agent's view of the tasks in SQLite."""

    async def create_task(
        self, title: str, *, description: str | None = None, priority: Priority = "normal",
        assignee: str | None = None, team_id: str | None = None, project: str | None = None,
        tags: Sequence[str] = (), visibility: Visibility = "private",
        due_at: datetime | None = None, metadata: Mapping[str, Any] | None = None,
        depends_on: Sequence[str] = (), id: str | None = None,
    ) -> Task:  # fmt: skip
        """A task with open dependencies starts ``blocked``, else ``pending``.

        Raises: ValidationError (also ``id`` of a task that exists), NotFoundError (a
        dependency or team not visible).
        """
        task_id = new_id(id)
        priority = check_choice("priority", priority, PRIORITIES)
        visibility = check_choice("visibility", visibility, VISIBILITIES)
        if visibility == "team" and team_id is None:
            raise ValidationError('visibility "team" needs a team_id')
        team = check_optional_ref("team_id", team_id)
        values: dict[str, object] = {
            "id": task_id,
            "short_id": short_id(task_id),
            "agent_id": self._agent,
            "title": check_text("title", title, max_chars=MAX_NAME_CHARS),
            "description": check_optional_text(
                "description", description, max_chars=MAX_TEXT_CHARS
            ),
            "priority": priority,
            "priority_rank": PRIORITY_RANK[priority],
            "assignee": None if assignee is None else check_agent_ref("assignee", assignee),
            "team_id": team,
            "project": check_optional_text("project", project, max_chars=MAX_NAME_CHARS),
            "tags": canonical_list(check_tags(tags)),
            "visibility": visibility,
            "due_at": opt_ts(optional_utc(due_at)),
            "metadata": canonical_json(metadata),
        }
        if isinstance(depends_on, str):
            raise ValidationError("depends_on must be a sequence of task ids, not one string")

        def write(conn: sqlite3.Connection) -> Task:
            now = ts(now_utc())
            self._require_team(conn, team)
            deps = list(dict.fromkeys(self._resolve(conn, ref, "depends_on") for ref in depends_on))
            status: TaskStatus = "blocked" if _any_open(conn, deps) else "pending"
            row = {**values, "status": status, "created_at": now, "updated_at": now}
            conn.execute(
                f"INSERT INTO tasks ({', '.join(row)}) VALUES ({placeholders(list(row))})",
                list(row.values()),
            )
            conn.executemany(
                "INSERT INTO task_dependencies (task_id, depends_on) VALUES (?, ?)",
                [(task_id, dep) for dep in deps],
            )
            detail = {"status": status, "priority": priority, "assignee": values["assignee"]}
            add_event(conn, task_id, "created", self._agent, detail, now)
            return fetch_task(conn, self._agent, task_id)

        return await self._db.write(write)

    async def get_task(self, task_id: str) -> Task | None:
        """By full id or short id (``AmbiguousIdError`` when a short id matches several)."""

        def read(conn: sqlite3.Connection) -> Task | None:
            found = resolve_task(conn, self._agent, task_id)
            return None if found is None else fetch_task(conn, self._agent, found)

        return await self._db.read(read)

    async def delete_task(self, task_id: str) -> bool:
        """Delete one of this agent's own tasks (its dependency links and history go with it;
        tasks it blocked are settled); True when deleted.

        Raises: NotFoundError (not visible, e.g. deleted already), PermissionDeniedError
        (visible but another agent's, even when this agent is its assignee).
        """

        def write(conn: sqlite3.Connection) -> bool:
            found = self._resolve(conn, task_id)
            if not conn.execute(
                "SELECT 1 FROM tasks WHERE id = ? AND agent_id = ?", (found, self._agent)
            ).fetchone():
                raise PermissionDeniedError(
                    f"task {task_id} can be deleted by its owner only, not by agent {self._agent!r}"
                )
            dependents = [
                row[0]
                for row in conn.execute(
                    "SELECT task_id FROM task_dependencies WHERE depends_on = ?", (found,)
                )
            ]
            conn.execute("DELETE FROM tasks WHERE id = ?", (found,))
            now = ts(now_utc())
            for dependent in dependents:
                settle(conn, dependent, self._agent, now)
            return True

        return await self._db.write(write)

    async def list_tasks(
        self, *, status: TaskStatus | Sequence[TaskStatus] | None = None,
        priority: Priority | None = None, assignee: str | None = None,
        agent_id: str | None = None, team_id: str | None = None, project: str | None = None,
        tags: Sequence[str] = (), due_before: datetime | None = None,
        due_after: datetime | None = None, limit: int = 50, offset: int = 0,
    ) -> list[Task]:  # fmt: skip
        """Visible tasks, filtered; ``assignee=UNASSIGNED`` lists unassigned tasks; ``tags``
        must all be present; ``due_after <= due_at < due_before``."""
        check_limit(limit)
        check_offset(offset)
        where: list[str] = []
        params: list[Any] = []
        if status is not None:
            statuses = [status] if isinstance(status, str) else list(status)
            checked = [check_choice("status", value, TASK_STATUSES) for value in statuses]
            where.append(f"t.status IN ({placeholders(checked)})")
            params += checked
        if priority is not None:
            where.append("t.priority = ?")
            params.append(check_choice("priority", priority, PRIORITIES))
        if assignee == UNASSIGNED:
            where.append("t.assignee IS NULL")
        elif assignee is not None:
            where.append("t.assignee = ?")
            params.append(check_agent_ref("assignee", assignee))
        filters = (
            ("agent_id", None if agent_id is None else check_agent_ref("agent_id", agent_id)),
            ("team_id", check_optional_ref("team_id", team_id)),
            ("project", check_optional_text("project", project, max_chars=MAX_NAME_CHARS)),
        )
        for column, value in filters:
            if value is not None:
                where.append(f"t.{column} = ?")
                params.append(value)
        for tag in check_tags(tags):
            where.append("EXISTS (SELECT 1 FROM json_each(t.tags) WHERE json_each.value = ?)")
            params.append(tag)
        if due_before is not None:
            where.append("t.due_at < ?")
            params.append(opt_ts(optional_utc(due_before)))
        if due_after is not None:
            where.append("t.due_at >= ?")
            params.append(opt_ts(optional_utc(due_after)))
        return await self._select(where, params, limit, offset)

    async def _select(
        self, where: list[str], params: list[Any], limit: int, offset: int = 0
    ) -> list[Task]:
        clause = "".join(f" AND {condition}" for condition in where)

        def read(conn: sqlite3.Connection) -> list[Task]:
            rows = conn.execute(
                f"SELECT {TASK_COLUMNS} FROM tasks t WHERE {visible_sql('t')}{clause}{ORDER}"
                " LIMIT ? OFFSET ?",
                [self._agent, self._agent, self._agent, self._agent, *params, limit, offset],
            )
            return [task_from_row(row) for row in rows]

        return await self._db.read(read)

    async def search_tasks(self, query: str, *, limit: int = 20) -> list[Task]:
        """Visible tasks whose title or description matches every word of ``query`` (the
        keyword rule of memory search), best bm25 first."""
        check_text("query", query, max_chars=MAX_TEXT_CHARS, allow_empty=True)
        check_limit(limit)
        match = fts_query(query)
        if match is None:
            return []

        def read(conn: sqlite3.Connection) -> list[Task]:
            rows = conn.execute(
                f"SELECT {TASK_COLUMNS} FROM tasks_fts"
                " JOIN tasks t ON t.rowid_key = tasks_fts.rowid"
                f" WHERE tasks_fts MATCH ? AND {visible_sql('t')}"
                " ORDER BY bm25(tasks_fts), t.id LIMIT ?",
                (self._agent, self._agent, match, self._agent, self._agent, limit),
            )
            return [task_from_row(row) for row in rows]

        return await self._db.read(read)

    async def get_tasks_by_project(self, project: str, *, limit: int = 200) -> list[Task]:
        check_text("project", project, max_chars=MAX_NAME_CHARS)
        check_limit(limit)
        return await self._select(["t.project = ?"], [project], limit)

    async def ready_tasks(self, *, limit: int = 50) -> list[Task]:
        """Visible pending tasks with no open dependency, in priority order."""
        check_limit(limit)
        ready = (
            "t.status = 'pending' AND NOT EXISTS (SELECT 1 FROM task_dependencies d"
            " JOIN tasks dt ON dt.id = d.depends_on"
            f" WHERE d.task_id = t.id AND dt.status IN {OPEN_SQL})"
        )
        return await self._select([ready], [], limit)

    async def task_history(self, task_id: str) -> list[TaskEvent]:
        """The task's events, oldest first. Raises: NotFoundError for a task that is not
        visible (like every call naming a task)."""

        def read(conn: sqlite3.Connection) -> list[TaskEvent]:
            found = resolve_task(conn, self._agent, task_id)
            if found is None:
                raise NotFoundError(f"task {task_id} not found")
            rows = conn.execute(
                "SELECT at, kind, by_agent, detail FROM task_events WHERE task_id = ?"
                " ORDER BY event_key",
                (found,),
            )
            return [event_from_row(row) for row in rows]

        return await self._db.read(read)


def _any_open(conn: sqlite3.Connection, task_ids: list[str]) -> bool:
    if not task_ids:
        return False
    return bool(
        conn.execute(
            f"SELECT 1 FROM tasks WHERE id IN ({placeholders(task_ids)}) AND status IN {OPEN_SQL}",
            task_ids,
        ).fetchone()
    )
