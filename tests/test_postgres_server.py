"""The test harness's PostgreSQL clusters are real, separate processes with the production roles."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import pytest

from agentbus.testing import PostgresServer
from agentbus.testing.pytest_plugin import start_or_skip


def _start() -> PostgresServer:
    return start_or_skip(PostgresServer.start)


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    server = _start()
    yield server
    server.close()


@pytest.fixture
def private_pg() -> Iterator[PostgresServer]:
    """A cluster of its own, for tests that kill or restart it."""
    server = _start()
    yield server
    server.close()


def psql(server: PostgresServer, sql: str, *, user: str = "postgres") -> str:
    """Run ``sql`` as ``user`` in database agentbus; the unaligned, tuples-only output."""
    result = subprocess.run(
        [str(server.bindir / "psql"), "-X", "-At", "-v", "ON_ERROR_STOP=1",
         "-d", server.dsn_for(user), "-c", sql],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )  # fmt: skip
    if result.returncode != 0:
        raise AssertionError(f"psql as {user} failed: {result.stderr.strip()}")
    return result.stdout.strip()


def process_gone(pid: int) -> bool:
    """Gone, or a zombie waiting for init to reap it: either way it runs no more."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def test_killed_server_recovers_on_restart(private_pg: PostgresServer) -> None:
    """SIGKILL takes the whole server down at once; a restart recovers every committed row."""
    server = private_pg
    pid = server.pid
    assert pid != os.getpid()
    assert psql(server, "SELECT pg_backend_pid()") != ""
    # synchronous_commit is off in test clusters; on for this commit, so it is in the WAL.
    psql(server, "SET synchronous_commit = on; CREATE TABLE kept AS SELECT 42 AS x")

    server.kill()

    assert process_gone(pid)
    assert not server.is_running()
    with pytest.raises(AssertionError, match="failed"):
        psql(server, "SELECT 1")

    server.restart()

    assert server.is_running()
    assert server.pid != pid
    assert psql(server, "SELECT x FROM kept") == "42"


def test_stopped_server_starts_again_on_its_port(private_pg: PostgresServer) -> None:
    """stop() is a clean shutdown (twice is fine); restart() serves the same port again."""
    server = private_pg
    port = server.port
    server.stop()
    server.stop()
    assert not server.is_running()
    server.restart()
    assert server.port == port
    assert psql(server, "SHOW port") == str(port)


def test_close_removes_the_cluster_and_is_idempotent() -> None:
    """close() stops the server and deletes its directory; a second close() does nothing."""
    server = _start()
    pid = server.pid
    server.close()
    assert process_gone(pid)
    assert not server.base_dir.exists()
    server.close()


@pytest.mark.parametrize(
    ("role", "expected"),
    [("agentbus_owner", "f|t|f|t"), ("agentbus_app", "f|f|f|t")],
)
def test_role_attributes(pg: PostgresServer, role: str, expected: str) -> None:
    """Neither role is a superuser; only the owner bypasses row-level security."""
    row = psql(
        pg,
        "SELECT rolsuper, rolbypassrls, rolcreaterole, rolcanlogin FROM pg_roles"
        f" WHERE rolname = '{role}'",
    )
    assert row == expected


def test_app_is_not_a_member_of_owner(pg: PostgresServer) -> None:
    """The app role cannot SET ROLE to the owner: no membership, direct or inherited."""
    assert psql(pg, "SELECT pg_has_role('agentbus_app', 'agentbus_owner', 'MEMBER')") == "f"
    memberships = psql(
        pg,
        "SELECT count(*) FROM pg_auth_members WHERE member = 'agentbus_app'::regrole",
    )
    assert memberships == "0"


def test_app_owns_nothing(pg: PostgresServer) -> None:
    """No relation, schema, function, type or database belongs to the app role."""
    owned = psql(
        pg,
        """
        SELECT (SELECT count(*) FROM pg_class WHERE relowner = r.oid)
             + (SELECT count(*) FROM pg_namespace WHERE nspowner = r.oid)
             + (SELECT count(*) FROM pg_proc WHERE proowner = r.oid)
             + (SELECT count(*) FROM pg_type WHERE typowner = r.oid)
             + (SELECT count(*) FROM pg_database WHERE datdba = r.oid)
        FROM pg_roles r WHERE rolname = 'agentbus_app'
        """,
    )
    assert owned == "0"


def test_owner_owns_database_and_schema(pg: PostgresServer) -> None:
    """Migrations run as the owner: it owns the database and schema public and can create."""
    owners = psql(
        pg,
        "SELECT datdba::regrole, (SELECT nspowner::regrole FROM pg_namespace"
        " WHERE nspname = 'public') FROM pg_database WHERE datname = 'agentbus'",
    )
    assert owners == "agentbus_owner|agentbus_owner"
    psql(pg, "CREATE TABLE owner_probe (x int); DROP TABLE owner_probe", user="agentbus_owner")


def test_app_cannot_create_in_public(pg: PostgresServer) -> None:
    """The app role has USAGE on schema public, not CREATE: tables come from migrations."""
    with pytest.raises(AssertionError, match="permission denied for schema public"):
        psql(pg, "CREATE TABLE app_probe (x int)", user="agentbus_app")


def test_vector_extension_is_at_least_0_8(pg: PostgresServer) -> None:
    """pgvector >= 0.8 is installed in the database, and the app role can use its operators."""
    version = psql(pg, "SELECT extversion FROM pg_extension WHERE extname = 'vector'")
    assert tuple(int(part) for part in version.split(".")[:2]) >= (0, 8)
    distance = psql(pg, "SELECT '[1,2]'::vector <-> '[1,3]'::vector", user="agentbus_app")
    assert float(distance) == 1.0


def test_roles_sql_is_idempotent(pg: PostgresServer) -> None:
    """The shared roles SQL runs again on an existing cluster (setup-postgres.sh start does)."""
    sql = resources.files("agentbus.testing").joinpath("postgres_roles.sql").read_text()
    result = subprocess.run(
        [str(pg.bindir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1",
         "-d", pg.dsn_for("postgres", "postgres")],
        input=sql,
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
