"""Exact vector search for SQLite: an in-process cache of every embedded item, searched with numpy.

The stdlib ``sqlite3`` here cannot load extensions (no sqlite-vec), and exact search is what makes
"agent-scoped search returns k rows whenever k are visible" true by construction.

Layout: the normalised float32 vectors are kept in *segments* — one per agent for its ``private``
rows (nobody else can see them, so an agent's search over its own rows is one contiguous
matrix-vector product, no gather), and one ``shared`` segment for every ``team``/``family``/
``public`` row, where the visible mask is computed with numpy per query from small code arrays
(agent, visibility, team, memory type). Score = dot product of normalised vectors = 1 - cosine
distance (a zero vector scores 0 against everything).

The cache also keeps each embedded item itself (a frozen ``MemoryItem``), so a vector search
needs no read of the database once the cache is fresh. Memory: about 4 x dim bytes per vector
plus the decoded item (some hundreds of bytes and its summary).

Freshness: the cache compares ``PRAGMA data_version`` on its own connection (which changes
whenever any *other* connection — another process or this adapter's writer — commits) and this
adapter's own commit counter. When either moved, it reads the keys appended to
``vector_changes`` (filled by triggers on every change to an embedded row) since the last
sequence number it saw, and reloads just those rows. A full reload happens on the first search,
and when the change log was pruned past the cache's position (``SQLiteAdapter.vacuum``).

Two ways in: :meth:`VectorCache.search` refreshes first and runs in a worker thread (a read
transaction on the cache's connection); :meth:`VectorCache.search_now` runs on the event loop
and answers only when nothing can have changed since the last refresh — the caller's probe (a
``PRAGMA data_version`` on a connection of its own, taken *before* that refresh read anything)
is unchanged, the commit counter is unchanged, no thread holds the cache, and the rows in play
are few enough to score without holding the loop more than a few milliseconds
(:data:`NOW_MAX_WORK`) — else it returns None and the caller takes the thread path.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from ._models import MEMORY_TYPES, VISIBILITIES, MemoryItem
from ._sqlite_change_cache import ChangeLog, ChangeLogCache
from ._sqlite_codec import ITEM_COLUMNS, item_from_row

Matrix = npt.NDArray[np.float32]
_VIS: dict[str, int] = {name: code for code, name in enumerate(VISIBILITIES)}  # private 0..3 public
_TYPE: dict[str, int] = {name: code for code, name in enumerate(MEMORY_TYPES)}
_TEAM, _FAMILY = _VIS["team"], _VIS["family"]
_COLUMNS = f"rowid_key, embedding, {ITEM_COLUMNS}"
# Where _COLUMNS puts what the cache indexes (the item's own columns follow the embedding).
_KEY, _EMBEDDING, _ITEM = 0, 1, 2
# search_now (here and in the knowledge chunk cache) scores at most this many vector components
# on the event loop (~3 ms here); a larger search goes through the worker thread, so the loop
# (and every other agent's messages on it) is never held longer.
NOW_MAX_WORK = 32_000_000
_ID, _AGENT, _TYPE_COL, _VIS_COL, _TEAM_COL = 2, 3, 5, 6, 7


def normalise(vectors: Matrix) -> Matrix:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    norms[norms == 0] = 1.0
    normalised: Matrix = (vectors / norms).astype(np.float32, copy=False)
    return normalised


class _Segment:
    """Growable, row-aligned arrays; deletion moves the last row into the hole."""

    def __init__(self, dim: int, capacity: int = 16) -> None:
        self.n = 0
        self.vectors: Matrix = np.empty((capacity, dim), np.float32)
        self.keys = np.empty(capacity, np.int64)
        self.agents = np.empty(capacity, np.int32)
        self.visibility = np.empty(capacity, np.int8)
        self.teams = np.empty(capacity, np.int32)
        self.types = np.empty(capacity, np.int8)
        self.ids: list[str] = []
        self.pos: dict[int, int] = {}

    def _arrays(self) -> tuple[npt.NDArray[Any], ...]:
        return (self.vectors, self.keys, self.agents, self.visibility, self.teams, self.types)

    def extend(self, keys: Sequence[int], ids: Sequence[str], vectors: Matrix,
               codes: npt.NDArray[np.int32]) -> None:  # fmt: skip
        """Append rows; ``codes`` columns are agent, visibility, team, memory type."""
        count = len(keys)
        if self.n + count > len(self.keys):
            self._grow(self.n + count)
        end = self.n + count
        self.vectors[self.n : end] = vectors
        self.keys[self.n : end] = keys
        self.agents[self.n : end] = codes[:, 0]
        self.visibility[self.n : end] = codes[:, 1]
        self.teams[self.n : end] = codes[:, 2]
        self.types[self.n : end] = codes[:, 3]
        for offset, key in enumerate(keys):
            self.pos[int(key)] = self.n + offset
        self.ids.extend(ids)
        self.n = end

    def _grow(self, needed: int) -> None:
        capacity = max(needed, 2 * len(self.keys))
        grown = []
        for array in self._arrays():
            bigger = np.empty((capacity, *array.shape[1:]), array.dtype)
            bigger[: self.n] = array[: self.n]
            grown.append(bigger)
        self.vectors, self.keys, self.agents, self.visibility, self.teams, self.types = grown

    def remove(self, key: int) -> None:
        index = self.pos.pop(key)
        last = self.n - 1
        if index != last:
            for array in self._arrays():
                array[index] = array[last]
            self.ids[index] = self.ids[last]
            self.pos[int(self.keys[index])] = index
        self.ids.pop()
        self.n = last


class VectorCache(ChangeLogCache):
    """Every embedded item's normalised vector, kept fresh across connections and processes."""

    log = ChangeLog(
        table="memory_items m", key_column="rowid_key", columns=_COLUMNS,
        changes_table="vector_changes", changes_key="item_key",
        pruned_key="vector_changes_pruned_through",
    )  # fmt: skip

    def __init__(
        self, connect: Callable[[], sqlite3.Connection], dim: int, commits: Callable[[], int]
    ) -> None:
        super().__init__(connect, dim, commits)
        self._agent_codes: dict[str, int] = {}
        self._team_codes: dict[str, int] = {}
        self._private: dict[int, _Segment] = {}
        self._shared = _Segment(dim)
        self._items: dict[str, MemoryItem] = {}
        self._teams: dict[str, list[str]] = {}  # agent -> active teams, until the next change

    def _committed(self) -> None:
        self._teams = {}  # any commit may have changed a membership

    def search(
        self, agent_id: str, query: Matrix, k: int, *, memory_type: str | None = None,
        visibility: str | None = None, own_only: bool = False, probe: int | None = None,
    ) -> list[tuple[str, float]]:  # fmt: skip
        """The ``k`` visible items nearest to ``query``: ``(id, score)``, best first, ties by id.

        ``probe`` is the caller's data-version probe, taken before this call: once the cache
        has caught up, :meth:`search_now` answers while the probe still reads the same.
        """
        with self._lock:
            conn = self._connection()
            self.refresh(conn, probe)
            teams = self._teams.get(agent_id)
            if teams is None:
                teams = [row[0] for row in conn.execute(_MEMBER_TEAMS, (agent_id,))]
                self._teams[agent_id] = teams
            scaled = with_norm(query)
            assert scaled is not None, "the caller checked the query's values"
            q, norm = scaled
            return self._rank(agent_id, teams, q, norm, k, memory_type, visibility, own_only)

    def search_now(
        self, agent_id: str, query: Matrix, k: int, *, probe: int, memory_type: str | None = None,
        visibility: str | None = None, own_only: bool = False,
    ) -> list[tuple[MemoryItem, float]] | None:  # fmt: skip
        """:meth:`search` answered from memory on the calling thread (the event loop), with the
        items themselves; None when the cache may be stale or is busy: use :meth:`search`.

        ``query`` must be a float32 array of the store's dimension; its values are not checked
        here: a NaN or infinity makes its square non-finite, and then this returns None too (the
        thread path checks the arguments in full and raises).
        """
        if not self._lock.acquire(blocking=False):
            return None  # a worker thread is refreshing or searching
        try:
            if not self.unchanged_since_refresh(probe):
                return None
            if self._rows_in_play(agent_id, visibility) * self._dim > NOW_MAX_WORK:
                return None  # too long for the event loop
            teams = self._teams.get(agent_id)
            if teams is None:
                if visibility != "private" and self._shared.n and not own_only:
                    return None  # membership matters and was not read since the last change
                teams = []  # no shared row can be in play: membership does not matter
            scaled = with_norm(query)
            if scaled is None:
                return None
            q, norm = scaled
            ranked = self._rank(agent_id, teams, q, norm, k, memory_type, visibility, own_only)
            items = self._items
            self.served_now += 1
            return [(items[item_id], score) for item_id, score in ranked]
        finally:
            self._lock.release()

    def _rows_in_play(self, agent_id: str, visibility: str | None) -> int:
        """The most rows a search of ``agent_id``'s scores: its private rows, the shared ones."""
        own = self._private.get(self._agent_codes.get(agent_id, -2))
        return (own.n if own else 0) + (self._shared.n if visibility != "private" else 0)

    def _rank(
        self, agent_id: str, teams: list[str], q: Matrix, norm: float, k: int,
        memory_type: str | None, visibility: str | None, own_only: bool,
    ) -> list[tuple[str, float]]:  # fmt: skip
        # Rank with the raw query and divide the k scores by its norm afterwards: the order is
        # the same, and it spares a pass over the query on every search.
        norm = norm or 1.0  # a zero query scores 0 against everything
        me = self._agent_codes.get(agent_id, -2)  # -2 matches no row
        type_code = None if memory_type is None else _TYPE[memory_type]
        if type_code is None and (
            visibility == "private" or (visibility is None and not self._shared.n)
        ):
            # Only the agent's own private rows are in play (the common case): one contiguous
            # matrix, no mask, no concatenation — the work of a bare numpy top-k.
            segment = self._private.get(me)
            if segment is None:
                return []
            rows, values = best_rows(segment.vectors[: segment.n] @ q, k)
            return _by_score_then_id(values, [segment.ids[row] for row in rows], k, norm)
        scores: list[Matrix] = []
        ids: list[list[str]] = []
        if visibility in (None, "private") and me in self._private:
            segment = self._private[me]
            of_type = None if type_code is None else segment.types[: segment.n] == type_code
            self._score(segment, of_type, q, scores, ids)
        if visibility != "private" and self._shared.n:
            segment, n = self._shared, self._shared.n
            mask = segment.agents[:n] == me
            if not own_only:
                team_codes = [self._team_codes[t] for t in teams if t in self._team_codes]
                in_team = np.isin(segment.teams[:n], team_codes)
                vis = segment.visibility[:n]
                mask |= (vis >= _FAMILY) | ((vis == _TEAM) & in_team)
            if visibility is not None:
                mask &= segment.visibility[:n] == _VIS[visibility]
            if type_code is not None:
                mask &= segment.types[:n] == type_code
            self._score(segment, mask, q, scores, ids)
        if not scores:
            return []
        all_scores = np.concatenate(scores) if len(scores) > 1 else scores[0]
        all_ids = [item for part in ids for item in part] if len(ids) > 1 else ids[0]
        rows, values = best_rows(all_scores, k)
        # under the lock: ``all_ids`` may alias a segment's live list
        return _by_score_then_id(values, [all_ids[row] for row in rows], k, norm)

    @staticmethod
    def _score(segment: _Segment, mask: npt.NDArray[np.bool_] | None, q: Matrix,
               scores: list[Matrix], ids: list[list[str]]) -> None:  # fmt: skip
        if mask is None:
            scores.append(segment.vectors[: segment.n] @ q)
            ids.append(segment.ids)
            return
        rows = np.flatnonzero(mask)
        if len(rows):
            scores.append(segment.vectors[rows] @ q)
            ids.append([segment.ids[row] for row in rows])

    def _reset(self) -> None:
        self._private, self._shared = {}, _Segment(self._dim)
        self._items = {}

    def _forget(self, key: int) -> None:
        segment = self._where.pop(key)
        del self._items[segment.ids[segment.pos[key]]]
        segment.remove(key)

    def _add_rows(self, rows: list[tuple[Any, ...]]) -> None:
        if not rows:
            return
        dim = self._dim
        # written with another dimension: skip
        rows = [row for row in rows if len(row[_EMBEDDING]) == 4 * dim]
        if not rows:
            return
        vectors = normalise(
            np.frombuffer(b"".join(row[_EMBEDDING] for row in rows), np.float32).reshape(-1, dim)
        )
        codes = np.array(
            [
                (self._code(self._agent_codes, row[_AGENT]), _VIS[row[_VIS_COL]],
                 -1 if row[_TEAM_COL] is None else self._code(self._team_codes, row[_TEAM_COL]),
                 _TYPE[row[_TYPE_COL]])
                for row in rows
            ],
            dtype=np.int32,
        ).reshape(-1, 4)  # fmt: skip
        for row in rows:
            self._items[row[_ID]] = item_from_row(row[_ITEM:])
        private = codes[:, 1] == _VIS["private"]
        self._extend(self._shared, rows, vectors, codes, np.flatnonzero(~private))
        private_rows = np.flatnonzero(private)
        if not len(private_rows):
            return  # (the split below needs at least one private row)
        order = private_rows[np.argsort(codes[private_rows, 0], kind="stable")]
        agents = codes[order, 0]
        starts = np.flatnonzero(np.diff(agents, prepend=-1))
        for start, end in zip(starts, [*starts[1:], len(order)], strict=True):
            agent = int(agents[start])
            segment = self._private.setdefault(agent, _Segment(dim))
            self._extend(segment, rows, vectors, codes, order[start:end])

    def _extend(self, segment: _Segment, rows: list[tuple[Any, ...]], vectors: Matrix,
                codes: npt.NDArray[np.int32], take: npt.NDArray[np.intp]) -> None:  # fmt: skip
        if not len(take):
            return
        keys = [rows[i][_KEY] for i in take]
        segment.extend(keys, [rows[i][_ID] for i in take], vectors[take], codes[take])
        for key in keys:
            self._where[key] = segment

    @staticmethod
    def _code(codes: dict[str, int], value: str) -> int:
        return codes.setdefault(value, len(codes))


_MEMBER_TEAMS = (
    "SELECT tm.team_id FROM team_members tm JOIN teams t ON t.id = tm.team_id"
    " WHERE tm.agent_id = ? AND t.status = 'active'"
)


def with_norm(query: Matrix) -> tuple[Matrix, float] | None:
    """The query to rank with and its norm; None when it holds a NaN or an infinity.

    The square is summed in float64, where no float32 input overflows (so no warning, and one
    call checks every value); a query so large that its float32 scores could overflow is scaled
    down first, which changes no cosine.
    """
    q = np.asarray(query, np.float32)
    square = float(np.matmul(q, q, dtype=np.float64))
    if not math.isfinite(square):
        return None
    if square > _HUGE:
        q = q / np.float32(math.sqrt(square))
        square = float(np.matmul(q, q, dtype=np.float64))
    return q, math.sqrt(square)


_HUGE = 1e60  # a squared norm past which float32 scores (up to the norm) near their limit


def _by_score_then_id(
    values: list[float], ids: list[str], k: int, norm: float
) -> list[tuple[str, float]]:
    """The ``k`` best ``(id, score / norm)``, best first, ties by id."""
    # (-score, id) tuples sort best first, ties by id
    ranked = sorted(zip([-value for value in values], ids, strict=True))[:k]
    return [(item_id, -negative / norm) for negative, item_id in ranked]


def best_rows(scores: Matrix, k: int) -> tuple[list[int], list[float]]:
    """The rows scoring at least the ``k``-th best score, and their scores, in no order: the top
    ``k`` plus every row tied with the ``k``-th, so the caller breaks ties by name, not by
    position."""
    n = len(scores)
    if n <= k:
        return list(range(n)), scores.tolist()
    # One partition finds the k+1 best: when the (k+1)-th scores below the other k, no row
    # outside them can tie the k-th — the common case, at the cost of a bare numpy top-k.
    rows = np.argpartition(scores, n - k - 1)[n - k - 1 :]
    values = scores[rows].tolist()
    kth = min(values[1:])
    if values[0] < kth:
        return rows[1:].tolist(), values[1:]
    tied = np.flatnonzero(scores >= kth)
    return tied.tolist(), scores[tied].tolist()


def top_rows(scores: Matrix, k: int) -> npt.NDArray[np.intp]:
    """:func:`best_rows`' rows as an array."""
    return np.asarray(best_rows(scores, k)[0], np.intp)
