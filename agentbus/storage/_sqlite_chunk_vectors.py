"""Exact vector search over knowledge chunks: an in-process cache of every embedded chunk,
grouped by collection, searched with numpy.

The caller passes the collections the agent may read (computed in SQL, in its read
transaction); only their blocks are scored, so the top ``k`` are computed over permitted chunks
alone and ``k`` hits come back whenever ``k`` permitted chunks are embedded. Each collection's
vectors are one contiguous normalised float32 matrix: a search over ten permitted collections
is ten matrix-vector products, no gather and no mask over the other collections. A set of
permitted collections searched again (an agent's grants change rarely) is scored as one matrix:
the blocks stacked once and kept (a few sets, bounded in rows) until any chunk changes — one
product instead of one per collection, each with numpy's fixed cost.

Freshness works like the memory item cache (``_sqlite_vectors``): ``PRAGMA data_version`` on the
cache's own connection plus this adapter's commit counter tell when anything was committed;
triggers append the keys of changed chunks to ``knowledge_vector_changes``, and the cache reloads
just those rows (fully on the first search, or when ``vacuum`` pruned the log past its position).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ._sqlite_change_cache import ChangeLog, ChangeLogCache
from ._sqlite_vectors import Matrix, normalise, top_rows

PRUNED_KEY = "knowledge_vector_changes_pruned_through"
_COLUMNS = "chunk_key, collection_id, document_id, chunk_index, embedding"
_STACKS = 8  # permitted sets kept stacked
_STACK_MAX_ROWS = 25_000  # larger sets are scored block by block (no second copy of them)


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


class ChunkVectorCache(ChangeLogCache):
    """Every embedded chunk's normalised vector by collection, fresh across processes."""

    log = ChangeLog(
        table="knowledge_chunks", key_column="chunk_key", columns=_COLUMNS,
        changes_table="knowledge_vector_changes", changes_key="chunk_key",
        pruned_key=PRUNED_KEY,
    )  # fmt: skip

    def __init__(
        self, connect: Callable[[], sqlite3.Connection], dim: int, commits: Callable[[], int]
    ) -> None:
        super().__init__(connect, dim, commits)
        self._blocks: dict[str, _Block] = {}
        # permitted collection ids -> their blocks stacked: (vectors, refs, keys); emptied
        # whenever a chunk is added or removed
        self._stacks: dict[tuple[str, ...], tuple[Matrix, list[str], list[int]]] = {}

    def search(
        self, query: Matrix, k: int, collection_ids: Sequence[str]
    ) -> list[tuple[str, int, float]]:
        """The ``k`` chunks of ``collection_ids`` nearest to ``query``: ``(ref, chunk key,
        score)``, best first, ties by ref."""
        q = normalise(np.asarray(query, np.float32))
        with self._lock:
            self.refresh(self._connection())
            permitted = tuple(
                collection_id
                for collection_id in dict.fromkeys(collection_ids)
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
            ranked = sorted(
                (score, ref, key) for score, (ref, key) in zip(negated, found, strict=True)
            )
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
        self._stacks = {}

    def _forget(self, key: int) -> None:
        self._stacks = {}
        collection_id = self._where.pop(key)
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
