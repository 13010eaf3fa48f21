"""Numbered SQL migrations with a ledger, applied by the owner role under an advisory lock.

The files are ``agentbus/storage/migrations/NNNN_name.sql`` — one schema source, no ORM copy and
no hand-made tables. ``{embedding_dim}`` in them is replaced by ``storage.embeddingDim``.
:func:`migrate` connects with the owner role (``adminConnectionString``: the app role may not
create anything), takes ``pg_advisory_xact_lock``, creates the ledger ``schema_migrations`` if
needed and applies the missing versions in that one transaction: two processes opening at once
migrate once, and a failing migration leaves nothing behind. A ledger row records each file's
sha256, so an edited file that was already applied is reported instead of silently skipped.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import asyncpg

from .._errors import ConfigError
from ._errors import MigrationError
from ._pg_errors import SETUP_HINT, map_pg_errors

MIGRATION_LOCK = 7305950283400911616  # pg_advisory_xact_lock key: 'agentbus.migrations'
_MIN_PGVECTOR = (0, 8)
_FILE = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")

_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    template: str
    checksum: str  # sha256 of the file as shipped (before {embedding_dim} is filled in)

    def render(self, *, embedding_dim: int) -> str:
        # str.replace, not str.format: the SQL is full of braces ('{}'::jsonb, format()).
        return self.template.replace("{embedding_dim}", str(int(embedding_dim)))


@cache
def load_migrations() -> tuple[Migration, ...]:
    """The shipped migrations in version order (1, 2, 3 … with no gaps)."""
    found: list[Migration] = []
    for entry in resources.files("agentbus.storage").joinpath("migrations").iterdir():
        match = _FILE.fullmatch(entry.name)
        if match is None:
            continue
        text = entry.read_text(encoding="utf-8")
        found.append(
            Migration(
                version=int(match.group(1)),
                name=match.group(2),
                template=text,
                checksum=hashlib.sha256(text.encode()).hexdigest(),
            )
        )
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise MigrationError(f"migration files must be numbered 1..n: {[m.version for m in found]}")
    return tuple(found)


async def migrate(admin_dsn: str, *, embedding_dim: int) -> list[int]:
    """Bring the schema up to date as the owner role; returns the versions applied now.

    Raises:
        MigrationError: pgvector missing or too old, a migration failed (nothing of it stays),
            an applied file was edited, the database is newer than this agentbus, or its
            embedding dimension differs from ``embedding_dim``.
        StorageUnavailableError: PostgreSQL cannot be reached.
    """
    migrations = load_migrations()
    with map_pg_errors("connecting as the owner role to migrate"):
        conn: asyncpg.Connection[asyncpg.Record] = await asyncpg.connect(admin_dsn)
    try:
        with map_pg_errors("migrating"):
            await _check_pgvector(conn)
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
                applied = await _ledger(conn, create=True)
                done = [m.version for m in migrations if m.version not in applied]
                for migration in migrations:
                    if migration.version in applied:
                        continue
                    await _apply(conn, migration, embedding_dim=embedding_dim)
                _check_ledger(applied, migrations)
                await _check_dimension(conn, embedding_dim)
    finally:
        with map_pg_errors("closing the migration connection"):
            await conn.close(timeout=5)
    return done


async def _apply(conn: Any, migration: Migration, *, embedding_dim: int) -> None:
    try:
        await conn.execute(migration.render(embedding_dim=embedding_dim))
    except asyncpg.PostgresError as exc:
        raise MigrationError(
            f"migration {migration.version:04d}_{migration.name} failed: {exc}; nothing was "
            "applied. Migrations must run as the owner role (storage.postgres."
            f"adminConnectionString, e.g. agentbus_owner); {SETUP_HINT}"
        ) from exc
    await conn.execute(
        "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
        migration.version, migration.name, migration.checksum,
    )  # fmt: skip


async def check_schema(conn: Any, *, embedding_dim: int) -> None:
    """What ``open()`` checks on an app-role connection: every shipped migration is applied
    (same files), the vector dimension matches, and row-level security applies to this role.

    Raises: MigrationError, ConfigError (a role that would bypass row-level security).
    """
    role = await conn.fetchrow(
        "SELECT current_user AS name, rolsuper, rolbypassrls FROM pg_roles"
        " WHERE rolname = current_user"
    )
    if role is not None and (role["rolsuper"] or role["rolbypassrls"]):
        raise ConfigError(
            f"the connection string logs in as {role['name']!r}, which bypasses row-level "
            "security; agents must use the app role (agentbus_app) and only migrations the "
            "owner role (adminConnectionString)"
        )
    migrations = load_migrations()
    applied = await _ledger(conn, create=False)
    missing = [m.version for m in migrations if m.version not in applied]
    if missing:
        raise MigrationError(
            f"the database lacks migrations {missing}: open a PgAdapter with admin_dsn "
            "(storage.postgres.adminConnectionString, the owner role) to apply them"
        )
    _check_ledger(applied, migrations)
    await _check_dimension(conn, embedding_dim)


async def _ledger(conn: Any, *, create: bool) -> dict[int, str]:
    if create:
        await conn.execute(_LEDGER)
    elif await conn.fetchval("SELECT to_regclass('public.schema_migrations')") is None:
        return {}
    rows = await conn.fetch("SELECT version, checksum FROM schema_migrations")
    return {row["version"]: row["checksum"] for row in rows}


def _check_ledger(applied: dict[int, str], migrations: tuple[Migration, ...]) -> None:
    shipped = {m.version: m for m in migrations}
    newer = sorted(set(applied) - set(shipped))
    if newer:
        raise MigrationError(
            f"the database has migrations {newer} that this agentbus does not know: it was "
            "migrated by a newer version; upgrade agentbus"
        )
    for version, checksum in applied.items():
        if shipped[version].checksum != checksum:
            m = shipped[version]
            raise MigrationError(
                f"migration {version:04d}_{m.name}.sql differs from the one applied to this "
                "database; never edit an applied migration, add a new one"
            )


async def _check_pgvector(conn: Any) -> None:
    version = await conn.fetchval("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
    if version is None:
        raise MigrationError(
            "pgvector is not installed in this database; a superuser must run "
            f"CREATE EXTENSION vector ({SETUP_HINT})"
        )
    parts = tuple(int(p) for p in re.findall(r"\d+", version)[:2])
    if parts < _MIN_PGVECTOR:
        raise MigrationError(
            f"pgvector >= 0.8 is required (iterative HNSW scans), found {version}; a superuser "
            f"must run ALTER EXTENSION vector UPDATE ({SETUP_HINT})"
        )


async def _check_dimension(conn: Any, embedding_dim: int) -> None:
    stored = await conn.fetchval(
        "SELECT atttypmod FROM pg_attribute"
        " WHERE attrelid = 'public.memory_items'::regclass AND attname = 'embedding'"
    )
    if stored is not None and stored != embedding_dim:
        raise MigrationError(
            f"this database stores {stored}-dimensional embeddings but storage.embeddingDim is "
            f"{embedding_dim}; use {stored}, or a new database for another embedding model"
        )
