"""Exact vector search over knowledge chunks: an in-process cache of every embedded chunk,
grouped by collection, searched with numpy.

The caller passes the collections the agent may read (computed in SQL, in its read
transaction); only their blocks are scored, so the top ``k`` are computed over permitted chunks
alone and ``k`` hits come back whenever ``k`` permitted chunks are embedded. Each collection's
vectors are one contiguous normalised float32 matrix: a search over ten permitted collections
is ten matrix-vector products, no gather and no mask over the other collections.

Freshness works like the memory item cache (``_sqlite_vectors``): ``PRAGMA data_version`` on the
cache's own connection plus this adapter's commit counter tell when anything was committed;
triggers append the keys of changed chunks to ``knowledge_vector_changes``, and the cache reloads
just those rows (fully on the first search, or when ``vacuum`` pruned the log past its position).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from ._errors import StorageUnavailableError
from ._sqlite_vectors import Matrix, normalise

PRUNED_KEY = "knowledge_vector_changes_pruned_through"
_COLUMNS = "chunk_key, collection_id, document_id, chunk_index, embedding"
_CHUNK = 500  # keys per IN (...) list


def chunk_ref(document_id: str, chunk_index: int) -> str:
    """A chunk's name in rankings and fusion: ties between equal scores break by it."""
    return f"{document_id}:{chunk_index:06d}"


class _Block:
    """One collection's rows: growable, row-aligned; deletion moves the last row into the hole."""

    def __init__(self, dim: int, capacity: int = 16) -> None:
        self.n = 0
        self.vectors: Matrix = np.empty((capacity, dim), np.float32)
        self.keys: list[int] = []
        self.refs: list[str] = []
        self.pos: dict[int, int] = {}

    def extend(self, keys: list[int], refs: list[str], vectors: Matrix) -> None:
        end = self.n + len(keys)
        if end > len(self.vectors):
            bigger = np.empty((max(end, 2 * len(self.vectors)), self.vectors.shape[1]), np.float32)
            bigger[: self.n] = self.vectors[: self.n]
            self.vectors = bigger
        self.vectors[self.n : end] = vectors
        for offset, key in enumerate(keys):
            self.pos[key] = self.n + offset
        self.keys.extend(keys)
        self.refs.extend(refs)
        self.n = end

    def remove(self, key: int) -> None:
        index, last = self.pos.pop(key), self.n - 1
        if index != last:
            self.vectors[index] = self.vectors[last]
            self.keys[index], self.refs[index] = self.keys[last], self.refs[last]
            self.pos[self.keys[index]] = index
        self.keys.pop()
        self.refs.pop()
        self.n = last


class ChunkVectorCache:
    """Every embedded chunk's normalised vector by collection, fresh across processes."""

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
        self._blocks: dict[str, _Block] = {}
        self._where: dict[int, str] = {}  # chunk key -> collection id
        self.full_loads = 0
        self.incremental_loads = 0

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __len__(self) -> int:
        return len(self._where)

    def search(
        self, query: Matrix, k: int, collection_ids: Sequence[str]
    ) -> list[tuple[str, int, float]]:
        """The ``k`` chunks of ``collection_ids`` nearest to ``query``: ``(ref, chunk key,
        score)``, best first, ties by ref."""
        q = normalise(np.asarray(query, np.float32))
        with self._lock:
            self._refresh(self._connection())
            blocks = [
                block
                for collection_id in dict.fromkeys(collection_ids)
                if (block := self._blocks.get(collection_id)) is not None and block.n
            ]
            if not blocks:
                return []
            all_scores = np.concatenate([block.vectors[: block.n] @ q for block in blocks])
            if len(all_scores) > k:
                # Keep every row tied with the k-th score, so ties break by ref, not position.
                kth = np.partition(all_scores, len(all_scores) - k)[len(all_scores) - k]
                chosen: npt.NDArray[Any] = np.flatnonzero(all_scores >= kth)
            else:
                chosen = np.arange(len(all_scores))
            # Map each chosen row back to its block (only the chosen rows, never all of them).
            starts = np.cumsum([0] + [block.n for block in blocks[:-1]])
            owners = np.searchsorted(starts, chosen, side="right") - 1
            ranked = []
            for row, owner in zip(chosen.tolist(), owners.tolist(), strict=True):
                block, local = blocks[owner], row - int(starts[owner])
                ranked.append((-float(all_scores[row]), block.refs[local], block.keys[local]))
            ranked.sort()
        return [(ref, key, -negative) for negative, ref, key in ranked[:k]]

    # -- freshness -----------------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._closed:
            raise StorageUnavailableError("the SQLite adapter is closed; create a new one")
        if self._conn is None:
            self._conn = self._connect()
        return self._conn

    def _refresh(self, conn: sqlite3.Connection) -> None:
        data_version = conn.execute("PRAGMA data_version").fetchone()[0]
        commits = self._commits()
        if self._loaded and data_version == self._data_version and commits == self._commits_seen:
            return
        conn.execute("BEGIN")
        try:
            pruned = conn.execute("SELECT value FROM meta WHERE key = ?", (PRUNED_KEY,)).fetchone()
            if not self._loaded or (pruned is not None and int(pruned[0]) > self._last_seq):
                self._full_load(conn)
            else:
                self._incremental_load(conn)
        except BaseException:
            self._loaded = False  # half-applied: start over at the next search
            raise
        finally:
            conn.execute("COMMIT")
        self._data_version, self._commits_seen = data_version, commits

    def _full_load(self, conn: sqlite3.Connection) -> None:
        self._last_seq = conn.execute(
            "SELECT coalesce(max(seq), 0) FROM knowledge_vector_changes"
        ).fetchone()[0]
        self._blocks, self._where = {}, {}
        rows = conn.execute(f"SELECT {_COLUMNS} FROM knowledge_chunks WHERE embedding IS NOT NULL")
        self._add_rows(rows.fetchall())
        self._loaded = True
        self.full_loads += 1

    def _incremental_load(self, conn: sqlite3.Connection) -> None:
        changes = conn.execute(
            "SELECT seq, chunk_key FROM knowledge_vector_changes WHERE seq > ? ORDER BY seq",
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
            collection_id = self._where.pop(key, None)
            if collection_id is not None:
                block = self._blocks[collection_id]
                block.remove(key)
                if not block.n:
                    del self._blocks[collection_id]
        rows = []
        for start in range(0, len(keys), _CHUNK):
            part = keys[start : start + _CHUNK]
            rows += conn.execute(
                f"SELECT {_COLUMNS} FROM knowledge_chunks WHERE embedding IS NOT NULL"
                f" AND chunk_key IN ({', '.join('?' * len(part))})",
                part,
            ).fetchall()
        self._add_rows(rows)
        self.incremental_loads += 1

    def _add_rows(self, rows: list[tuple[Any, ...]]) -> None:
        rows = [row for row in rows if len(row[4]) == 4 * self._dim]  # another dim: skip
        if not rows:
            return
        rows.sort(key=lambda row: row[1])
        vectors = normalise(
            np.frombuffer(b"".join(row[4] for row in rows), np.float32).reshape(-1, self._dim)
        )
        start = 0
        while start < len(rows):
            collection_id = rows[start][1]
            end = start
            while end < len(rows) and rows[end][1] == collection_id:
                end += 1
            part = rows[start:end]
            keys = [row[0] for row in part]
            block = self._blocks.setdefault(collection_id, _Block(self._dim))
            block.extend(keys, [chunk_ref(row[2], row[3]) for row in part], vectors[start:end])
            for key in keys:
                self._where[key] = collection_id
            start = end
