"""Helpers of the Storage II contract tests: the stores of a view, raw access to a store's
tables, and the shared corpus (real texts and their MiniLM vectors)."""

from __future__ import annotations

import gzip
import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agentbus.testing.pytest_plugin import skip_or_fail

from ._support import EMBEDDING_DIM

STORES = ("knowledge", "service_keys", "observations", "feedback", "live_candidates")
DATA = Path(__file__).parents[2].parent / "shared" / "data" / "changelog-memories"


def store(view: Any, name: str) -> Any:
    """``view.<name>`` (a Storage II store); a missing one fails the test, never skips it."""
    try:
        return getattr(view, name)
    except AttributeError as exc:
        pytest.fail(f"{type(view).__name__} has no working `{name}` store: {exc}", pytrace=False)


# --- raw access -------------------------------------------------------------------------------


class Raw:
    """Raw SQL on a store, around the adapter: SQLite through ``sqlite3`` on the file, PostgreSQL
    through asyncpg as the owner role (which bypasses row-level security). ``?`` placeholders
    are rewritten to ``$n`` for PostgreSQL."""

    def __init__(self, *, sqlite_path: str | None = None, owner_dsn: str | None = None) -> None:
        self.sqlite_path = sqlite_path
        self.owner_dsn = owner_dsn

    @staticmethod
    def _pg(sql: str) -> str:
        parts = sql.split("?")
        return "".join(p + (f"${i + 1}" if i < len(parts) - 1 else "") for i, p in enumerate(parts))

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        if self.sqlite_path is not None:
            conn = sqlite3.connect(self.sqlite_path, timeout=10)
            try:
                conn.row_factory = sqlite3.Row
                return [dict(row) for row in conn.execute(sql, args).fetchall()]
            finally:
                conn.close()
        import asyncpg

        pg = await asyncpg.connect(self.owner_dsn)
        try:
            return [dict(row) for row in await pg.fetch(self._pg(sql), *args)]
        finally:
            await pg.close()

    async def execute(self, sql: str, *args: Any) -> int:
        """Run one statement; the number of rows it changed."""
        if self.sqlite_path is not None:
            conn = sqlite3.connect(self.sqlite_path, timeout=10)
            try:
                with conn:
                    return conn.execute(sql, args).rowcount
            finally:
                conn.close()
        import asyncpg

        pg = await asyncpg.connect(self.owner_dsn)
        try:
            status = await pg.execute(self._pg(sql), *args)
        finally:
            await pg.close()
        return int(status.rsplit(" ", 1)[-1])

    async def columns(self, table: str) -> dict[str, str]:
        """Column name -> declared type (lower case) of ``table``."""
        if self.sqlite_path is not None:
            rows = await self.fetch(f"PRAGMA table_info({table})")
            return {row["name"]: str(row["type"]).lower() for row in rows}
        rows = await self.fetch(
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = 'public' AND table_name = ? ORDER BY ordinal_position",
            table,
        )
        return {row["column_name"]: str(row["data_type"]).lower() for row in rows}

    async def tables(self) -> list[str]:
        if self.sqlite_path is not None:
            rows = await self.fetch("SELECT name FROM sqlite_master WHERE type = 'table'")
            return [row["name"] for row in rows]
        rows = await self.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
        )
        return [row["tablename"] for row in rows]

    async def all_values(self, table: str) -> list[bytes]:
        """Every value of every row of ``table`` as bytes (binary columns as stored, the rest as
        their text form)."""
        columns = await self.columns(table)
        if not columns:
            return []
        if self.sqlite_path is not None:
            rows = await self.fetch(f'SELECT * FROM "{table}"')
        else:
            shown = ", ".join(
                f'"{name}"' if kind == "bytea" else f'"{name}"::text AS "{name}"'
                for name, kind in columns.items()
            )
            rows = await self.fetch(f'SELECT {shown} FROM "{table}"')
        return [as_bytes(value) for row in rows for value in row.values() if value is not None]


def as_bytes(value: Any) -> bytes:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    return str(value).encode("utf-8", "surrogatepass")


def sqlite_files(path: str) -> list[Path]:
    """The database file and its WAL/shared-memory companions that exist."""
    return [Path(path + suffix) for suffix in ("", "-wal", "-shm", "-journal")
            if Path(path + suffix).exists()]  # fmt: skip


def raw_for(backend: str, request: pytest.FixtureRequest) -> Raw:
    """Raw access to the module's shared store of ``backend``."""
    if backend == "sqlite":
        return Raw(sqlite_path=request.getfixturevalue("sqlite_path"))
    server = request.getfixturevalue("postgres_server")
    return Raw(owner_dsn=server.dsn_for("agentbus_owner", request.getfixturevalue("pg_database")))


# --- the shared corpus ------------------------------------------------------------------------


@dataclass
class Corpus:
    """Rows of the shared corpus: text and agent per row, the unit float32 vectors (memory-mapped
    int8 / 127), and per agent its rows whose collapsed text is new for that agent."""

    texts: dict[int, str]
    agents: dict[int, str]
    raw: np.ndarray
    by_agent: dict[str, list[int]] = field(default_factory=dict)

    def vectors(self, rows: Sequence[int]) -> np.ndarray:
        return (np.asarray(self.raw[list(rows)], dtype=np.float32) / 127.0).astype(np.float32)

    def vector(self, row: int) -> list[float]:
        return [float(x) for x in self.vectors([row])[0]]


def require_corpus() -> None:
    """Skip without the shared corpus locally; fail under CI."""
    if not (DATA / "items.jsonl.gz").exists() or not (DATA / "vectors-int8.npy").exists():
        skip_or_fail(f"the shared corpus is missing at {DATA}")


def load_corpus(agents: Iterable[str] | None = None) -> Corpus:
    """The corpus (only ``agents``' rows when given)."""
    require_corpus()
    wanted = None if agents is None else set(agents)
    corpus = Corpus({}, {}, np.load(DATA / "vectors-int8.npy", mmap_mode="r"))
    assert corpus.raw.shape[1] == EMBEDDING_DIM
    seen: set[tuple[str, str]] = set()
    with gzip.open(DATA / "items.jsonl.gz", "rt", encoding="utf-8") as lines:
        for line in lines:
            row = json.loads(line)
            agent = row["agent"]
            if wanted is not None and agent not in wanted:
                continue
            number, text = row["row"], row["text"]
            corpus.texts[number] = text
            corpus.agents[number] = agent
            key = (agent, " ".join(text.split()))
            if key not in seen:
                seen.add(key)
                corpus.by_agent.setdefault(agent, []).append(number)
    return corpus
