"""``SQLiteAdapter``: the embedded default storage backend (one SQLite file, WAL mode).

- stdlib ``sqlite3`` runs in worker threads, never on the event loop: one writer connection
  behind a lock (every write one ``BEGIN IMMEDIATE`` transaction), a pool of reader connections
  (WAL: readers never wait for the writer), see ``_sqlite_db``.
- Keyword search: FTS5 external-content tables keyed by an explicit ``rowid_key INTEGER PRIMARY
  KEY`` (VACUUM may renumber implicit rowids, never an INTEGER PRIMARY KEY), kept in sync by
  triggers, tokenizer ``porter unicode61``; see ``_sqlite_search`` for the keyword rule.
- Vectors: float32 BLOBs, searched exactly with numpy from an in-process cache that notices
  other processes' writes through ``PRAGMA data_version``; see ``_sqlite_vectors``.
- Visibility is a predicate in every query (``_sqlite_codec.visible_sql``): own rows,
  ``family``/``public`` rows, ``team`` rows of active teams the agent belongs to.
- Migrations: numbered ``sqlite_migrations/NNNN_name.sql`` files, applied once each and recorded
  in ``schema_migrations(version, name, applied_at)``.

Several processes may share one file (SQLite serialises their writes; ``busy_timeout`` is how
long a write waits for another process's). The file must be on a local disk (WAL needs shared
memory), not a network share.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType

import anyio.to_thread

from .._config import Config
from .._errors import ConfigError
from .._ids import validate_agent_id
from ._errors import ValidationError
from ._protocol import StorageAdapter
from ._sqlite_agents import SQLiteAgentStore
from ._sqlite_db import Database
from ._sqlite_memory import SQLiteMemoryStore
from ._sqlite_tasks import SQLiteTaskStore
from ._sqlite_teams import SQLiteTeamStore


class SQLiteAdapter:
    """The SQLite storage backend. ``memory``/``tasks``/``teams`` act as an agent: use
    ``for_agent(agent_id)``; ``agents`` (the registry) works on the adapter itself.

    Example::

        async with SQLiteAdapter("~/.agentbus/agentbus.db", embedding_dim=384) as storage:
            memory = storage.for_agent("scout").memory
            await memory.create_item("The deploy key rotates on Mondays")

    Cancellation: each call runs its statements to the end in a worker thread; a cancelled
    write may still have been committed.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, embedding_dim: int, busy_timeout: float = 5.0
    ) -> None:
        if (
            not isinstance(embedding_dim, int)
            or isinstance(embedding_dim, bool)
            or embedding_dim < 1
        ):
            raise ConfigError(f"embedding_dim must be a positive integer, got {embedding_dim!r}")
        if not isinstance(busy_timeout, (int, float)) or busy_timeout <= 0:
            raise ConfigError(
                f"busy_timeout must be a positive number of seconds, got {busy_timeout!r}"
            )
        db = Database(
            Path(path).expanduser(), embedding_dim=embedding_dim, busy_timeout=float(busy_timeout)
        )
        self._bind(db, None)

    def _bind(self, db: Database, agent_id: str | None) -> None:
        self._db = db
        self._agent_id = agent_id
        self._agents = SQLiteAgentStore(db)
        self._memory = None if agent_id is None else SQLiteMemoryStore(db, agent_id)
        self._tasks = None if agent_id is None else SQLiteTaskStore(db, agent_id)
        self._teams = None if agent_id is None else SQLiteTeamStore(db, agent_id)

    @classmethod
    def from_config(cls, config: Config) -> SQLiteAdapter:
        """The adapter for ``storage.sqlite.path`` and ``storage.embeddingDim``."""
        storage = config.storage
        return cls(storage.sqlite.path, embedding_dim=storage.embedding_dim)

    @property
    def path(self) -> Path:
        return self._db.path

    @property
    def embedding_dim(self) -> int:
        return self._db.embedding_dim

    @property
    def agent_id(self) -> str | None:
        return self._agent_id

    def for_agent(self, agent_id: str) -> SQLiteAdapter:
        """A view acting as ``agent_id``; it shares this adapter's connections, and its
        ``aclose()`` does nothing.

        Raises: InvalidAgentIdError.
        """
        validate_agent_id(agent_id)
        view = object.__new__(SQLiteAdapter)  # shares self's Database: no second __init__
        view._bind(self._db, agent_id)
        return view

    def _need_agent(self, what: str) -> None:
        if self._agent_id is None:
            raise ValidationError(
                f"{what} acts as an agent: use adapter.for_agent(agent_id).{what}"
            )

    @property
    def memory(self) -> SQLiteMemoryStore:
        self._need_agent("memory")
        assert self._memory is not None
        return self._memory

    @property
    def tasks(self) -> SQLiteTaskStore:
        self._need_agent("tasks")
        assert self._tasks is not None
        return self._tasks

    @property
    def teams(self) -> SQLiteTeamStore:
        self._need_agent("teams")
        assert self._teams is not None
        return self._teams

    @property
    def agents(self) -> SQLiteAgentStore:
        return self._agents

    def is_ready(self) -> bool:
        """True between a successful ``open()`` and ``aclose()``."""
        return self._db.is_open

    async def open(self) -> None:
        """Create the file (and its directory) if needed, switch to WAL, and apply pending
        migrations. Idempotent; a view opens the shared database.

        Raises: MigrationError, StorageUnavailableError (closed, file cannot be opened).
        """
        await anyio.to_thread.run_sync(self._db.open_sync)

    async def aclose(self) -> None:
        """Close every connection (waits for a write in progress). Idempotent; a view's
        ``aclose()`` does nothing."""
        if self._agent_id is None:  # views (bound to an agent) never close the shared database
            await anyio.to_thread.run_sync(self._db.close_sync)

    async def vacuum(self) -> None:
        """Maintenance: prune the vector change log, optimise the FTS5 indexes and VACUUM.
        Row keys (and so the FTS5 indexes) survive; other processes' vector caches reload."""
        await anyio.to_thread.run_sync(self._db.vacuum_sync)

    async def __aenter__(self) -> SQLiteAdapter:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:  # fmt: skip
        await self.aclose()

    def __repr__(self) -> str:
        agent = f" agent={self._agent_id!r}" if self._agent_id else ""
        return f"<SQLiteAdapter {str(self._db.path)!r}{agent}>"


_: type[StorageAdapter] = SQLiteAdapter
