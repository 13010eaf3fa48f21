"""Changes to existing SQLite tasks: ``update_task`` (fenced), dependencies, hand-off.

Who may change a task: its owner (creator) or its current assignee; a task the agent cannot see
is NotFoundError, one it sees but may not change PermissionDeniedError (as on PostgreSQL).

Every change is one write transaction that also records the task's history: ``status``
(``from``/``to``), ``assigned`` (``from``/``to``), ``handoff`` (``from``/``to``/``note``) and
``updated`` (``fields``: the names of the other fields that changed, ``depends_on`` for a
dependency added or removed).
"""

from __future__ import annotations

import json
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
    parse_json,
)
from ._errors import NotFoundError, PermissionDeniedError
from ._fence import Fence
from ._models import (
    MAX_NAME_CHARS,
    MAX_TEXT_CHARS,
    PRIORITIES,
    PRIORITY_RANK,
    TASK_STATUSES,
    UNASSIGNED,
    Priority,
    Task,
    TaskStatus,
)
from ._rules import check_agent_ref, check_fence, check_tags, merge_metadata, status_stamps
from ._sqlite_codec import TASK_COLUMNS, opt_ts, parse_ts, task_from_row, ts
from ._sqlite_db import Scoped
from ._sqlite_task_deps import (
    add_event,
    check_no_cycle,
    record_fence,
    resolve_task,
    settle,
    settle_dependents,
    settled_status,
)


def fetch_task(conn: sqlite3.Connection, agent_id: str, task_id: str) -> Task:
    """The task as ``agent_id`` sees it (dependencies it cannot see left out)."""
    row = conn.execute(
        f"SELECT {TASK_COLUMNS} FROM tasks t WHERE t.id = ?", (agent_id, agent_id, task_id)
    ).fetchone()
    return task_from_row(row)


def canonical_list(values: list[str]) -> str:
    return json.dumps(values, ensure_ascii=False, separators=(",", ":"))


class TaskEdits(Scoped):
    def _resolve(self, conn: sqlite3.Connection, ref: str, field: str = "task_id") -> str:
        """The full id of the visible task ``ref`` names. Raises: NotFoundError,
        ValidationError (malformed), AmbiguousIdError."""
        task_id = resolve_task(conn, self._agent, ref, field)
        if task_id is None:
            raise NotFoundError(f"task {ref} not found")
        return task_id

    def _writable(self, conn: sqlite3.Connection, ref: str) -> str:
        """The full id of a task this agent may change: visible (else NotFoundError), owned or
        assigned (else PermissionDeniedError)."""
        task_id = self._resolve(conn, ref)
        if not conn.execute(
            "SELECT 1 FROM tasks WHERE id = ? AND ? IN (agent_id, assignee)",
            (task_id, self._agent),
        ).fetchone():
            raise PermissionDeniedError(
                f"task {ref} can be changed by its owner or its assignee only, not by agent "
                f"{self._agent!r}"
            )
        return task_id

    async def update_task(
        self, task_id: str, *, title: str | None = None, description: str | None = None,
        status: TaskStatus | None = None, priority: Priority | None = None,
        assignee: str | None = None, project: str | None = None,
        tags: Sequence[str] | None = None, due_at: datetime | None = None,
        metadata: Mapping[str, Any] | None = None, fence: Fence | tuple[str, int] | None = None,
    ) -> Task:  # fmt: skip
        """Change the given fields (None: unchanged; ``assignee=UNASSIGNED`` clears it).

        ``metadata`` is merged (keys set to None are removed). Status changes stamp
        ``started_at``/``completed_at``; asking for ``pending`` while a dependency is open gives
        ``blocked``; finishing or reopening a task settles its dependents. ``fence`` (a
        :class:`Fence`, e.g. ``lease.fence``, or ``(name, token)`` for this agent's scope) is
        checked and recorded in the same transaction as the write.

        Raises: StaleWriteError (an older token; nothing written), NotFoundError (not
        visible), PermissionDeniedError (neither owned nor assigned), ValidationError.
        """
        changes: dict[str, Any] = {}
        if title is not None:
            changes["title"] = check_text("title", title, max_chars=MAX_NAME_CHARS)
        if description is not None:
            changes["description"] = check_optional_text(
                "description", description, max_chars=MAX_TEXT_CHARS
            )
        if priority is not None:
            changes["priority"] = check_choice("priority", priority, PRIORITIES)
            changes["priority_rank"] = PRIORITY_RANK[changes["priority"]]
        if project is not None:
            changes["project"] = check_text("project", project, max_chars=MAX_NAME_CHARS)
        if tags is not None:
            changes["tags"] = canonical_list(check_tags(tags))
        if due_at is not None:
            changes["due_at"] = opt_ts(optional_utc(due_at))
        new_assignee = _assignee(assignee)
        new_status = None if status is None else check_choice("status", status, TASK_STATUSES)
        patch = None if metadata is None else parse_json(canonical_json(metadata))
        checked_fence = None if fence is None else check_fence(fence)

        def write(conn: sqlite3.Connection) -> Task:
            if checked_fence is not None:
                record_fence(conn, self._agent, checked_fence)
            found = self._writable(conn, task_id)
            now = ts(now_utc())
            current = fetch_task(conn, self._agent, found)
            row = dict(changes)
            if patch is not None:
                row["metadata"] = canonical_json(merge_metadata(current.metadata, patch))
            if new_assignee is not None and new_assignee[0] != current.assignee:
                row["assignee"] = new_assignee[0]
                detail = {"from": current.assignee, "to": new_assignee[0]}
                add_event(conn, found, "assigned", self._agent, detail, now)
            if new_status is not None:
                settled = (
                    settled_status(conn, found, new_status)
                    if new_status == "pending"
                    else new_status
                )
                self._status_change(conn, found, current, settled, now, row)
            fields = sorted(key for key in row if key not in _EVENTED)
            if fields:
                add_event(conn, found, "updated", self._agent, {"fields": fields}, now)
            if row:
                row["updated_at"] = now
                assignments = ", ".join(f"{column} = ?" for column in row)
                conn.execute(f"UPDATE tasks SET {assignments} WHERE id = ?", [*row.values(), found])
            if "status" in row:
                settle_dependents(conn, found, self._agent, now)
            return fetch_task(conn, self._agent, found)

        return await self._db.write(write)

    def _status_change(
        self, conn: sqlite3.Connection, task_id: str, current: Task, new: TaskStatus, now: str,
        row: dict[str, Any],
    ) -> None:  # fmt: skip
        if new == current.status:
            return
        started, completed = status_stamps(
            current.status, new, parse_ts(now), current.started_at,
            current.completed_at,
        )  # fmt: skip
        row.update(status=new, started_at=opt_ts(started), completed_at=opt_ts(completed))
        detail = {"from": current.status, "to": new}
        add_event(conn, task_id, "status", self._agent, detail, now)

    async def add_dependency(self, task_id: str, depends_on: str) -> Task:
        """Make ``task_id`` depend on ``depends_on`` (idempotent); a pending task becomes blocked
        while the dependency is open.

        Raises: DependencyCycleError, NotFoundError (either task not visible),
        PermissionDeniedError (``task_id`` neither owned nor assigned).
        """

        def write(conn: sqlite3.Connection) -> Task:
            task = self._writable(conn, task_id)
            dependency = self._resolve(conn, depends_on, "depends_on")
            check_no_cycle(conn, task, dependency)
            cursor = conn.execute(
                "INSERT INTO task_dependencies (task_id, depends_on) VALUES (?, ?)"
                " ON CONFLICT DO NOTHING",
                (task, dependency),
            )
            if cursor.rowcount:
                self._dependencies_changed(conn, task)
            return fetch_task(conn, self._agent, task)

        return await self._db.write(write)

    async def remove_dependency(self, task_id: str, depends_on: str) -> Task:
        """Remove a dependency (idempotent); a blocked task with no open dependency left
        becomes pending. Raises: NotFoundError (either task not visible),
        PermissionDeniedError (``task_id`` neither owned nor assigned)."""

        def write(conn: sqlite3.Connection) -> Task:
            task = self._writable(conn, task_id)
            dependency = self._resolve(conn, depends_on, "depends_on")
            cursor = conn.execute(
                "DELETE FROM task_dependencies WHERE task_id = ? AND depends_on = ?",
                (task, dependency),
            )
            if cursor.rowcount:
                self._dependencies_changed(conn, task)
            return fetch_task(conn, self._agent, task)

        return await self._db.write(write)

    def _dependencies_changed(self, conn: sqlite3.Connection, task_id: str) -> None:
        now = ts(now_utc())
        add_event(conn, task_id, "updated", self._agent, {"fields": ["depends_on"]}, now)
        conn.execute("UPDATE tasks SET updated_at = ? WHERE id = ?", (now, task_id))
        settle(conn, task_id, self._agent, now)

    async def handoff_task(self, task_id: str, to_agent: str, *, note: str | None = None) -> Task:
        """Assign to another agent, recorded in the task's history as a ``handoff`` event.

        Raises: NotFoundError (not visible), PermissionDeniedError (neither owned nor assigned),
        ValidationError (agent id, note).
        """
        check_agent_ref("to_agent", to_agent)
        check_optional_text("note", note, max_chars=MAX_TEXT_CHARS)

        def write(conn: sqlite3.Connection) -> Task:
            task = self._writable(conn, task_id)
            previous = conn.execute("SELECT assignee FROM tasks WHERE id = ?", (task,)).fetchone()
            now = ts(now_utc())
            conn.execute(
                "UPDATE tasks SET assignee = ?, updated_at = ? WHERE id = ?", (to_agent, now, task)
            )
            detail = {"from": previous[0], "to": to_agent}
            if note is not None:
                detail["note"] = note
            add_event(conn, task, "handoff", self._agent, detail, now)
            return fetch_task(conn, self._agent, task)

        return await self._db.write(write)


_EVENTED = frozenset({"assignee", "status", "started_at", "completed_at", "priority_rank"})


def _assignee(value: str | None) -> tuple[str | None] | None:
    """None: unchanged; ``(None,)``: clear (UNASSIGNED); ``(agent,)``: assign."""
    if value is None:
        return None
    if value == UNASSIGNED:
        return (None,)
    return (check_agent_ref("assignee", value),)
