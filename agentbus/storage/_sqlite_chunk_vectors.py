"""Exact vector search over knowledge chunks: an in-process cache of every embedded chunk,
grouped by collection, searched with numpy.

Only the collections the agent may read are scored, so the top ``k`` are computed over
permitted chunks alone and ``k`` hits come back whenever ``k`` permitted chunks are embedded.
The permitted collection ids are read by the caller's query (``permitted``), on the cache's
connection right after it caught up, and kept per agent until the next commit anywhere (a
grant, a revoke, a collection made public or deleted: any commit empties them). Each
collection's vectors are one contiguous normalised float32 matrix: a search over ten permitted
collections is ten matrix-vector products, no gather and no mask over the other collections. A
set of permitted collections searched again (an agent's grants change rarely) is scored as one
matrix: the blocks stacked once and kept (a few sets, bounded in rows) until any chunk changes
— one product instead of one per collection, each with numpy's fixed cost.

The cache also keeps what a hit shows of each embedded chunk (``ChunkRow``: its text and its
document's title; about the text's size again per chunk), so a vector search needs no read of
the database once the cache is fresh.

Freshness works like the memory item cache (``_sqlite_vectors``): ``PRAGMA data_version`` on the
cache's own connection plus this adapter's commit counter tell when anything was committed;
triggers append the keys of changed chunks (and of the chunks of a document whose title
changed) to ``knowledge_vector_changes``, and the cache reloads just those rows (fully on the
first search, or when ``vacuum`` pruned the log past its position).

Two ways in, as for memory items: :meth:`ChunkVectorCache.search` refreshes first and runs in a
worker thread; :meth:`ChunkVectorCache.search_now` runs on the event loop and answers only when
nothing can have changed since the last refresh — the caller's probe (``Database.probe``, taken
*before* that refresh read anything) is unchanged, the commit counter is unchanged, the agent's
permitted collections were read since, no thread holds the cache, and the permitted chunks are
few enough to score without holding the loop more than a few milliseconds — else it returns None
and the caller takes the thread path.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np

from ._sqlite_change_cache import ChangeLog, ChangeLogCache
from ._sqlite_vectors import NOW_MAX_WORK, Matrix, normalise, top_rows

PRUNED_KEY = "knowledge_vector_changes_pruned_through"
_COLUMNS = (
    "c.chunk_key, c.collection_id, c.document_id, c.chunk_index, c.embedding, d.title, c.text"
)
_STACKS = 8  # permitted sets kept stacked
_STACK_MAX_ROWS = 25_000  # larger sets are scored block by block (no second copy of them)
_AGENTS = 4096  # agents whose permitted collections are kept (until the next commit)

Ranked = list[tuple[str, int, float]]  # (chunk ref, chunk key, score), best first
Permitted = Callable[[sqlite3.Connection], Iterable[str]]  # an agent's readable collection ids


class ChunkRow(NamedTuple):
    """What a search hit shows of a chunk."""

    document_id: str
    collection_id: str
    title: str
    chunk_index: int
    text: str


def chunk_ref(document_id: str, chunk_index: int) -> str:
    """A chunk's name in rankings and fusion: ties between equal scores break by it."""
    return f"{document_id}:{chunk_index:06d}"


def within(permitted: tuple[str, ...], only: Sequence[str] | None) -> tuple[str, ...]:
    """The permitted collections among ``only`` (all of them when ``only`` is None)."""
    if only is None:
        return permitted
    wanted = set(only)
    return tuple(collection_id for collection_id in permitted if collection_id in wanted)


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


class ChunkVectorCache(ChangeLogCache):
    """Every embedded chunk's normalised vector and row by collection, fresh across processes."""

    log = ChangeLog(
        table="knowledge_chunks c JOIN knowledge_documents d ON d.id = c.document_id",
        key_column="c.chunk_key", columns=_COLUMNS, changes_table="knowledge_vector_changes",
        changes_key="chunk_key", pruned_key=PRUNED_KEY,
    )  # fmt: skip

    def __init__(
        self, connect: Callable[[], sqlite3.Connection], dim: int, commits: Callable[[], int]
    ) -> None:
        super().__init__(connect, dim, commits)
        self._blocks: dict[str, _Block] = {}
        self._rows: dict[int, ChunkRow] = {}
        # permitted collection ids -> their blocks stacked: (vectors, refs, keys); emptied
        # whenever a chunk is added or removed
        self._stacks: dict[tuple[str, ...], tuple[Matrix, list[str], list[int]]] = {}
        self._permitted: dict[str, tuple[str, ...]] = {}  # agent -> ids, until the next commit

    def _committed(self) -> None:
        self._permitted = {}  # any commit may have changed a grant or a collection

    def search(
        self, agent_id: str, query: Matrix, k: int, *, permitted: Permitted,
        only: Sequence[str] | None = None, probe: int | None = None,
    ) -> tuple[Ranked, tuple[str, ...]]:  # fmt: skip
        """The ``k`` chunks nearest to ``query`` among the collections ``agent_id`` may read
        (``permitted(conn)`` reads them when they are not known since the last commit), and
        among ``only``: ``(ref, chunk key, score)``, best first, ties by ref; and the
        collections searched.

        ``probe`` is the caller's data-version probe, taken before this call: once the cache
        has caught up, :meth:`search_now` answers while the probe still reads the same.
        """
        q = normalise(np.asarray(query, np.float32))
        with self._lock:
            conn = self._connection()
            self.refresh(conn, probe)
            allowed = self._permitted.get(agent_id)
            if allowed is None:
                allowed = tuple(sorted(set(permitted(conn))))
                if len(self._permitted) >= _AGENTS:
                    del self._permitted[next(iter(self._permitted))]
                self._permitted[agent_id] = allowed
            scope = within(allowed, only)
            return self._rank(q, k, scope), scope

    def search_now(
        self, agent_id: str, query: Matrix, k: int, *, probe: int,
        only: Sequence[str] | None = None,
    ) -> list[tuple[ChunkRow, float]] | None:  # fmt: skip
        """:meth:`search` answered from memory on the calling thread (the event loop), with the
        chunks themselves; None when the cache may be stale, does not know the agent's
        permitted collections, is busy, or the permitted chunks are too many to score on the
        event loop: use :meth:`search`."""
        if not self._lock.acquire(blocking=False):
            return None  # a worker thread is refreshing or searching
        try:
            if not self.unchanged_since_refresh(probe):
                return None
            allowed = self._permitted.get(agent_id)
            if allowed is None:
                return None
            scope = within(allowed, only)
            blocks = self._blocks
            if sum(blocks[c].n for c in scope if c in blocks) * self._dim > NOW_MAX_WORK:
                return None  # too long for the event loop
            ranked = self._rank(normalise(np.asarray(query, np.float32)), k, scope)
            rows = self._rows
            self.served_now += 1
            return [(rows[key], score) for _, key, score in ranked]
        finally:
            self._lock.release()

    def rows(self, keys: Iterable[int]) -> dict[int, ChunkRow]:
        """The cached rows of those chunks (an unembedded or unknown chunk is left out)."""
        with self._lock:
            rows = self._rows
            return {key: row for key in keys if (row := rows.get(key)) is not None}

    def _rank(self, q: Matrix, k: int, collection_ids: tuple[str, ...]) -> Ranked:
        permitted = tuple(
            collection_id
            for collection_id in collection_ids
            if (block := self._blocks.get(collection_id)) is not None and block.n
        )
        if not permitted:
            return []
        blocks = [self._blocks[collection_id] for collection_id in permitted]
        stacked = sum(block.n for block in blocks) <= _STACK_MAX_ROWS
        if stacked:
            vectors, refs, keys = self._stacked(permitted, blocks)
            all_scores = vectors @ q
        else:  # a large set: one product per block, no second copy of its rows
            all_scores = np.concatenate([block.vectors[: block.n] @ q for block in blocks])
        chosen = top_rows(all_scores, k)  # ties with the k-th kept: broken by ref below
        negated = (-all_scores[chosen]).tolist()
        if stacked:
            found = [(refs[row], keys[row]) for row in chosen.tolist()]
        else:  # map each chosen row back to its block (only the chosen rows)
            starts = np.cumsum([0] + [block.n for block in blocks[:-1]])
            owners = np.searchsorted(starts, chosen, side="right") - 1
            found = []
            for row, owner in zip(chosen.tolist(), owners.tolist(), strict=True):
                block, local = blocks[owner], row - int(starts[owner])
                found.append((block.refs[local], block.keys[local]))
        ranked = sorted((score, ref, key) for score, (ref, key) in zip(negated, found, strict=True))
        return [(ref, key, -negative) for negative, ref, key in ranked[:k]]

    def _stacked(
        self, permitted: tuple[str, ...], blocks: list[_Block]
    ) -> tuple[Matrix, list[str], list[int]]:
        """The permitted blocks' rows as one matrix, kept for the next search of the set."""
        found = self._stacks.get(permitted)
        if found is None:
            found = (
                np.concatenate([block.vectors[: block.n] for block in blocks]),
                [ref for block in blocks for ref in block.refs],
                [key for block in blocks for key in block.keys],
            )
            if len(self._stacks) >= _STACKS:
                del self._stacks[next(iter(self._stacks))]  # the oldest set
            self._stacks[permitted] = found
        return found

    def _reset(self) -> None:
        self._blocks = {}
        self._rows = {}
        self._stacks = {}

    def _forget(self, key: int) -> None:
        self._stacks = {}
        collection_id = self._where.pop(key)
        del self._rows[key]
        block = self._blocks[collection_id]
        block.remove(key)
        if not block.n:
            del self._blocks[collection_id]

    def _add_rows(self, rows: list[tuple[Any, ...]]) -> None:
        rows = [row for row in rows if len(row[4]) == 4 * self._dim]  # another dim: skip
        if not rows:
            return
        self._stacks = {}
        rows.sort(key=lambda row: row[1])
        vectors = normalise(
            np.frombuffer(b"".join(row[4] for row in rows), np.float32).reshape(-1, self._dim)
        )
        for key, collection_id, document_id, index, _, title, text in rows:
            self._rows[key] = ChunkRow(document_id, collection_id, title, index, text)
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
