"""Tasks on PostgreSQL: create, read (full or short id), update (merge, stamps, fencing),
delete, list, search. Dependencies, the ready queue, hand-off and history are in
``_pg_task_graph``.

Who may do what: every agent sees its own tasks, ``family``/``public`` ones and ``team`` ones of
its active teams; the owner (creator) or the current assignee may change a task — update, hand
off, add or remove its dependencies — so work handed off can be moved along by whoever has it;
only the owner deletes. A task the agent cannot see is "not found" (NotFoundError); one it sees
but may not change is PermissionDeniedError.
"""

from __future__ import annotations

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
)
from ._errors import NotFoundError, PermissionDeniedError, ValidationError
from ._fence import Fence
from ._models import (
    MAX_NAME_CHARS,
    MAX_TEXT_CHARS,
    OPEN_STATUSES,
    PRIORITIES,
    TASK_STATUSES,
    UNASSIGNED,
    VISIBILITIES,
    Priority,
    Task,
    TaskStatus,
    Visibility,
)
from ._pg_checks import (
    agent_ref,
    new_id,
    optional_ref,
)
from ._pg_core import Conn, Scope
from ._pg_rows import TASK_COLUMNS, TASK_ORDER, task as task_row
from ._pg_task_graph import VISIBLE_TASK, TaskGraph, fetch_task, record_event, resolve
from ._rules import (
    check_fence,
    check_limit,
    check_offset,
    check_tags,
    fence_scope,
    merge_metadata,
    stale_write,
    status_stamps,
)

_INSERT_TASK = """
INSERT INTO tasks (id, agent_id, title, description, status, priority, assignee, team_id,
                   project, tags, visibility, due_at, metadata, created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14)
"""

_LIST = f"""
SELECT {TASK_COLUMNS} FROM tasks t
WHERE {VISIBLE_TASK}
  AND ($2::text[] IS NULL OR t.status = ANY ($2))
  AND ($3::text IS NULL OR t.priority = $3)
  AND (NOT $4 OR t.assignee IS NULL)
  AND ($5::text IS NULL OR t.assignee = $5)
  AND ($6::text IS NULL OR t.agent_id = $6)
  AND ($7::text IS NULL OR t.team_id = $7)
  AND ($8::text IS NULL OR t.project = $8)
  AND t.tags @> $9::text[]
  AND ($10::timestamptz IS NULL OR t.due_at < $10)
  AND ($11::timestamptz IS NULL OR t.due_at >= $11)
ORDER BY {TASK_ORDER}
LIMIT $12 OFFSET $13
"""

# Fencing: the newest token seen per (scope, name) — scope the agent, or '~family' for a
# family-wide fence (any agent reads and advances those rows, migration 0009); an older token
# refuses the whole write.
_FENCE = """
INSERT INTO fences AS f (agent_id, name, token, updated_at) VALUES ($1, $2, $3, $4)
ON CONFLICT (agent_id, name) DO UPDATE SET token = EXCLUDED.token, updated_at = EXCLUDED.updated_at
    WHERE f.token <= EXCLUDED.token
RETURNING token
"""


class PgTasks(TaskGraph):
    """:class:`~agentbus.storage.TaskStore` for one agent (from ``PgAdapter.for_agent``)."""

    def __init__(self, scope: Scope) -> None:
        self._scope = scope
        self._agent = scope.agent

    async def create_task(
        self, title: str, *, description: str | None = None, priority: Priority = "normal",
        assignee: str | None = None, team_id: str | None = None, project: str | None = None,
        tags: Sequence[str] = (), visibility: Visibility = "private",
        due_at: datetime | None = None, metadata: Mapping[str, Any] | None = None,
        depends_on: Sequence[str] = (), id: str | None = None,
    ) -> Task:  # fmt: skip
        """A task with open dependencies starts ``blocked``, else ``pending``.

        Raises: ValidationError, NotFoundError (a dependency or team this agent cannot see).
        """
        visibility = check_choice("visibility", visibility, VISIBILITIES)
        team_id = optional_ref(team_id, "team_id")
        if visibility == "team" and team_id is None:
            raise ValidationError("visibility 'team' needs a team_id")
        values = [
            new_id(id), self._agent, check_text("title", title, max_chars=MAX_NAME_CHARS),
            check_optional_text("description", description, max_chars=MAX_TEXT_CHARS),
            None, check_choice("priority", priority, PRIORITIES),
            None if assignee is None else agent_ref(assignee, "assignee"), team_id,
            check_optional_text("project", project, max_chars=MAX_NAME_CHARS),
            check_tags(tags), visibility, optional_utc(due_at), canonical_json(metadata),
            now_utc(),
        ]  # fmt: skip
        if isinstance(depends_on, str):
            raise ValidationError("depends_on must be a sequence of task ids, not one string")
        async with self._scope.tx("creating a task") as conn:
            if team_id is not None:
                await _require_team(conn, team_id, self._agent)
            dependencies: list[str] = []
            for dependency in depends_on:
                resolved = await resolve(conn, self._agent, dependency, "depends_on")
                if resolved not in dependencies:
                    dependencies.append(resolved)
            blocked = await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM tasks WHERE id = ANY ($1) AND status = ANY ($2))",
                dependencies, sorted(OPEN_STATUSES),
            )  # fmt: skip
            values[4] = "blocked" if blocked else "pending"
            await conn.execute(_INSERT_TASK, *values)
            task_id, now = values[0], values[-1]
            if dependencies:
                await conn.execute(
                    "INSERT INTO task_dependencies (task_id, depends_on, agent_id, created_at)"
                    " SELECT $1, u.d, $2, $3 FROM unnest($4::text[]) WITH ORDINALITY AS u(d, n)"
                    " ORDER BY u.n",
                    task_id, self._agent, now, dependencies,
                )  # fmt: skip
            detail = {"status": values[4], "priority": values[5], "assignee": values[6]}
            await record_event(conn, str(task_id), now, "created", self._agent, detail)
            return await fetch_task(conn, self._agent, str(task_id))

    async def get_task(self, task_id: str) -> Task | None:
        """By full id or short id. Raises: AmbiguousIdError (several visible tasks match)."""
        async with self._scope.tx("reading a task") as conn:
            try:
                resolved = await resolve(conn, self._agent, task_id)
            except NotFoundError:
                return None
            return await fetch_task(conn, self._agent, resolved)

    async def update_task(
        self, task_id: str, *, title: str | None = None, description: str | None = None,
        status: TaskStatus | None = None, priority: Priority | None = None,
        assignee: str | None = None, project: str | None = None,
        tags: Sequence[str] | None = None, due_at: datetime | None = None,
        metadata: Mapping[str, Any] | None = None, fence: Fence | tuple[str, int] | None = None,
    ) -> Task:  # fmt: skip
        """Change the given fields (None: unchanged; ``assignee=UNASSIGNED`` unassigns).

        ``metadata`` is merged (keys set to None are removed). ``pending`` while a dependency
        is open is stored as ``blocked``. ``updated_at`` moves when a field other than the
        status and the assignee is given, or when one of those changes. ``fence`` (a
        :class:`Fence`, e.g. ``lease.fence``, or ``(name, token)`` for this agent's scope)
        refuses the write when a newer token was seen for its name in its scope — this agent's,
        or the family's (migration 0009) — in the same transaction.

        Raises: NotFoundError (not visible), PermissionDeniedError (visible, but neither owned
        nor assigned), StaleWriteError, ValidationError.
        """
        changes: dict[str, Any] = {}
        if title is not None:
            changes["title"] = check_text("title", title, max_chars=MAX_NAME_CHARS)
        if description is not None:
            changes["description"] = check_text(
                "description", description, max_chars=MAX_TEXT_CHARS
            )
        if priority is not None:
            changes["priority"] = check_choice("priority", priority, PRIORITIES)
        if assignee is not None:
            changes["assignee"] = (
                None if assignee == UNASSIGNED else agent_ref(assignee, "assignee")
            )
        if project is not None:
            changes["project"] = check_text("project", project, max_chars=MAX_NAME_CHARS)
        if tags is not None:
            changes["tags"] = check_tags(tags)
        if due_at is not None:
            changes["due_at"] = optional_utc(due_at)
        patch = None if metadata is None else canonical_json(metadata)  # validates
        new_status = None if status is None else check_choice("status", status, TASK_STATUSES)
        checked_fence = None if fence is None else check_fence(fence)
        now = now_utc()
        async with self._scope.tx("updating a task") as conn:
            if checked_fence is not None:
                await self._fence(conn, checked_fence, now)
            current = await self._writable(conn, task_id)
            if patch is not None:
                assert metadata is not None
                changes["metadata"] = merge_metadata(current["metadata"], metadata)
            if new_status is not None:
                if new_status == "pending" and await conn.fetchval(
                    "SELECT agentbus_has_open_dependency($1)", current["id"]
                ):
                    new_status = "blocked"
                if new_status != current["status"]:
                    changes["status"] = new_status
                    changes["started_at"], changes["completed_at"] = status_stamps(
                        current["status"], new_status, now, current["started_at"],
                        current["completed_at"],
                    )  # fmt: skip
            if "assignee" in changes and changes["assignee"] == current["assignee"]:
                del changes["assignee"]
            if changes:  # nothing to change (no fields, same status or assignee): no write
                await self._apply(conn, current, changes, now)
            return await fetch_task(conn, self._agent, current["id"])

    async def _apply(
        self, conn: Conn, current: Any, changes: dict[str, Any], now: datetime
    ) -> None:
        names = list(changes)
        assignments = ", ".join(f"{name} = ${i}" for i, name in enumerate(names, start=3))
        await conn.execute(
            f"UPDATE tasks SET updated_at = $2, {assignments} WHERE id = $1",
            current["id"], now, *(changes[name] for name in names),
        )  # fmt: skip
        task_id = current["id"]
        if "status" in changes:
            detail = {"from": current["status"], "to": changes["status"]}
            await record_event(conn, task_id, now, "status", self._agent, detail)
        if "assignee" in changes:
            detail = {"from": current["assignee"], "to": changes["assignee"]}
            await record_event(conn, task_id, now, "assigned", self._agent, detail)
        other = sorted(set(names) - {"status", "assignee", "started_at", "completed_at"})
        if other:
            await record_event(conn, task_id, now, "updated", self._agent, {"fields": other})

    async def _fence(self, conn: Conn, fence: Fence, now: datetime) -> None:
        scope = fence_scope(fence, self._agent)
        if await conn.fetchval(_FENCE, scope, fence.name, fence.token, now) is None:
            raise stale_write(fence, self._agent)

    async def delete_task(self, task_id: str) -> bool:
        """Delete one of this agent's tasks (True); dependents it blocked are re-evaluated.

        Raises: NotFoundError (not visible), PermissionDeniedError (visible but another agent's,
        even when this agent is its assignee).
        """
        async with self._scope.tx("deleting a task") as conn:
            resolved = await resolve(conn, self._agent, task_id)
            status = await conn.execute(
                "DELETE FROM tasks WHERE id = $1 AND agent_id = $2", resolved, self._agent
            )
        if status == "DELETE 0":
            raise PermissionDeniedError(
                f"task {task_id} can be deleted by its owner only, not by agent {self._agent!r}"
            )
        return True

    async def list_tasks(
        self, *, status: TaskStatus | Sequence[TaskStatus] | None = None,
        priority: Priority | None = None, assignee: str | None = None,
        agent_id: str | None = None, team_id: str | None = None, project: str | None = None,
        tags: Sequence[str] = (), due_before: datetime | None = None,
        due_after: datetime | None = None, limit: int = 50, offset: int = 0,
    ) -> list[Task]:  # fmt: skip
        """Visible tasks in task order: priority (urgent first), due (nulls last), created, id.

        ``assignee=UNASSIGNED`` lists unassigned tasks; every tag must be present;
        ``due_after <= due_at < due_before`` (a half-open range; undated tasks are in none).
        """
        statuses = None
        if status is not None:
            given = [status] if isinstance(status, str) else list(status)
            statuses = [check_choice("status", s, TASK_STATUSES) for s in given]
        unassigned = assignee == UNASSIGNED
        args = (
            self._agent, statuses,
            None if priority is None else check_choice("priority", priority, PRIORITIES),
            unassigned,
            None if assignee is None or unassigned else agent_ref(assignee, "assignee"),
            None if agent_id is None else agent_ref(agent_id, "agent_id"),
            optional_ref(team_id, "team_id"),
            check_optional_text("project", project, max_chars=MAX_NAME_CHARS),
            check_tags(tags), optional_utc(due_before), optional_utc(due_after),
            check_limit(limit), check_offset(offset),
        )  # fmt: skip
        async with self._scope.tx("listing tasks") as conn:
            rows = await conn.fetch(_LIST, *args)
        return [task_row(row) for row in rows]

    async def search_tasks(self, query: str, *, limit: int = 20) -> list[Task]:
        """Visible tasks whose title or description match every term (PostgreSQL ``english``
        stemming), best ``ts_rank`` first, ties by id."""
        query = check_text("query", query, max_chars=MAX_TEXT_CHARS, allow_empty=True)
        async with self._scope.tx("searching tasks") as conn:
            rows = await conn.fetch(
                f"SELECT {TASK_COLUMNS} FROM agentbus_search_tasks($2, $3) s"
                f" JOIN tasks t ON t.id = s.id WHERE {VISIBLE_TASK}"
                " ORDER BY s.score DESC, s.id",
                self._agent, query, check_limit(limit),
            )  # fmt: skip
        return [task_row(row) for row in rows]

    async def get_tasks_by_project(self, project: str, *, limit: int = 200) -> list[Task]:
        return await self.list_tasks(project=project, limit=limit)


async def _require_team(conn: Conn, team_id: str, agent: str) -> None:
    if not await conn.fetchval("SELECT agentbus_is_team_member($1)", team_id):
        raise NotFoundError(f"team {team_id} not found, or agent {agent!r} is not an active member")
