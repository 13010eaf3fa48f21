"""Tasks on PostgreSQL, part two: id resolution, dependencies (a DAG), the ready queue,
hand-off, history, and the rows' shared helpers.

The graph is kept honest by the database (migration 0002), so raw SQL cannot break it either:
a BEFORE INSERT trigger on ``task_dependencies`` walks the graph with a recursive CTE under an
advisory lock and refuses a cycle (``DependencyCycleError``), and AFTER triggers keep every
pending/blocked task ``blocked`` exactly while one of its dependencies is open — for the
dependents of other agents too, which this agent's row-level security would not let it update.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from ._canonical import check_optional_text, now_utc
from ._errors import AmbiguousIdError, NotFoundError, PermissionDeniedError
from ._models import MAX_TEXT_CHARS, Task, TaskEvent
from ._pg_checks import affected, agent_ref, ref_id
from ._pg_core import Conn, Scope
from ._pg_rows import TASK_COLUMNS, TASK_ORDER, task as task_row, task_event as event_row
from ._rules import check_limit, short_task_ref

# The lock agentbus_check_dependency_cycle() takes (migration 0002). Taken first, before any row
# lock: taking it after locking the task would deadlock against an opposite edge being added.
DEPENDENCY_LOCK = 7305950283400911617

# What the select policy allows, as an explicit index-friendly predicate ($1 = the agent).
VISIBLE_TASK = """(t.agent_id = $1 OR t.visibility IN ('family', 'public')
    OR (t.visibility = 'team' AND t.team_id = ANY ((SELECT agentbus_my_teams())::text[])))"""


class TaskGraph:
    _scope: Scope
    _agent: str

    async def add_dependency(self, task_id: str, depends_on: str) -> Task:
        """Make ``task_id`` wait for ``depends_on`` (idempotent); an open dependency blocks a
        pending task. A new dependency is an ``updated`` event (``fields: ["depends_on"]``).

        Raises: NotFoundError (either task invisible), PermissionDeniedError (``task_id``
        neither owned by nor assigned to this agent), DependencyCycleError.
        """
        async with self._scope.tx("adding a task dependency") as conn:
            await conn.execute("SELECT pg_advisory_xact_lock($1)", DEPENDENCY_LOCK)
            task = await self._writable(conn, task_id)
            dependency = await resolve(conn, self._agent, depends_on, "depends_on")
            now = now_utc()
            status = await conn.execute(
                "INSERT INTO task_dependencies (task_id, depends_on, agent_id, created_at)"
                " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                task["id"], dependency, self._agent, now,
            )  # fmt: skip
            if affected(status):
                await self._dependencies_changed(conn, task["id"], now)
            return await fetch_task(conn, self._agent, task["id"])

    async def remove_dependency(self, task_id: str, depends_on: str) -> Task:
        """Drop the dependency (no-op if absent); a blocked task without open ones is pending.

        Raises: NotFoundError (either task invisible), PermissionDeniedError (``task_id``
        neither owned by nor assigned to this agent).
        """
        async with self._scope.tx("removing a task dependency") as conn:
            task = await self._writable(conn, task_id)
            dependency = await resolve(conn, self._agent, depends_on, "depends_on")
            now = now_utc()
            status = await conn.execute(
                "DELETE FROM task_dependencies WHERE task_id = $1 AND depends_on = $2",
                task["id"], dependency,
            )  # fmt: skip
            if affected(status):
                await self._dependencies_changed(conn, task["id"], now)
            return await fetch_task(conn, self._agent, task["id"])

    async def _dependencies_changed(self, conn: Conn, task_id: str, now: Any) -> None:
        # The status trigger (migration 0002) may have stamped a later clock_timestamp().
        await conn.execute(
            "UPDATE tasks SET updated_at = greatest(updated_at, $2) WHERE id = $1", task_id, now
        )
        await record_event(conn, task_id, now, "updated", self._agent, {"fields": ["depends_on"]})

    async def ready_tasks(self, *, limit: int = 50) -> list[Task]:
        """Visible pending tasks with no open dependency, in task order (priority first)."""
        async with self._scope.tx("listing ready tasks") as conn:
            rows = await conn.fetch(
                f"SELECT {TASK_COLUMNS} FROM tasks t WHERE {VISIBLE_TASK}"
                " AND t.status = 'pending' AND NOT agentbus_has_open_dependency(t.id)"
                f" ORDER BY {TASK_ORDER} LIMIT $2",
                self._agent, check_limit(limit),
            )  # fmt: skip
        return [task_row(row) for row in rows]

    async def handoff_task(self, task_id: str, to_agent: str, *, note: str | None = None) -> Task:
        """Assign the task to ``to_agent``; the history records from whom, to whom and why.

        Raises: NotFoundError (not visible), PermissionDeniedError (visible, but this agent
        neither owns the task nor is its assignee).
        """
        to_agent = agent_ref(to_agent, "to_agent")
        note = check_optional_text("note", note, max_chars=MAX_TEXT_CHARS)
        now = now_utc()
        async with self._scope.tx("handing off a task") as conn:
            task = await self._writable(conn, task_id)
            await conn.execute(
                "UPDATE tasks SET assignee = $2, updated_at = $3 WHERE id = $1",
                task["id"], to_agent, now,
            )  # fmt: skip
            detail: dict[str, Any] = {"from": task["assignee"], "to": to_agent}
            if note is not None:
                detail["note"] = note
            await record_event(conn, task["id"], now, "handoff", self._agent, detail)
            return await fetch_task(conn, self._agent, task["id"])

    async def task_history(self, task_id: str) -> list[TaskEvent]:
        """The task's events, oldest first. Raises: NotFoundError for an invisible task."""
        async with self._scope.tx("reading a task's history") as conn:
            resolved = await resolve(conn, self._agent, task_id)
            rows = await conn.fetch(
                "SELECT at, kind, by_agent, detail FROM task_events WHERE task_id = $1"
                " ORDER BY at, id",
                resolved,
            )
        return [event_row(row) for row in rows]

    async def _writable(self, conn: Conn, task_id: str) -> asyncpg.Record:
        """Lock and return a task this agent may change: visible (else NotFoundError), and owned
        or assigned (else PermissionDeniedError)."""
        resolved = await resolve(conn, self._agent, task_id)
        # FOR NO KEY UPDATE also applies the update policy: the owner or the assignee only.
        row = await conn.fetchrow(
            "SELECT t.id, t.agent_id, t.status, t.assignee, t.metadata, t.started_at,"
            " t.completed_at FROM tasks t WHERE t.id = $1 AND $2 IN (t.agent_id, t.assignee)"
            " FOR NO KEY UPDATE",
            resolved, self._agent,
        )  # fmt: skip
        if row is None:
            raise PermissionDeniedError(
                f"task {task_id} can be changed by its owner or its assignee only, not by agent "
                f"{self._agent!r}"
            )
        return row


async def resolve(conn: Conn, agent: str, task_id: str, field: str = "task_id") -> str:
    """The full id of a visible task given its id or its 8-hex-digit short id.

    Raises: NotFoundError, ValidationError (a malformed id, see ``_rules.check_ref``),
    AmbiguousIdError (a short id matching several visible tasks).
    """
    task_id = ref_id(task_id, field)
    short = short_task_ref(task_id)
    rows = await conn.fetch(
        f"SELECT t.id FROM tasks t WHERE (t.id = $2 OR t.short_id = $3) AND {VISIBLE_TASK}"
        " ORDER BY t.id = $2 DESC, t.id LIMIT 3",
        agent, task_id, short,
    )  # fmt: skip
    if not rows:
        raise NotFoundError(f"task {task_id} not found")
    if rows[0]["id"] == task_id or len(rows) == 1:
        return str(rows[0]["id"])
    raise AmbiguousIdError(
        f"short id {task_id} matches {len(rows) if len(rows) < 3 else 'several'} tasks: "
        f"{', '.join(r['id'] for r in rows)}; use the full id"
    )


async def fetch_task(conn: Conn, agent: str, task_id: str) -> Task:
    row = await conn.fetchrow(
        f"SELECT {TASK_COLUMNS} FROM tasks t WHERE t.id = $2 AND {VISIBLE_TASK}", agent, task_id
    )
    if row is None:
        raise NotFoundError(f"task {task_id} not found")
    return task_row(row)


async def record_event(
    conn: Conn, task_id: str, at: Any, kind: str, by: str, detail: dict[str, Any]
) -> None:
    await conn.execute(
        "INSERT INTO task_events (task_id, at, kind, by_agent, detail) VALUES ($1, $2, $3, $4, $5)",
        task_id, at, kind, by, detail,
    )  # fmt: skip
