"""Task rules that span rows, run inside the caller's write transaction: id resolution, the
dependency DAG, blocked/pending settling, history events and fencing tokens.

Blocking rule: an *open* dependency (pending, blocked, in_progress) blocks. A ``pending`` task
with an open dependency becomes ``blocked``; a ``blocked`` task whose dependencies are all done
(completed, failed or cancelled) becomes ``pending``. Other statuses are the caller's to set and
are left alone (an in_progress task does not stop when a dependency is added or reopened).
Every automatic change is recorded in the task's history as a ``status`` event with reason
``dependencies`` (the same line PostgreSQL's trigger writes; it names no other task).

Fencing tokens are kept per (scope, name), as on PostgreSQL: the scope is the acting agent, or
the family (``agent_id`` ``~family``, which no agent id can spell) for a family-wide fence.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from typing import Any

from ._canonical import canonical_json
from ._errors import AmbiguousIdError, DependencyCycleError
from ._fence import Fence
from ._models import OPEN_STATUSES, TaskStatus
from ._rules import check_ref, fence_scope, short_task_ref, stale_write
from ._sqlite_codec import one, visible_sql

OPEN_SQL = "(" + ", ".join(f"'{status}'" for status in sorted(OPEN_STATUSES)) + ")"


def resolve_task(
    conn: sqlite3.Connection, agent_id: str, ref: object, field: str = "task_id"
) -> str | None:
    """The full id of the visible task ``ref`` names (a full id or a short id), else None.

    Raises: ValidationError (a malformed id, see ``_rules.check_ref``), AmbiguousIdError (a
    short id matching several visible tasks).
    """
    ref = check_ref(field, ref)
    short = short_task_ref(ref)
    if short is None:
        return one(  # type: ignore[no-any-return]
            conn,
            f"SELECT t.id FROM tasks t WHERE t.id = ? AND {visible_sql('t')}",
            (ref, agent_id, agent_id),
        )
    rows = conn.execute(
        f"SELECT t.id FROM tasks t WHERE t.short_id = ? AND {visible_sql('t')} LIMIT 2",
        (short, agent_id, agent_id),
    ).fetchall()
    if len(rows) > 1:
        raise AmbiguousIdError(f"short id {ref} matches several tasks; use the full id")
    return rows[0][0] if rows else None


def open_dependencies(conn: sqlite3.Connection, task_id: str) -> int:
    return int(
        one(
            conn,
            "SELECT count(*) FROM task_dependencies d JOIN tasks t ON t.id = d.depends_on"
            f" WHERE d.task_id = ? AND t.status IN {OPEN_SQL}",
            (task_id,),
        )
    )


def check_no_cycle(conn: sqlite3.Connection, task_id: str, depends_on: str) -> None:
    """Raises DependencyCycleError when ``depends_on`` is ``task_id`` or (transitively) depends
    on it."""
    reaches = one(
        conn,
        "WITH RECURSIVE reach (id) AS (SELECT ? UNION SELECT d.depends_on"
        " FROM task_dependencies d JOIN reach r ON d.task_id = r.id)"
        " SELECT 1 FROM reach WHERE id = ? LIMIT 1",
        (depends_on, task_id),
    )
    if reaches:
        raise DependencyCycleError(
            f"task {task_id} cannot depend on {depends_on}: {depends_on} already depends on it"
            if depends_on != task_id
            else f"task {task_id} cannot depend on itself"
        )


def add_event(
    conn: sqlite3.Connection, task_id: str, kind: str, by: str, detail: Mapping[str, Any],
    now: str,
) -> None:  # fmt: skip
    conn.execute(
        "INSERT INTO task_events (task_id, at, kind, by_agent, detail) VALUES (?, ?, ?, ?, ?)",
        (task_id, now, kind, by, canonical_json(detail)),
    )


def settled_status(conn: sqlite3.Connection, task_id: str, status: TaskStatus) -> TaskStatus:
    """The status the blocking rule gives a task that is (or is asked to be) ``status``."""
    if status == "pending" and open_dependencies(conn, task_id):
        return "blocked"
    if status == "blocked" and not open_dependencies(conn, task_id):
        return "pending"
    return status


def settle(conn: sqlite3.Connection, task_id: str, by: str, now: str) -> None:
    """Apply the blocking rule to one task after its dependencies changed."""
    status = one(conn, "SELECT status FROM tasks WHERE id = ?", (task_id,))
    if status not in ("pending", "blocked"):
        return
    new = settled_status(conn, task_id, status)
    if new != status:
        conn.execute(
            "UPDATE tasks SET status = ?, updated_at = ? WHERE id = ?", (new, now, task_id)
        )
        detail = {"from": status, "to": new, "reason": "dependencies"}
        add_event(conn, task_id, "status", by, detail, now)


def settle_dependents(conn: sqlite3.Connection, task_id: str, by: str, now: str) -> None:
    """Apply the blocking rule to every task that depends on ``task_id`` (its status changed,
    or it is about to be deleted)."""
    dependents = conn.execute(
        "SELECT task_id FROM task_dependencies WHERE depends_on = ? ORDER BY dep_key", (task_id,)
    ).fetchall()
    for (dependent,) in dependents:
        settle(conn, dependent, by, now)


def record_fence(conn: sqlite3.Connection, agent_id: str, fence: Fence) -> None:
    """Refuse a write whose fencing token is older than the newest one seen in the fence's scope
    (``agent_id``'s own, or the family's); else remember the newest token. Runs in the write's own
    transaction; ``fence`` is checked by ``_rules.check_fence``.

    Raises: StaleWriteError.
    """
    scope = fence_scope(fence, agent_id)
    key = (scope, fence.name)
    seen = one(conn, "SELECT token FROM fences WHERE agent_id = ? AND name = ?", key)
    if seen is not None and fence.token < seen:
        raise stale_write(fence, agent_id)
    conn.execute(
        "INSERT INTO fences (agent_id, name, token) VALUES (?, ?, ?)"
        " ON CONFLICT (agent_id, name) DO UPDATE SET token = max(token, excluded.token)",
        (*key, fence.token),
    )
