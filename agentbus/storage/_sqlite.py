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
- Knowledge grants are predicates in every knowledge query (``_sqlite_knowledge_acl``); search
  ranks permitted chunks only. Service keys are sealed in the application (``_crypto``) with the
  adapter's master key (``master_key=``, else ``MasterKey.load`` on first use).
- Migrations: numbered ``sqlite_migrations/NNNN_name.sql`` files, applied once each and recorded
  in ``schema_migrations(version, name, applied_at)``.

Several processes may share one file (SQLite serialises their writes; ``busy_timeout`` is how
long a write waits for another process's). The file must be on a local disk (WAL needs shared
memory), not a network share.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TypeVar, cast

import anyio.to_thread

from .._config import Config
from .._errors import ConfigError
from .._ids import validate_agent_id
from ._crypto import MasterKey
from ._errors import ValidationError
from ._protocol import StorageAdapter
from ._sqlite_agents import SQLiteAgentStore
from ._sqlite_candidates import SQLiteLiveCandidateStore
from ._sqlite_db import Database
from ._sqlite_knowledge import SQLiteKnowledgeStore
from ._sqlite_memory import SQLiteMemoryStore
from ._sqlite_service_keys import MasterKeySource, SQLiteServiceKeyStore, rewrap_all
from ._sqlite_sessions import SQLiteFeedbackStore, SQLiteObservationStore
from ._sqlite_tasks import SQLiteTaskStore
from ._sqlite_teams import SQLiteTeamStore

T = TypeVar("T")


class SQLiteAdapter:
    """The SQLite storage backend. ``memory``/``tasks``/``teams`` and the Storage II stores
    (``knowledge``, ``service_keys``, ``observations``, ``feedback``, ``live_candidates``) act as
    an agent: use ``for_agent(agent_id)``; ``agents`` (the registry) and the maintenance methods
    (``vacuum``, ``rotate_master_key``) work on the adapter itself.

    Example::

        async with SQLiteAdapter("~/.agentbus/agentbus.db", embedding_dim=384) as storage:
            memory = storage.for_agent("scout").memory
            await memory.create_item("The deploy key rotates on Mondays")

    Cancellation: each call runs its statements to the end in a worker thread; a cancelled
    write may still have been committed.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, embedding_dim: int, busy_timeout: float = 5.0,
        master_key: MasterKey | None = None,
    ) -> None:  # fmt: skip
        """``master_key`` wraps the service keys; None: ``MasterKey.load()`` on first use
        (``AGENTBUS_MASTER_KEY``, else ``~/.agentbus/master.key``, or the configured file when
        built by ``from_config``)."""
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
        self._bind(db, MasterKeySource(master_key), None)

    def _bind(self, db: Database, keys: MasterKeySource, agent_id: str | None) -> None:
        self._db = db
        self._keys = keys
        self._agent_id = agent_id
        self._agents = SQLiteAgentStore(db)
        self._stores: dict[str, object] = {}

    def _store(self, name: str, make: Callable[[str], T]) -> T:
        """The view's store ``name``, made on first use (a view needs an agent)."""
        self._need_agent(name)
        assert self._agent_id is not None
        store = self._stores.get(name)
        if store is None:
            store = self._stores[name] = make(self._agent_id)
        return cast(T, store)

    @classmethod
    def from_config(cls, config: Config) -> SQLiteAdapter:
        """The adapter for ``storage.sqlite.path`` and ``storage.embeddingDim``."""
        storage = config.storage
        adapter = cls(storage.sqlite.path, embedding_dim=storage.embedding_dim)
        adapter._keys.use_config(config)  # storage.serviceKeys.masterKeyFile, on first use
        return adapter

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
        view._bind(self._db, self._keys, agent_id)
        return view

    def _need_agent(self, what: str) -> None:
        if self._agent_id is None:
            raise ValidationError(
                f"{what} acts as an agent: use adapter.for_agent(agent_id).{what}"
            )

    @property
    def memory(self) -> SQLiteMemoryStore:
        return self._store("memory", lambda agent: SQLiteMemoryStore(self._db, agent))

    @property
    def tasks(self) -> SQLiteTaskStore:
        return self._store("tasks", lambda agent: SQLiteTaskStore(self._db, agent))

    @property
    def teams(self) -> SQLiteTeamStore:
        return self._store("teams", lambda agent: SQLiteTeamStore(self._db, agent))

    @property
    def knowledge(self) -> SQLiteKnowledgeStore:
        return self._store("knowledge", lambda agent: SQLiteKnowledgeStore(self._db, agent))

    @property
    def service_keys(self) -> SQLiteServiceKeyStore:
        return self._store(
            "service_keys", lambda agent: SQLiteServiceKeyStore(self._db, agent, self._keys)
        )

    @property
    def observations(self) -> SQLiteObservationStore:
        return self._store("observations", lambda agent: SQLiteObservationStore(self._db, agent))

    @property
    def feedback(self) -> SQLiteFeedbackStore:
        return self._store("feedback", lambda agent: SQLiteFeedbackStore(self._db, agent))

    @property
    def live_candidates(self) -> SQLiteLiveCandidateStore:
        return self._store(
            "live_candidates", lambda agent: SQLiteLiveCandidateStore(self._db, agent)
        )

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
        """Maintenance: prune the vector change logs (items, chunks), optimise the FTS5 indexes
        and VACUUM. Row keys (and so the FTS5 indexes) survive; other processes' vector caches
        reload."""
        await anyio.to_thread.run_sync(self._db.vacuum_sync)

    async def rotate_master_key(self, new: MasterKey) -> int:
        """Maintenance: re-wrap every agent's service keys with ``new`` in one transaction
        (the encrypted values are untouched) and use ``new`` from then on. Returns how many
        rows were re-wrapped (rows already wrapped by ``new`` are skipped, so a repeated call
        returns 0).

        Store ``new`` where the next start loads it (``AGENTBUS_MASTER_KEY`` or the key file)
        *before* calling this; other processes still holding the old key get
        ``SecretDecryptionError`` naming both key ids until they load the new one.

        Raises: ValidationError (called on a view), ConfigError (``new`` is not a MasterKey),
        SecretDecryptionError (a row the current key did not wrap: nothing is changed).
        """
        if self._agent_id is not None:
            raise ValidationError(
                "rotate_master_key is maintenance of the whole store: call it on the adapter, "
                "not on a view"
            )
        if not isinstance(new, MasterKey):
            raise ConfigError(f"new must be a MasterKey, got {type(new).__name__}")

        def write(conn: sqlite3.Connection) -> int:
            count = rewrap_all(conn, self._keys.get(), new)
            self._keys.replace(new)  # under the write lock: the next write seals with ``new``
            return count

        return await self._db.write(write)

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
