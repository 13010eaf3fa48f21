"""PostgreSQL databases for the storage tests, laid out like ``postgres_roles.sql`` lays out
``agentbus``: owned by agentbus_owner, pgvector installed by the superuser, the app role may
connect and use schema public (tables and grants come from the adapter's migrations)."""

from __future__ import annotations

import secrets
import subprocess

from agentbus.testing import PostgresServer


def psql(server: PostgresServer, database: str, *statements: str) -> str:
    """Run statements as the superuser, each on its own (CREATE DATABASE cannot run in a
    transaction block); the unaligned tuples-only output."""
    args = [str(server.bindir / "psql"), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1"]
    args += ["-d", server.dsn_for("postgres", database)]
    for statement in statements:
        args += ["-c", statement]
    result = subprocess.run(args, capture_output=True, text=True, check=False, timeout=60)
    if result.returncode != 0:
        raise AssertionError(f"psql on {database} failed: {result.stderr.strip()}")
    return result.stdout.strip()


def create_app_database(server: PostgresServer, prefix: str = "ab") -> str:
    """A new, empty database laid out for the adapter; its name starts with ``prefix``."""
    name = f"{prefix}_{secrets.token_hex(5)}"
    psql(
        server, "postgres",
        f"CREATE DATABASE {name} OWNER agentbus_owner",
        f"REVOKE ALL ON DATABASE {name} FROM PUBLIC",
        f"GRANT CONNECT ON DATABASE {name} TO agentbus_app",
    )  # fmt: skip
    psql(
        server, name,
        "CREATE EXTENSION vector",
        "ALTER SCHEMA public OWNER TO agentbus_owner",
        "REVOKE ALL ON SCHEMA public FROM PUBLIC",
        "GRANT USAGE ON SCHEMA public TO agentbus_app",
    )  # fmt: skip
    return name


def drop_database(server: PostgresServer, name: str) -> None:
    psql(server, "postgres", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
