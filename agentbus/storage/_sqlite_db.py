"""The SQLite database behind every view of one ``SQLiteAdapter``: connections, transactions,
migrations.

stdlib ``sqlite3`` blocks, so every statement runs in a worker thread
(``anyio.to_thread.run_sync``), never on the event loop. Connections:

- one **writer** connection, guarded by a lock; every write is one ``BEGIN IMMEDIATE``
  transaction (so a read-check-write sequence, e.g. a dependency cycle check, is atomic even
  against other processes: they wait up to ``busy_timeout`` for SQLite's write lock);
- a small pool of **reader** connections, each read a deferred transaction (one consistent
  snapshot); in WAL mode readers never wait for the writer;
- the vector caches' own connections (see ``_sqlite_vectors``, ``_sqlite_chunk_vectors``);
- one **probe** connection, the only one used on the event loop: it runs nothing but
  ``PRAGMA data_version`` (a read of the WAL index in shared memory, no table data), with a busy
  timeout of 0 so it never waits — when SQLite answers busy, the caller takes the thread path.
  It lets a vector search that the in-process cache can answer skip the worker thread.

Cancellation: a statement already handed to a worker thread runs to its end; the awaiting task
sees the cancellation afterwards. A cancelled write may therefore still have been committed.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import TypeVar

import anyio.to_thread

from ._canonical import now_utc
from ._errors import (
    MigrationError,
    NotFoundError,
    StorageError,
    StorageUnavailableError,
    ValidationError,
)
from ._sqlite_chunk_vectors import PRUNED_KEY as CHUNKS_PRUNED_KEY, ChunkVectorCache
from ._sqlite_codec import one, ts
from ._sqlite_vectors import VectorCache

T = TypeVar("T")

MIGRATIONS_DIR = "sqlite_migrations"
_FTS_TABLES = (
    "memory_items_fts", "lessons_fts", "tasks_fts", "knowledge_chunks_fts", "observations_fts",
)  # fmt: skip
_UNAVAILABLE = ("locked", "busy", "unable to open", "disk i/o", "readonly", "disk is full")


@contextlib.contextmanager
def map_sqlite_errors() -> Iterator[None]:
    """Translate sqlite3 exceptions into storage errors (the original is the ``__cause__``)."""
    try:
        yield
    except sqlite3.IntegrityError as exc:
        raise ValidationError(f"the write breaks a constraint: {exc}") from exc
    except sqlite3.OperationalError as exc:
        text = str(exc).lower()
        if any(word in text for word in _UNAVAILABLE):
            raise StorageUnavailableError(f"SQLite database unavailable: {exc}") from exc
        raise StorageError(f"SQLite error: {exc}") from exc
    except sqlite3.Error as exc:
        raise StorageError(f"SQLite error: {exc}") from exc


def migrations() -> list[tuple[int, str, str]]:
    """``(version, name, sql)`` of every ``sqlite_migrations/NNNN_name.sql``, in order."""
    found = []
    for entry in resources.files(__package__).joinpath(MIGRATIONS_DIR).iterdir():
        if entry.name.endswith(".sql"):
            number, _, rest = entry.name.partition("_")
            found.append((int(number), rest.removesuffix(".sql"), entry.read_text("utf-8")))
    return sorted(found)


def split_statements(script: str) -> list[str]:
    """Split a SQL script into statements (trigger bodies stay whole)."""
    statements, buffer = [], ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            statements.append(buffer.strip())
            buffer = ""
    return statements


class Database:
    """Connections and transactions of one SQLite file, shared by an adapter and its views."""

    def __init__(self, path: Path, *, embedding_dim: int, busy_timeout: float) -> None:
        self.path = path
        self.embedding_dim = embedding_dim
        self.busy_timeout = busy_timeout
        self.commits = 0  # own write transactions committed; the vector cache watches it
        self.vectors = VectorCache(self.connect, embedding_dim, lambda: self.commits)
        self.chunk_vectors = ChunkVectorCache(self.connect, embedding_dim, lambda: self.commits)
        self._state = "new"
        self._writer: sqlite3.Connection | None = None
        self._write_lock = threading.Lock()
        self._readers: list[sqlite3.Connection] = []
        self._pool_lock = threading.Lock()
        self._probe: sqlite3.Connection | None = None

    # -- connections -------------------------------------------------------------------------

    def connect(self) -> sqlite3.Connection:
        """A new connection: autocommit mode (transactions are explicit), foreign keys on."""
        conn = sqlite3.connect(
            self.path,
            timeout=self.busy_timeout,
            isolation_level=None,
            check_same_thread=False,  # used by one worker thread at a time, under our locks
        )
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
        conn.execute("PRAGMA foreign_keys = ON")
        # NORMAL is durable across application crashes in WAL mode; a power cut may lose the
        # last transactions but never corrupts the file.
        conn.execute("PRAGMA synchronous = NORMAL")
        return conn

    @property
    def is_open(self) -> bool:
        return self._state == "open"

    def _check_open(self) -> None:
        if self._state == "new":
            raise StorageUnavailableError("the SQLite adapter is not open; await adapter.open()")
        if self._state == "closed":
            raise StorageUnavailableError("the SQLite adapter is closed; create a new one")

    # -- lifecycle ---------------------------------------------------------------------------

    def open_sync(self) -> None:
        with self._write_lock:
            if self._state == "open":
                return
            if self._state == "closed":
                raise StorageUnavailableError("the SQLite adapter is closed; create a new one")
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StorageUnavailableError(f"cannot create {self.path.parent}: {exc}") from exc
            with map_sqlite_errors():
                writer = self.connect()
                try:
                    mode = writer.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                    if str(mode).lower() != "wal":
                        raise StorageError(f"SQLite refused WAL mode (got {mode!r}) at {self.path}")
                    apply_migrations(writer)
                    self._check_dimension(writer)
                except BaseException:
                    writer.close()
                    raise
                # Made here, off the loop; used on the loop, by one thread at a time.
                self._probe = sqlite3.connect(
                    self.path, timeout=0, isolation_level=None, check_same_thread=False
                )
            self._writer = writer
            self._state = "open"

    def _check_dimension(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            stored = one(conn, "SELECT value FROM meta WHERE key = 'embedding_dim'")
            if stored is not None and int(stored) != self.embedding_dim:
                embedded = one(
                    conn,
                    "SELECT 1 FROM memory_items WHERE embedding IS NOT NULL UNION ALL"
                    " SELECT 1 FROM knowledge_chunks WHERE embedding IS NOT NULL LIMIT 1",
                )
                if embedded:
                    raise MigrationError(
                        f"{self.path} holds {stored}-dimensional embeddings but "
                        f"storage.embeddingDim is {self.embedding_dim}; use the dimension the "
                        "store was built with, or re-embed into a new database"
                    )
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('embedding_dim', ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(self.embedding_dim),),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def close_sync(self) -> None:
        with self._write_lock:
            self._state = "closed"
            if self._writer is not None:
                self._writer.close()
                self._writer = None
        with self._pool_lock:
            readers, self._readers = self._readers, []
            probe, self._probe = self._probe, None
        for conn in readers:
            conn.close()
        if probe is not None:
            probe.close()
        self.vectors.close()
        self.chunk_vectors.close()

    def probe(self) -> int | None:
        """``PRAGMA data_version`` read on the event loop, never waiting (None: busy or closed).

        It moves whenever another connection commits — this adapter's writer, another process —
        so an unchanged probe proves that nothing was committed since it was last read.
        """
        probe = self._probe
        if probe is None or self._state != "open":
            return None
        try:
            version: int = probe.execute("PRAGMA data_version").fetchone()[0]
        except sqlite3.Error:
            return None
        return version

    # -- transactions ------------------------------------------------------------------------

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` in one write transaction on the writer connection, off the loop."""
        self._check_open()
        return await anyio.to_thread.run_sync(self._write_sync, fn)

    def _write_sync(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        with self._write_lock, map_sqlite_errors():
            self._check_open()
            conn = self._writer
            assert conn is not None
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            self.commits += 1
            return result

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` in one read transaction (a consistent snapshot), off the loop."""
        self._check_open()
        return await anyio.to_thread.run_sync(self.read_sync, fn)

    def read_sync(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        with map_sqlite_errors():
            conn = self._take_reader()
            try:
                conn.execute("BEGIN")
                try:
                    return fn(conn)
                finally:
                    if conn.in_transaction:
                        conn.execute("COMMIT")
            finally:
                self._return_reader(conn)

    def _take_reader(self) -> sqlite3.Connection:
        with self._pool_lock:
            self._check_open()
            if self._readers:
                return self._readers.pop()
        return self.connect()

    def _return_reader(self, conn: sqlite3.Connection) -> None:
        with self._pool_lock:
            if self._state == "open":
                self._readers.append(conn)
                return
        conn.close()

    def vacuum_sync(self) -> None:
        """Prune the vector change logs, merge FTS5 segments, then VACUUM (outside any
        transaction). Caches in other processes reload fully at their next search."""
        with self._write_lock, map_sqlite_errors():
            self._check_open()
            conn = self._writer
            assert conn is not None
            conn.execute("BEGIN IMMEDIATE")
            try:
                for log, marker in (
                    ("vector_changes", "vector_changes_pruned_through"),
                    ("knowledge_vector_changes", CHUNKS_PRUNED_KEY),
                ):
                    newest = one(conn, f"SELECT coalesce(max(seq), 0) FROM {log}")
                    conn.execute(f"DELETE FROM {log} WHERE seq <= ?", (newest,))
                    conn.execute(
                        "INSERT INTO meta (key, value) VALUES (?, ?)"
                        " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                        (marker, str(newest)),
                    )
                for table in _FTS_TABLES:
                    conn.execute(f"INSERT INTO {table} ({table}) VALUES ('optimize')")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            self.commits += 1
            conn.execute("VACUUM")


def apply_migrations(conn: sqlite3.Connection) -> None:
    """Apply every migration the ledger lacks, each in its own ``BEGIN IMMEDIATE`` transaction
    (two processes opening one file at once: the second waits, then finds the row)."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
    )
    known = migrations()
    newest = one(conn, "SELECT max(version) FROM schema_migrations")
    if newest is not None and newest > known[-1][0]:
        raise MigrationError(
            f"the database's schema version {newest} is newer than this agentbus knows "
            f"({known[-1][0]}); upgrade agentbus"
        )
    for version, name, sql in known:
        conn.execute("BEGIN IMMEDIATE")
        try:
            if one(conn, "SELECT 1 FROM schema_migrations WHERE version = ?", (version,)):
                conn.execute("COMMIT")
                continue
            for statement in split_statements(sql):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                (version, name, ts(now_utc())),
            )
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                message = f"SQLite migration {version:04d}_{name} failed: {exc}"
                raise MigrationError(message) from exc
            raise


class Scoped:
    """Base of the per-agent stores: the shared database and the acting agent."""

    def __init__(self, db: Database, agent_id: str) -> None:
        self._db = db
        self._agent = agent_id

    def _require_team(self, conn: sqlite3.Connection, team_id: str | None) -> None:
        """A ``team_id`` on a new row must name an active team this agent is a member of.

        Raises: NotFoundError (no such team visible to this agent).
        """
        if team_id is None:
            return
        member = one(
            conn,
            "SELECT 1 FROM team_members tm JOIN teams t ON t.id = tm.team_id"
            " WHERE tm.team_id = ? AND tm.agent_id = ? AND t.status = 'active'",
            (team_id, self._agent),
        )
        if not member:
            raise NotFoundError(f"team {team_id} not found (or this agent is not a member)")
