"""PostgreSQL fences under row-level security (migration 0009), for raw SQL on the app role's
connection: an agent-scope fence row stays its agent's alone; a family-scope row (agent_id
``~family``) is read and moved forward by any agent, never back, never away.

The behaviour both backends share is in the contract suite (test_contract_tasks.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from agentbus import Fence
from agentbus._keys import FAMILY
from agentbus.storage import StaleWriteError
from agentbus.storage._postgres import PgAdapter

from .test_postgres_adapter import acting_as, refused

pytestmark = pytest.mark.anyio

DENIED = "InsufficientPrivilegeError"  # what a WITH CHECK policy raises
KEPT = "CheckViolationError"  # what migration 0009's trigger raises


async def fence_token(conn: Any, agent: str | None, scope: str, name: str) -> int | None:
    """The token of fence row (scope, name) as ``agent`` sees it (None: no row visible)."""
    async with acting_as(conn, agent):
        token = await conn.fetchval(
            "SELECT token FROM fences WHERE agent_id = $1 AND name = $2", scope, name
        )
    return None if token is None else int(token)


async def test_raw_sql_cannot_read_or_change_another_agents_fence_row(
    postgres_adapter: PgAdapter, new_agent: Callable[..., str], app_conn: Any
) -> None:
    """On a raw app-role connection with B's id, A's agent-scope fence row is invisible;
    UPDATE and DELETE touch nothing, B cannot write a row in A's name, nor move its own row
    into the family's scope; without an agent id no fence row is visible at all. A's row keeps
    its token, so A's stale write is still refused."""
    a, b = (postgres_adapter.for_agent(new_agent(x)) for x in ("a", "b"))
    task = await a.tasks.create_task("fenced")
    await a.tasks.update_task(task.id, title="at 5", fence=("nightly", 5))
    own = await b.tasks.create_task("b's")
    await b.tasks.update_task(own.id, title="b at 1", fence=Fence("nightly", 1))
    assert await fence_token(app_conn, b.agent_id, a.agent_id, "nightly") is None
    async with acting_as(app_conn, b.agent_id):
        where = "WHERE agent_id = $1"
        assert await app_conn.execute(f"UPDATE fences SET token = 0 {where}", a.agent_id) == (
            "UPDATE 0"
        )
        assert await app_conn.execute(f"DELETE FROM fences {where}", a.agent_id) == "DELETE 0"
    forged = await refused(
        app_conn, b.agent_id,
        "INSERT INTO fences (agent_id, name, token, updated_at) VALUES ($1, 'forged', 1, now())",
        a.agent_id,
    )  # fmt: skip
    assert forged == DENIED
    moved = await refused(
        app_conn, b.agent_id, "UPDATE fences SET agent_id = $1 WHERE agent_id = $2", FAMILY,
        b.agent_id,
    )  # fmt: skip
    assert moved == KEPT
    async with acting_as(app_conn, None):
        assert await app_conn.fetchval("SELECT count(*) FROM fences") == 0
    assert await fence_token(app_conn, a.agent_id, a.agent_id, "nightly") == 5
    with pytest.raises(StaleWriteError):
        await a.tasks.update_task(task.id, title="stale", fence=("nightly", 4))


async def test_raw_sql_reads_and_advances_a_family_fence_but_never_lowers_or_removes_it(
    postgres_adapter: PgAdapter, new_agent: Callable[..., str], app_conn: Any
) -> None:
    """A family-scope fence row written through A's adapter is read by B's raw SQL, and B may
    move its token forward (A's older token is then refused) or create another family row; no
    agent may lower the token, rename the row, move it into its own scope or delete it; without
    an agent id the row is invisible and unchangeable."""
    a, b = (postgres_adapter.for_agent(new_agent(x)) for x in ("a", "b"))
    name = f"deploy-{a.agent_id}"
    task = await a.tasks.create_task("fenced")
    await a.tasks.update_task(task.id, title="at 5", fence=Fence(name, 5, family=True))
    assert await fence_token(app_conn, b.agent_id, FAMILY, name) == 5
    advance = "UPDATE fences SET token = $3 WHERE agent_id = $1 AND name = $2"
    async with acting_as(app_conn, b.agent_id):
        assert await app_conn.execute(advance, FAMILY, name, 6) == "UPDATE 1"
    with pytest.raises(StaleWriteError):
        await a.tasks.update_task(task.id, title="stale", fence=Fence(name, 5, family=True))
    row = "WHERE agent_id = $1 AND name = $2"
    changes = {
        "lowered": (advance, FAMILY, name, 1),
        "renamed": (f"UPDATE fences SET name = 'other' {row}", FAMILY, name),
        "taken": (f"UPDATE fences SET agent_id = $3 {row}", FAMILY, name, b.agent_id),
    }
    for what, (sql, *args) in changes.items():
        assert await refused(app_conn, b.agent_id, sql, *args) == KEPT, what
    async with acting_as(app_conn, b.agent_id):
        assert await app_conn.execute(f"DELETE FROM fences {row}", FAMILY, name) == "DELETE 0"
    async with acting_as(app_conn, None):
        assert await app_conn.fetchval(f"SELECT count(*) FROM fences {row}", FAMILY, name) == 0
        assert await app_conn.execute(advance, FAMILY, name, 99) == "UPDATE 0"
    other = f"other-{a.agent_id}"
    created = await refused(
        app_conn, b.agent_id,
        "INSERT INTO fences (agent_id, name, token, updated_at) VALUES ($1, $2, 3, now())",
        FAMILY, other,
    )  # fmt: skip
    assert created == ""
    assert await fence_token(app_conn, a.agent_id, FAMILY, name) == 6
    assert await fence_token(app_conn, a.agent_id, FAMILY, other) == 3
    done = await a.tasks.update_task(task.id, title="at 7", fence=Fence(name, 7, family=True))
    assert done.title == "at 7"
