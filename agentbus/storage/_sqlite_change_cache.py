"""The freshness machinery shared by SQLite's in-process vector caches.

A cache keeps rows of one table in memory. Before each use it compares ``PRAGMA data_version`` on
its own connection (which moves whenever any *other* connection — another process or this
adapter's writer — commits) and this adapter's own commit counter. When either moved, it reads
the keys that triggers appended to the table's change log since the last sequence number it saw
and reloads just those rows. It reloads everything on first use, when more than half the rows
changed, and when the change log was pruned past its position (``SQLiteAdapter.vacuum``).

Subclasses say which table and log (:class:`ChangeLog`) and how to forget and add rows.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._errors import StorageUnavailableError

_CHUNK = 500  # keys per IN (...) list


@dataclass(frozen=True, slots=True)
class ChangeLog:
    table: str  # the cached table
    key_column: str  # its integer key
    columns: str  # the columns a cached row needs (key first)
    changes_table: str  # (seq, key) appended by triggers
    changes_key: str  # the key's column in the change log
    pruned_key: str  # meta key: the log was pruned through this sequence number


class ChangeLogCache:
    """Base of a cache kept fresh from a change log; subclasses hold the rows."""

    log: ChangeLog

    def __init__(
        self, connect: Callable[[], sqlite3.Connection], dim: int, commits: Callable[[], int]
    ) -> None:
        self._connect = connect
        self._dim = dim
        self._commits = commits
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        self._loaded = False
        self._data_version: int | None = None
        self._commits_seen = -1
        self._last_seq = 0
        self._where: dict[int, Any] = {}  # cached key -> where the subclass keeps it
        self._probe_seen: int | None = None
        self.full_loads = 0
        self.incremental_loads = 0
        self.served_now = 0  # searches answered on the event loop (for tests and benchmarks)

    # -- what a subclass provides ------------------------------------------------------------

    def _reset(self) -> None:
        """Drop every cached row (before a full load)."""
        raise NotImplementedError

    def _forget(self, key: int) -> None:
        """Drop one cached row (it changed or was deleted)."""
        raise NotImplementedError

    def _add_rows(self, rows: list[tuple[Any, ...]]) -> None:
        """Cache rows read with ``log.columns``."""
        raise NotImplementedError

    def _committed(self) -> None:
        """Something was committed since the last refresh: drop what any commit may change
        beyond the cached rows (memberships, grants)."""

    # -- freshness -----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._where)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _connection(self) -> sqlite3.Connection:
        if self._closed:
            raise StorageUnavailableError("the SQLite adapter is closed; create a new one")
        if self._conn is None:
            self._conn = self._connect()
        return self._conn

    def refresh(self, conn: sqlite3.Connection, probe: int | None = None) -> None:
        """Catch up with commits made since the last use (by anyone). Call under ``_lock``.

        ``probe`` is the caller's ``Database.probe()``, taken *before* this call: once caught
        up, :meth:`unchanged_since_refresh` holds for as long as the probe reads the same.
        """
        data_version = conn.execute("PRAGMA data_version").fetchone()[0]
        commits = self._commits()
        if not (
            self._loaded and data_version == self._data_version and commits == self._commits_seen
        ):
            self._catch_up(conn)
            self._data_version, self._commits_seen = data_version, commits
            self._committed()
        if probe is not None:
            self._probe_seen = probe

    def unchanged_since_refresh(self, probe: int) -> bool:
        """Nothing can have been committed since the last refresh: the caller's ``probe`` reads
        what the one given to that refresh read, and this adapter's commit counter has not
        moved. Call under ``_lock``."""
        return self._loaded and probe == self._probe_seen and self._commits() == self._commits_seen

    def _catch_up(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN")
        try:
            pruned = conn.execute(
                "SELECT value FROM meta WHERE key = ?", (self.log.pruned_key,)
            ).fetchone()
            if not self._loaded or (pruned is not None and int(pruned[0]) > self._last_seq):
                self._full_load(conn)
            else:
                self._incremental_load(conn)
        except BaseException:
            self._loaded = False  # half-applied: start over at the next use
            raise
        finally:
            conn.execute("COMMIT")

    def _full_load(self, conn: sqlite3.Connection) -> None:
        log = self.log
        self._last_seq = conn.execute(
            f"SELECT coalesce(max(seq), 0) FROM {log.changes_table}"
        ).fetchone()[0]
        self._where = {}
        self._reset()
        rows = conn.execute(f"SELECT {log.columns} FROM {log.table} WHERE embedding IS NOT NULL")
        self._add_rows(rows.fetchall())
        self._loaded = True
        self.full_loads += 1

    def _incremental_load(self, conn: sqlite3.Connection) -> None:
        log = self.log
        changes = conn.execute(
            f"SELECT seq, {log.changes_key} FROM {log.changes_table} WHERE seq > ? ORDER BY seq",
            (self._last_seq,),
        ).fetchall()
        if not changes:
            return
        self._last_seq = changes[-1][0]
        keys = sorted({key for _, key in changes})
        if len(keys) > max(1000, len(self._where) // 2):
            self._full_load(conn)
            return
        for key in keys:
            if key in self._where:
                self._forget(key)
        rows = []
        for start in range(0, len(keys), _CHUNK):
            part = keys[start : start + _CHUNK]
            rows += conn.execute(
                f"SELECT {log.columns} FROM {log.table} WHERE embedding IS NOT NULL"
                f" AND {log.key_column} IN ({', '.join('?' * len(part))})",
                part,
            ).fetchall()
        self._add_rows(rows)
        self.incremental_loads += 1
