"""PostgreSQL-specific behaviour of PgAdapter: the schema, row-level security that holds for the
app role (through the adapter and through raw SQL), index use under RLS, migrations, PgBouncer
mode, and what a crash mid-write leaves behind.

The contract suite (test_contract_*.py) covers the behaviour shared with SQLite; this module uses
its fixtures (``postgres_server``, a fresh database per module) and makes more databases where a
test needs a pristine one.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import asyncpg
import numpy as np
import pytest

from agentbus import ConfigError
from agentbus._config import parse_config
from agentbus.storage._errors import (
    DependencyCycleError,
    MigrationError,
    NotFoundError,
    PermissionDeniedError,
    StorageError,
    StorageUnavailableError,
)
from agentbus.storage._models import PRIORITY_RANK
from agentbus.storage._pg_migrations import load_migrations
from agentbus.storage._pg_search import _SEARCH
from agentbus.storage._postgres import PgAdapter, init_connection
from agentbus.testing import PostgresServer

from ._databases import create_app_database, psql
from ._support import EMBEDDING_DIM, as_list, unit

pytestmark = pytest.mark.anyio

NOT_AGENT_SCOPED = {"agents", "schema_migrations"}  # the family registry, the ledger
TABLES = (
    "(SELECT oid, relname FROM pg_class"
    " WHERE relnamespace = 'public'::regnamespace AND relkind = 'r') c"
)


def create_database(server: PostgresServer) -> str:
    """A new database laid out like ``postgres_roles.sql`` lays out ``agentbus``."""
    return create_app_database(server, "ab_pg")


def adapter_for(server: PostgresServer, database: str, **options: Any) -> PgAdapter:
    options.setdefault("embedding_dim", EMBEDDING_DIM)
    return PgAdapter(
        server.dsn_for("agentbus_app", database),
        admin_dsn=server.dsn_for("agentbus_owner", database),
        **options,
    )


@asynccontextmanager
async def acting_as(conn: Any, agent: str | None) -> AsyncIterator[Any]:
    """A transaction on a raw app connection, with ``app.agent_id`` set locally (or not)."""
    async with conn.transaction():
        if agent is not None:
            await conn.execute("SELECT set_config('app.agent_id', $1, true)", agent)
        yield conn


async def refused(conn: Any, agent: str | None, sql: str, *args: Any) -> str:
    """Run ``sql`` as ``agent``; the name of the error it raised ('' when it succeeded)."""
    try:
        async with acting_as(conn, agent):
            await conn.execute(sql, *args)
    except asyncpg.PostgresError as exc:
        return type(exc).__name__
    return ""


@pytest.fixture
def new_pair(postgres_adapter: PgAdapter, new_agent: Callable[..., str]) -> Any:
    def make() -> tuple[PgAdapter, PgAdapter]:
        return postgres_adapter.for_agent(new_agent("a")), postgres_adapter.for_agent(
            new_agent("b")
        )

    return make


# --- schema ----------------------------------------------------------------------------------


async def test_schema_has_the_seed_tables_vector_hnsw_gin_and_jsonb(
    postgres_server: PostgresServer, pg_database: str, postgres_adapter: PgAdapter
) -> None:
    """The migrations create the seed's tables and more (>= 20), embeddings as vector(dim) (never
    TEXT), an HNSW cosine index with m=16, ef_construction=200, GIN full-text indexes, JSONB
    metadata, a btree on agent_id and an integer priority rank."""
    tables = set(
        psql(postgres_server, pg_database, "SELECT relname FROM pg_class c WHERE c.oid IN"
             f" (SELECT oid FROM {TABLES})").split()
    )  # fmt: skip
    seed = {
        "agents", "memory_items", "entities", "reflections", "lessons", "resources", "categories",
        "item_categories", "knowledge_collections", "knowledge_collection_grants", "tasks",
        "teams", "team_members", "service_keys", "observations", "model_feedback",
        "live_candidates",
    }  # fmt: skip
    assert seed <= tables
    assert len(tables) >= 20
    column = psql(
        postgres_server, pg_database,
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute"
        " WHERE attrelid = 'memory_items'::regclass AND attname = 'embedding'",
    )  # fmt: skip
    assert column == f"vector({EMBEDDING_DIM})"
    indexes = psql(postgres_server, pg_database,
                   "SELECT indexdef FROM pg_indexes WHERE tablename = 'memory_items'")  # fmt: skip
    assert (
        "USING hnsw (embedding vector_cosine_ops) WITH (m='16', ef_construction='200')" in indexes
    )
    assert "USING gin (summary_tsv)" in indexes
    assert "USING btree (agent_id" in indexes
    types = psql(
        postgres_server, pg_database,
        "SELECT attrelid::regclass || '.' || attname || ' ' || format_type(atttypid, -1)"
        " FROM pg_attribute WHERE attname IN ('metadata', 'priority_rank')"
        " AND attrelid IN ('memory_items'::regclass, 'tasks'::regclass) ORDER BY 1",
    )  # fmt: skip
    assert types.splitlines() == [
        "memory_items.metadata jsonb", "tasks.metadata jsonb", "tasks.priority_rank smallint",
    ]  # fmt: skip


async def test_priority_rank_column_matches_the_models(new_pair: Any, app_conn: Any) -> None:
    """The stored priority rank is PRIORITY_RANK (urgent first), never text order."""
    me, _ = new_pair()
    for priority in PRIORITY_RANK:
        await me.tasks.create_task(f"rank {priority}", priority=priority)
    async with acting_as(app_conn, me.agent_id):
        rows = await app_conn.fetch(
            "SELECT priority, priority_rank FROM tasks WHERE agent_id = $1", me.agent_id
        )
    assert {r["priority"]: r["priority_rank"] for r in rows} == PRIORITY_RANK


async def test_every_agent_scoped_table_forces_row_level_security(
    postgres_server: PostgresServer, pg_database: str, postgres_adapter: PgAdapter
) -> None:
    """ENABLE and FORCE ROW LEVEL SECURITY on every table but the registry and the ledger, and
    every such table has policies."""
    rows = psql(postgres_server, pg_database,
                "SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity,"
                " (SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid)"
                " FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace"
                " AND c.relkind = 'r'")  # fmt: skip
    unforced = []
    for line in rows.splitlines():
        name, enabled, forced, policies = line.split("|")
        if name not in NOT_AGENT_SCOPED and ((enabled, forced) != ("t", "t") or policies == "0"):
            unforced.append(name)
    assert len(rows.splitlines()) >= 20
    assert unforced == []


async def test_roles_own_what_they_should_and_the_app_role_has_no_truncate_or_references(
    postgres_server: PostgresServer, pg_database: str, postgres_adapter: PgAdapter
) -> None:
    """The owner role owns every table and function; the app role owns nothing and may not
    TRUNCATE, REFERENCES or TRIGGER any table, nor write the ledger; every SECURITY DEFINER
    function pins its search_path and is not executable by PUBLIC."""
    sql = {
        "app owns": "SELECT count(*) FROM pg_class WHERE relowner = 'agentbus_app'::regrole",
        "not owner's": "SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace"
        " AND relkind IN ('r', 'i', 'S') AND relowner <> 'agentbus_owner'::regrole",
        "bad grants": f"SELECT count(*) FROM {TABLES} WHERE"
        " has_table_privilege('agentbus_app', c.oid, 'TRUNCATE')"
        " OR has_table_privilege('agentbus_app', c.oid, 'REFERENCES')"
        " OR has_table_privilege('agentbus_app', c.oid, 'TRIGGER')",
        "no crud": f"SELECT count(*) FROM {TABLES} WHERE c.relname <> 'schema_migrations'"
        " AND NOT has_table_privilege('agentbus_app', c.oid, 'SELECT, INSERT, UPDATE, DELETE')",
        "ledger writable": "SELECT has_table_privilege('agentbus_app', 'schema_migrations',"
        " 'INSERT, UPDATE, DELETE')::int",
        "definer unpinned": "SELECT count(*) FROM pg_proc WHERE prosecdef AND (proowner <>"
        " 'agentbus_owner'::regrole OR NOT coalesce(proconfig::text LIKE '%search_path=%', false))",
        "public execute": "SELECT count(*) FROM pg_proc WHERE proname LIKE 'agentbus\\_%'"
        " AND has_function_privilege('public', oid, 'EXECUTE')",
        "definers": "SELECT count(*) FROM pg_proc WHERE prosecdef AND proname LIKE 'agentbus\\_%'",
        "app runs triggers": "SELECT count(*) FROM pg_proc WHERE prorettype = 'trigger'::regtype"
        " AND proname LIKE 'agentbus\\_%'"
        " AND has_function_privilege('agentbus_app', oid, 'EXECUTE')",
        "app refreshes": "SELECT has_function_privilege('agentbus_app',"
        " 'agentbus_refresh_task_status(text)', 'EXECUTE')::int",
    }
    found = {name: int(psql(postgres_server, pg_database, query)) for name, query in sql.items()}
    assert found.pop("definers") >= 8
    assert found == dict.fromkeys(found, 0)


async def test_adapter_refuses_a_connection_that_bypasses_rls(
    postgres_server: PostgresServer, pg_database: str, postgres_adapter: PgAdapter
) -> None:
    """open() refuses an app connection string that logs in as the owner (BYPASSRLS) or a
    superuser: row-level security would not apply."""
    for user in ("agentbus_owner", "postgres"):
        adapter = PgAdapter(postgres_server.dsn_for(user, pg_database), embedding_dim=EMBEDDING_DIM)
        with pytest.raises(ConfigError, match="row-level security"):
            await adapter.open()
        assert not adapter.is_ready()
        await adapter.aclose()


# --- RLS through raw SQL on the app connection -----------------------------------------------


async def test_raw_sql_cannot_read_or_change_another_agents_private_rows(
    new_pair: Any, app_conn: Any
) -> None:
    """As the app role with agent A's id set, B's private rows are invisible to SELECT, and
    UPDATE and DELETE of them affect nothing, on every kind of row."""
    a, b = new_pair()
    item = await b.memory.create_item("b's private harbor secret", embedding=as_list(unit(1)))
    task = await b.tasks.create_task("b's private task")
    entity = await b.memory.create_entity("B Person")
    lesson = await b.memory.create_lesson("b's lesson")
    await b.memory.link_item_entity(item.id, entity.id)
    targets = {
        "memory_items": item.id, "tasks": task.id, "entities": entity.id, "lessons": lesson.id,
    }  # fmt: skip
    async with acting_as(app_conn, a.agent_id):
        for table, row_id in targets.items():
            assert (
                await app_conn.fetchval(f"SELECT count(*) FROM {table} WHERE id = $1", row_id) == 0
            )
            assert await app_conn.execute(
                f"UPDATE {table} SET agent_id = $2 WHERE id = $1", row_id, a.agent_id
            ) == "UPDATE 0"  # fmt: skip
            assert (
                await app_conn.execute(f"DELETE FROM {table} WHERE id = $1", row_id) == "DELETE 0"
            )
        assert await app_conn.fetchval(
            "SELECT count(*) FROM item_entities WHERE item_id = $1", item.id
        ) == 0  # fmt: skip
        assert await app_conn.fetchval(
            "SELECT count(*) FROM task_events WHERE task_id = $1", task.id
        ) == 0  # fmt: skip
    assert await b.memory.get_item(item.id) == item
    assert await b.tasks.get_task(task.id) == task


async def test_raw_sql_references_to_invisible_rows_fail_like_missing_ones(
    new_pair: Any, app_conn: Any
) -> None:
    """Foreign-key checks ignore RLS, so the insert policies check visibility: linking to,
    depending on or referencing B's private rows fails exactly as for ids that do not exist
    (no error tells A that B's row exists), and A cannot write rows in B's name."""
    a, b = new_pair()
    b_item = await b.memory.create_item("b's private item")
    b_entity = await b.memory.create_entity("B Entity")
    b_resource = await b.memory.create_resource("https://example.org/b")
    b_task = await b.tasks.create_task("b's private task")
    b_team = await b.teams.create_team("b's team")
    a_item = await a.memory.create_item("a's item")
    a_entity = await a.memory.create_entity("A Entity")
    a_task = await a.tasks.create_task("a's task")
    missing = "0190f7b0-0000-7000-8000-000000000000"
    now = "now()"
    attempts = {
        "link to b's item": (
            f"INSERT INTO item_entities VALUES ($1, '{a_entity.id}', $2, {now})", b_item.id),
        "link to b's entity": (
            f"INSERT INTO item_entities VALUES ('{a_item.id}', $1, $2, {now})", b_entity.id),
        "depend on b's task": (
            "INSERT INTO task_dependencies (task_id, depends_on, agent_id, created_at)"
            f" VALUES ('{a_task.id}', $1, $2, {now})", b_task.id),
        "reference b's resource": (
            "INSERT INTO memory_items (id, agent_id, summary, memory_type, visibility,"
            " resource_id, content_hash, significance, created_at, updated_at)"
            " VALUES (gen_random_uuid()::text, $2, 'x', 'event', 'private', $1,"
            f" md5(random()::text), 0.5, {now}, {now})", b_resource.id),
        "post into b's team": (
            "INSERT INTO tasks (id, agent_id, title, status, priority, visibility, team_id,"
            f" created_at, updated_at) VALUES (gen_random_uuid()::text, $2, 't', 'pending',"
            f" 'normal', 'team', $1, {now}, {now})", b_team.id),
    }  # fmt: skip
    for name, (sql, target) in attempts.items():
        invisible = await refused(app_conn, a.agent_id, sql, target, a.agent_id)
        absent = await refused(app_conn, a.agent_id, sql, missing, a.agent_id)
        assert invisible == absent == "InsufficientPrivilegeError", name
    impersonation = await refused(
        app_conn, a.agent_id,
        "INSERT INTO lessons (id, agent_id, lesson, confidence, created_at, updated_at)"
        " VALUES (gen_random_uuid()::text, $1, 'forged', 0.5, now(), now())",
        b.agent_id,
    )  # fmt: skip
    assert impersonation == "InsufficientPrivilegeError"
    assert (await b.memory.get_entity(b_entity.id)).memory_count == 0
    assert await b.memory.list_lessons() == []


async def test_without_an_agent_id_nothing_is_visible_or_writable(
    new_pair: Any, app_conn: Any, postgres_server: PostgresServer, pg_database: str
) -> None:
    """With app.agent_id unset (no set_config, or set to ''), the app role sees no row of any
    agent-scoped table — not even family/public ones — and cannot insert any."""
    a, _ = new_pair()
    await a.memory.create_item("a family glacier note", visibility="family")
    await a.tasks.create_task("a public task", visibility="public")
    await a.teams.create_team("a team")
    tables = psql(postgres_server, pg_database,
                  "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace"
                  " AND relkind = 'r' AND relrowsecurity").split()  # fmt: skip
    assert len(tables) >= 20
    for setting in (None, ""):
        async with acting_as(app_conn, setting):
            for table in tables:
                assert await app_conn.fetchval(f"SELECT count(*) FROM {table}") == 0, table
        assert await refused(
            app_conn, setting,
            "INSERT INTO reflections (id, agent_id, content, created_at)"
            " VALUES (gen_random_uuid()::text, $1, 'anonymous', now())",
            a.agent_id,
        ) == "InsufficientPrivilegeError"  # fmt: skip


async def test_raw_sql_sees_family_public_and_own_team_rows(new_pair: Any, app_conn: Any) -> None:
    """As agent A, raw SQL sees B's family and public rows and the team rows of B's team that A
    is a member of — and no others."""
    a, b = new_pair()
    team = await b.teams.create_team("shared crew", members=[a.agent_id])
    closed = await b.teams.create_team("closed crew")
    family = await b.memory.create_item("family copper note", visibility="family")
    public = await b.memory.create_item("public copper note", visibility="public")
    in_team = await b.memory.create_item("team copper note", visibility="team", team_id=team.id)
    other = await b.memory.create_item("closed copper note", visibility="team", team_id=closed.id)
    private = await b.memory.create_item("private copper note")
    team_task = await b.tasks.create_task("team task", visibility="team", team_id=team.id)
    async with acting_as(app_conn, a.agent_id):
        seen = {r["id"] for r in await app_conn.fetch(
            "SELECT id FROM memory_items WHERE agent_id = $1", b.agent_id)}  # fmt: skip
        tasks = {r["id"] for r in await app_conn.fetch(
            "SELECT id FROM tasks WHERE agent_id = $1", b.agent_id)}  # fmt: skip
        teams = {r["id"] for r in await app_conn.fetch(
            "SELECT id FROM teams WHERE agent_id = $1", b.agent_id)}  # fmt: skip
    assert seen == {family.id, public.id, in_team.id}
    assert other.id not in seen
    assert private.id not in seen
    assert tasks == {team_task.id}
    assert teams == {team.id}


# agent argument, query, embedding (text), limit
RAW_ITEM_SEARCH = (
    "SELECT (hit.item).id FROM agentbus_search_item_rows($1, $2, $3::text::vector, 10) AS hit"
)


async def raw_item_search(
    conn: Any, agent: str | None, argument: str | None, query: str | None, embedding: str | None
) -> set[str]:
    """agentbus_search_item_rows as the app role in a transaction acting as ``agent``, with
    ``argument`` as the function's agent argument: the ids it returns."""
    async with acting_as(conn, agent):
        return {row["id"] for row in await conn.fetch(RAW_ITEM_SEARCH, argument, query, embedding)}


async def test_raw_sql_memory_search_answers_only_the_transaction_s_agent(
    new_pair: Any, app_conn: Any
) -> None:
    """agentbus_search_item_rows (migration 0011) reads the rows it returns with the owner's
    rights, so it must apply the visibility rule itself: on a raw app-role connection it returns
    nothing when no agent id is set (whatever its agent argument says) or when its argument names
    another agent than the transaction's, never B's private or closed-team rows, and B's family
    and shared-team rows. The agent id PgAdapter's one-statement call sets does not outlive it."""
    a, b = new_pair()
    term = "zq" + "".join(chr(ord("a") + int(c, 16)) for c in secrets.token_hex(4))
    team = await b.teams.create_team("search crew", members=[a.agent_id])
    closed = await b.teams.create_team("closed search crew")
    vector = as_list(unit(3))
    embedding = "[" + ",".join(str(v) for v in vector) + "]"
    own = await a.memory.create_item(f"own {term}", embedding=vector)
    family = await b.memory.create_item(f"family {term}", visibility="family", embedding=vector)
    in_team = await b.memory.create_item(
        f"team {term}", visibility="team", team_id=team.id, embedding=vector
    )
    await b.memory.create_item(
        f"closed {term}", visibility="team", team_id=closed.id, embedding=vector
    )
    await b.memory.create_item(f"private {term}", embedding=vector)
    a_id, b_id = a.agent_id, b.agent_id
    for query, vec in ((term, None), (None, embedding), (term, embedding)):
        assert await raw_item_search(app_conn, a_id, a_id, query, vec) == {
            own.id, family.id, in_team.id
        }  # fmt: skip
        for agent, argument in ((None, a_id), (None, None), (b_id, a_id), (a_id, b_id)):
            assert await raw_item_search(app_conn, agent, argument, query, vec) == set()
    hits = await a.memory.search_items(term, embedding=vector)
    assert {hit.item.id for hit in hits} == {own.id, family.id, in_team.id}
    assert {hit.item.summary for hit in hits} == {f"own {term}", f"family {term}", f"team {term}"}
    assert await app_conn.fetchval("SELECT current_setting('app.agent_id', true)") in ("", None)
    pool = a._core._pool
    assert pool is not None
    async with pool.acquire() as conn:  # the adapter's connections keep no agent id either
        assert await conn.fetchval("SELECT current_setting('app.agent_id', true)") in (None, "")


async def test_adapter_reads_family_and_team_rows_but_cannot_change_them(new_pair: Any) -> None:
    """A reads B's family item and its team's task through the adapter, but reinforcing, embedding
    or deleting B's item are "not found", and updating or deleting B's task and disbanding B's
    team are refused (PermissionDeniedError: A sees them; the contract's rule)."""
    a, b = new_pair()
    team = await b.teams.create_team("work crew", members=[a.agent_id])
    family = await b.memory.create_item("family lantern note", visibility="family")
    task = await b.tasks.create_task("team lantern task", visibility="team", team_id=team.id)
    assert await a.memory.get_item(family.id) == family
    assert await a.tasks.get_task(task.id) == task
    calls = {
        "reinforce": lambda: a.memory.reinforce_item(family.id),
        "embed": lambda: a.memory.embed_item(family.id, as_list(unit(3))),
        "delete item": lambda: a.memory.delete_item(family.id),
    }
    for name, call in calls.items():
        with pytest.raises(NotFoundError):
            await call()
        assert name
    refused = {
        "update task": lambda: a.tasks.update_task(task.id, title="taken"),
        "delete task": lambda: a.tasks.delete_task(task.id),
        "disband": lambda: a.teams.disband_team(team.id),
    }
    for name, call in refused.items():
        with pytest.raises(PermissionDeniedError):
            await call()
        assert name
    assert await b.memory.get_item(family.id) == family
    assert await b.tasks.get_task(task.id) == task


async def test_the_assignee_may_move_a_visible_task_along(new_pair: Any, app_conn: Any) -> None:
    """A task handed off to A (and visible to A) can be updated by A; the owner keeps it, even
    against raw SQL from A."""
    a, b = new_pair()
    task = await b.tasks.create_task("family errand", visibility="family")
    await b.tasks.handoff_task(task.id, a.agent_id, note="yours")
    moved = await a.tasks.update_task(task.id, status="in_progress")
    assert (moved.status, moved.agent_id, moved.assignee) == ("in_progress", b.agent_id, a.agent_id)
    kinds = [event.kind for event in await b.tasks.task_history(task.id)]
    assert kinds == ["created", "handoff", "status"]
    take = "UPDATE tasks SET agent_id = $2 WHERE id = $1"
    assert await refused(app_conn, a.agent_id, take, task.id, a.agent_id) == "CheckViolationError"
    assert (await b.tasks.get_task(task.id)).agent_id == b.agent_id


async def test_completing_a_dependency_unblocks_another_agents_task(new_pair: Any) -> None:
    """B's task waiting on A's family task is unblocked when A completes it, although A's own
    row-level security would not let A update B's task (the database does it, as the owner)."""
    a, b = new_pair()
    shared = await a.tasks.create_task("family prerequisite", visibility="family")
    waiting = await b.tasks.create_task("b waits", depends_on=[shared.id])
    assert waiting.status == "blocked"
    assert waiting.id not in {t.id for t in await a.tasks.list_tasks(limit=1000)}
    await a.tasks.update_task(shared.id, status="completed")
    unblocked = await b.tasks.get_task(waiting.id)
    assert unblocked is not None
    assert unblocked.status == "pending"
    events = await b.tasks.task_history(waiting.id)
    assert events[-1].kind == "status"
    assert events[-1].detail == {"from": "blocked", "reason": "dependencies", "to": "pending"}


async def test_cycles_through_invisible_tasks_are_refused(new_pair: Any) -> None:
    """A dependency closing a cycle through another agent's private task is refused although
    the agent cannot see that task (the check walks every edge, as the owner role)."""
    a, b = new_pair()
    x = await a.tasks.create_task("a's family x", visibility="family")
    y = await b.tasks.create_task("b's family y", visibility="family")
    z = await b.tasks.create_task("b's private z", depends_on=[x.id])
    await b.tasks.add_dependency(y.id, z.id)
    with pytest.raises(DependencyCycleError):
        await a.tasks.add_dependency(x.id, y.id)
    assert (await a.tasks.get_task(x.id)).depends_on == []


async def test_depends_on_lists_only_visible_tasks(new_pair: Any) -> None:
    """A task's depends_on names only dependencies the reader can see; the blocked status still
    counts the invisible ones."""
    a, b = new_pair()
    hidden = await b.tasks.create_task("b's private prerequisite")
    shared = await b.tasks.create_task(
        "b's family task", visibility="family", depends_on=[hidden.id]
    )
    assert shared.depends_on == [hidden.id]
    seen = await a.tasks.get_task(shared.id)
    assert seen is not None
    assert (seen.status, seen.depends_on) == ("blocked", [])
    assert shared.id not in {t.id for t in await a.tasks.ready_tasks(limit=1000)}


async def test_fifty_concurrent_agents_on_one_pool_never_see_each_other(
    postgres_adapter: PgAdapter, new_agent: Callable[..., str]
) -> None:
    """50 agents making requests at once over one pool (10 connections) each see exactly their
    own private rows among the 50, every time: the agent id never leaks from one transaction to
    the next. (Other tests' family/public rows are visible to all and ignored.)"""
    agents = [postgres_adapter.for_agent(new_agent(f"c{n}")) for n in range(50)]
    ids = {me.agent_id for me in agents}
    for n, me in enumerate(agents):
        await me.memory.create_item(f"marker zeppelin {n}", metadata={"n": n})
        await me.tasks.create_task(f"marker task {n}")
    problems: list[str] = []

    async def check(n: int, me: PgAdapter) -> None:
        for _ in range(5):
            items = [i for i in await me.memory.list_items(limit=1000) if i.agent_id in ids]
            hits = await me.memory.search_items("zeppelin", mode="keyword", limit=100)
            tasks = await me.tasks.list_tasks(limit=1000)
            owners = {i.agent_id for i in items} | {h.item.agent_id for h in hits}
            owners |= {t.agent_id for t in tasks}
            if owners & ids != {me.agent_id} or [i.metadata for i in items] != [{"n": n}]:
                problems.append(f"agent {n} saw {owners & ids}")

    async with anyio.create_task_group() as tg:
        for n, me in enumerate(agents):
            tg.start_soon(check, n, me)
    assert problems == []
    pool = postgres_adapter._core._pool
    assert pool is not None
    async with pool.acquire() as conn:  # the setting was transaction-local: nothing lingers
        assert await conn.fetchval("SELECT current_setting('app.agent_id', true)") in (None, "")


# --- search uses its indexes under RLS -------------------------------------------------------


async def test_explain_as_the_app_role_shows_gin_and_hnsw_in_use(
    postgres_server: PostgresServer, new_agent: Callable[..., str]
) -> None:
    """Run as the app role with auto_explain on (nested statements, plans sent as NOTICEs), the
    keyword search uses the GIN index and the vector search of an agent with many rows the HNSW
    index — while the same keyword predicate written directly against the table under RLS cannot
    use the GIN index (``@@`` is not leakproof). PgAdapter's own one-statement search (migration
    0011) uses the GIN index too and reads its hits back by primary key."""
    dim = 16
    database = create_database(postgres_server)
    agent = new_agent("big")
    adapter = adapter_for(postgres_server, database, embedding_dim=dim)
    await adapter.open()
    try:
        rng = np.random.default_rng(7)
        vectors = rng.standard_normal((1500, dim)).astype(np.float32)
        words = ["meadow", "harbor", "lantern", "copper", "violin", "orchard"]
        me = adapter.for_agent(agent)
        await me.memory.create_items([
            {"summary": f"{words[n % 6]} report {n}" + (" zeppelin" if n % 250 == 0 else ""),
             "embedding": vectors[n].tolist()}
            for n in range(1500)
        ])  # fmt: skip
    finally:
        await adapter.aclose()
    psql(
        postgres_server, database, "ANALYZE",
        f"ALTER ROLE agentbus_app IN DATABASE {database}"
        " SET session_preload_libraries = 'auto_explain'",
        f"ALTER ROLE agentbus_app IN DATABASE {database} SET auto_explain.log_min_duration = 0",
        f"ALTER ROLE agentbus_app IN DATABASE {database}"
        " SET auto_explain.log_nested_statements = on",
        f"ALTER ROLE agentbus_app IN DATABASE {database} SET auto_explain.log_level = notice",
    )  # fmt: skip
    conn: asyncpg.Connection[Any] = await asyncpg.connect(
        postgres_server.dsn_for("agentbus_app", database)
    )
    plans: list[str] = []
    conn.add_log_listener(lambda _conn, message: plans.append(message.message))
    try:
        async with acting_as(conn, agent):
            found = await conn.fetch("SELECT * FROM agentbus_search_items('zeppelin', NULL, 10)")
            keyword_plans, plans[:] = "\n".join(plans), []
            query = "[" + ",".join(str(v) for v in vectors[5]) + "]"
            nearest = await conn.fetch(
                "SELECT * FROM agentbus_search_items(NULL, $1::text::vector, 10)", query
            )
            vector_plans, plans[:] = "\n".join(plans), []
            direct = await conn.fetch(
                "EXPLAIN SELECT id FROM memory_items WHERE summary_tsv @@"
                " plainto_tsquery('english', 'zeppelin')"
            )
        plans[:] = []
        for _ in range(7):  # past the plan cache's five custom plans, had it made any
            adapter_hits = await conn.fetch(
                _SEARCH, agent, "zeppelin", None, 10, None, None, False, None, 100
            )
        adapter_plans = "\n".join(plans)
        read_back = [plan for plan in plans if "AS found" in plan]
    finally:
        await conn.close()
        psql(postgres_server, "postgres", f"DROP DATABASE {database} WITH (FORCE)")
    assert len(found) == 6
    assert "Bitmap Index Scan on memory_items_fts_idx" in keyword_plans, keyword_plans
    assert len(nearest) == 10
    assert "Index Scan using memory_items_embedding_hnsw" in vector_plans, vector_plans
    assert "memory_items_fts_idx" not in "\n".join(row[0] for row in direct)
    # PgAdapter's statement reads the hits back one primary-key lookup each — never a scan of
    # the agent's rows, which a generic plan of a join once chose (210 ms instead of 5 for the
    # largest agent of the shared corpus).
    assert len(adapter_hits) == 6
    assert "Bitmap Index Scan on memory_items_fts_idx" in adapter_plans, adapter_plans
    assert len(read_back) == 7, plans
    for plan in read_back:
        assert "memory_items_pkey" in plan, plan
        assert "Scan on memory_items" not in plan.replace("Scan using memory_items_pkey", ""), plan


# --- migrations ------------------------------------------------------------------------------


async def test_concurrent_opens_migrate_once_under_the_advisory_lock(
    postgres_server: PostgresServer,
) -> None:
    """Two adapters opening a new database at once: one applies every migration, the other
    waits on the advisory lock and applies none; the ledger lists each version once, with its
    checksum; opening again applies nothing."""
    database = create_database(postgres_server)
    first, second = (adapter_for(postgres_server, database) for _ in range(2))
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(first.open)
            tg.start_soon(second.open)
        shipped = [m.version for m in load_migrations()]
        applied = sorted(first.applied_migrations + second.applied_migrations)
        assert applied == shipped
        assert [] in (first.applied_migrations, second.applied_migrations)
        ledger = psql(
            postgres_server, database,
            "SELECT version, checksum FROM schema_migrations ORDER BY version",
        )  # fmt: skip
        assert ledger.splitlines() == [f"{m.version}|{m.checksum}" for m in load_migrations()]
        await first.aclose()
        await first.open()
        assert first.applied_migrations == []
        assert first.is_ready()
    finally:
        await first.aclose()
        await second.aclose()
        psql(postgres_server, "postgres", f"DROP DATABASE {database} WITH (FORCE)")


async def test_migration_problems_are_clear_errors(postgres_server: PostgresServer) -> None:
    """Without admin_dsn an unmigrated database is a MigrationError naming the fix; another
    embedding dimension than the database's, or an edited applied migration, too."""
    database = create_database(postgres_server)
    try:
        app_only = PgAdapter(
            postgres_server.dsn_for("agentbus_app", database), embedding_dim=EMBEDDING_DIM
        )
        with pytest.raises(MigrationError, match="admin_dsn"):
            await app_only.open()
        migrated = adapter_for(postgres_server, database)
        await migrated.open()
        await migrated.aclose()
        await app_only.open()  # now up to date: the app role alone is enough
        assert app_only.is_ready()
        await app_only.aclose()
        with pytest.raises(MigrationError, match=f"{EMBEDDING_DIM}-dimensional"):
            await adapter_for(postgres_server, database, embedding_dim=8).open()
        psql(postgres_server, database,
             "UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1")  # fmt: skip
        with pytest.raises(MigrationError, match="never edit an applied migration"):
            await adapter_for(postgres_server, database).open()
    finally:
        psql(postgres_server, "postgres", f"DROP DATABASE {database} WITH (FORCE)")


async def test_pgbouncer_mode_without_a_statement_cache(
    postgres_server: PostgresServer, pg_database: str, postgres_adapter: PgAdapter,
    new_agent: Callable[..., str],
) -> None:  # fmt: skip
    """statement_cache_size=0 (PgBouncer transaction mode) is passed to asyncpg, and every kind
    of call works without named prepared statements."""
    adapter = adapter_for(postgres_server, pg_database, statement_cache_size=0)
    await adapter.open()
    try:
        me = adapter.for_agent(new_agent("bouncer"))
        item = await me.memory.create_item("pooled quartz", embedding=as_list(unit(9)))
        # own_only: the shared database holds other tests' family rows, which a vector branch
        # would rank as well.
        hits = await me.memory.search_items("quartz", embedding=as_list(unit(9)), own_only=True)
        assert [h.item.id for h in hits] == [item.id]
        task = await me.tasks.create_task("pooled task")
        assert (await me.tasks.update_task(task.id, status="completed")).status == "completed"
        pool = adapter._core._pool
        assert pool is not None
        async with pool.acquire() as conn:
            assert conn._con._stmt_cache.get_max_size() == 0  # type: ignore[attr-defined]
    finally:
        await adapter.aclose()


async def test_from_config_and_views(
    postgres_server: PostgresServer, pg_database: str, postgres_adapter: PgAdapter,
    new_agent: Callable[..., str],
) -> None:  # fmt: skip
    """from_config reads storage.postgres and storage.embeddingDim; the adapter itself has no
    memory/tasks/teams (they need an agent: for_agent), only the registry."""
    config = parse_config({
        "storage": {
            "backend": "postgres", "readFrom": "postgres", "writeTo": ["postgres"],
            "embeddingDim": EMBEDDING_DIM,
            "postgres": {
                "connectionString": postgres_server.dsn_for("agentbus_app", pg_database),
                "adminConnectionString": postgres_server.dsn_for("agentbus_owner", pg_database),
                "maxConnections": 3,
                "statementCacheSize": 0,
            },
        }
    })  # fmt: skip
    adapter = PgAdapter.from_config(config)
    async with adapter:
        assert adapter.is_ready()
        assert (adapter._core.max_connections, adapter._core.statement_cache_size) == (3, 0)
        with pytest.raises(StorageError, match="for_agent"):
            _ = adapter.memory
        me = adapter.for_agent(new_agent("cfg"))
        assert (await me.memory.create_item("configured pebble")).agent_id == me.agent_id
    assert not adapter.is_ready()
    with pytest.raises(ConfigError, match=r"storage\.postgres"):
        PgAdapter.from_config(parse_config({}))
    with pytest.raises(ConfigError, match="embedding_dim"):
        PgAdapter("postgres://x@127.0.0.1/x", embedding_dim=4000)


async def test_an_injected_pool_is_used_and_left_open(
    postgres_server: PostgresServer, pg_database: str, postgres_adapter: PgAdapter,
    new_agent: Callable[..., str],
) -> None:  # fmt: skip
    """PgAdapter(pool=...) serves from a pool made with init=init_connection and leaves it open
    when closed."""
    pool: asyncpg.Pool[Any] = await asyncpg.create_pool(
        postgres_server.dsn_for("agentbus_app", pg_database),
        min_size=1, max_size=2, init=init_connection,
    )  # fmt: skip
    try:
        adapter = PgAdapter(pool=pool, embedding_dim=EMBEDDING_DIM)
        await adapter.open()
        me = adapter.for_agent(new_agent("injected"))
        item = await me.memory.create_item("injected harbor", metadata={"b": 1, "a": 2})
        assert list(item.metadata) == ["a", "b"]
        assert await me.memory.get_item(item.id) == item
        await adapter.aclose()
        assert not adapter.is_ready()
        assert not pool.is_closing()
        with pytest.raises(StorageUnavailableError, match="not open"):
            await me.memory.get_item(item.id)
    finally:
        await pool.close()


# --- failures --------------------------------------------------------------------------------


@pytest.mark.slow
async def test_killing_postgres_mid_write_is_unavailable_and_leaves_no_partial_rows(
    new_agent: Callable[..., str],
) -> None:
    """SIGKILL of the server during a batched write raises StorageUnavailableError (the driver's
    error as __cause__); after a restart none of the batch's rows exist and the same adapter
    works again."""
    server = PostgresServer.start()
    adapter = PgAdapter(server.app_dsn, admin_dsn=server.owner_dsn, embedding_dim=EMBEDDING_DIM)
    watcher: asyncpg.Connection[Any] | None = None
    try:
        await adapter.open()
        me = adapter.for_agent(new_agent("crash"))
        batch = [{"summary": f"doomed row {n}", "embedding": as_list(unit(n))} for n in range(4000)]
        watcher = await asyncpg.connect(server.superuser_dsn)
        # Test clusters run with synchronous_commit off: make the schema survive the crash.
        await watcher.execute("CHECKPOINT")
        caught: list[BaseException] = []

        async def write() -> None:
            try:
                await me.memory.create_items(batch)
            except StorageError as exc:
                caught.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(write)
            # Polling another server's state, under a deadline: nothing here could set an event.
            with anyio.fail_after(30):
                while not await watcher.fetchval(  # noqa: ASYNC110
                    "SELECT count(*) FROM pg_stat_activity WHERE state = 'active'"
                    " AND query LIKE '%INSERT INTO memory_items%'"
                ):
                    await anyio.sleep(0.02)
            server.kill()
        watcher.terminate()
        watcher = None
        assert len(caught) == 1
        assert isinstance(caught[0], StorageUnavailableError), caught[0]
        assert isinstance(caught[0].__cause__, (asyncpg.PostgresError, asyncpg.InterfaceError))
        # Searches are one statement outside a transaction (migrations 0010, 0011): the server
        # being gone is the same clear error there.
        with pytest.raises(StorageUnavailableError):
            await me.memory.search_items("doomed", embedding=as_list(unit(1)))
        with pytest.raises(StorageUnavailableError):
            await me.knowledge.search("doomed")
        server.restart()
        owner = await asyncpg.connect(server.owner_dsn)
        try:
            left = await owner.fetchval(
                "SELECT count(*) FROM memory_items WHERE agent_id = $1", me.agent_id
            )
        finally:
            await owner.close()
        assert left == 0
        with anyio.fail_after(30):
            while True:  # the pool replaces its dead connections on use
                try:
                    survivor = await me.memory.create_item("written after the restart")
                    break
                except StorageUnavailableError:
                    await anyio.sleep(0.1)
        assert [i.id for i in await me.memory.list_items()] == [survivor.id]
        hits = await me.memory.search_items("written restart")
        assert [hit.item.id for hit in hits] == [survivor.id]
    finally:
        if watcher is not None:
            watcher.terminate()
        await adapter.aclose()
        server.close()
