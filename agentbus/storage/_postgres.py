"""``PgAdapter``: the StorageAdapter on PostgreSQL + pgvector (DESIGN.md §4).

Two roles, two connection strings: ``admin_dsn`` logs in as the owner role (agentbus_owner) and
is used only by :meth:`PgAdapter.open` to apply the numbered migrations under an advisory lock;
``dsn`` logs in as the app role (agentbus_app: not owner, not superuser, NOBYPASSRLS), and every
agent's call goes through its pool in a transaction that sets ``app.agent_id`` locally, so
row-level security decides what each agent sees. ``open()`` refuses an app connection that
would bypass row-level security.

PgBouncer in transaction mode: pass ``statement_cache_size=0`` (``storage.postgres.
statementCacheSize: 0`` in agentbus.json), since asyncpg's named prepared statements do not
survive a server-connection switch. Everything else already fits that mode:
no session state is ever set (agent ids and HNSW settings are transaction-local), and advisory
locks are transaction-scoped. Migrations need a session of their own: point ``admin_dsn`` at
PostgreSQL directly, or at a PgBouncer pool in session mode.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg

from .._config import Config, StorageConfig
from .._errors import ConfigError
from .._ids import validate_agent_id
from ._crypto import MasterKey
from ._errors import StorageError
from ._pg_bulk import bulk_load_items
from ._pg_candidates import PgLiveCandidates
from ._pg_core import PgCore, Scope, init_connection
from ._pg_errors import map_pg_errors
from ._pg_knowledge import PgKnowledge
from ._pg_memory import PgMemory
from ._pg_service_keys import PgServiceKeys, rotate_master_key
from ._pg_sessions import PgFeedback, PgObservations
from ._pg_tasks import PgTasks
from ._pg_teams import PgAgents, PgTeams
from ._protocol import StorageAdapter

__all__ = ["PgAdapter", "init_connection", "map_pg_errors"]


class PgAdapter:
    """The PostgreSQL StorageAdapter.

    Args:
        dsn: the app role's connection string (``storage.postgres.connectionString``).
        admin_dsn: the owner role's (``adminConnectionString``); ``open()`` migrates with it.
            None: ``open()`` only checks that the schema is up to date.
        embedding_dim: ``storage.embeddingDim``; fixed per database by its first migration.
        max_connections: pool size (``maxConnections``).
        statement_cache_size: asyncpg's prepared-statement cache; 0 for PgBouncer in
            transaction mode. None: asyncpg's default.
        pool: an asyncpg pool to use instead of making one (created with
            ``init=init_connection``); the adapter does not close it.
        hnsw_ef_search: the highest ``hnsw.ef_search`` of agent-scoped memory vector searches
            that take the HNSW path. Each uses 2.5 x limit / the share of the index the agent
            may see (estimated from the planner's statistics), at least 40 and the limit, at
            most this: 40 when it sees most rows (recall@10 about 0.98 there), this when it
            sees a quarter or less or the share is unknown (migration 0008 has the figures).
            Knowledge search uses it as it is.
        vector_exact_max: visible embedded rows below which vector search scans them exactly
            instead of using HNSW; None: sqrt(5 * limit * rows in the table), at least 1000
            (see migration 0003). Knowledge search uses it for the permitted embedded chunks;
            None there: sqrt(20 * limit * chunks in the table), at least 1000 (migration 0005).
        insert_connections: connections ``memory.create_items`` may use at once for a batch of
            32 or more embedded rows (at most ``max_connections``); 1: always one transaction.
            The shares commit together after all are inserted (see ``PgMemory.create_items``).
        master_key: the service keys' master key. None: loaded on first service-key use with
            ``MasterKey.load`` (``AGENTBUS_MASTER_KEY``, else the configured key file, created
            with mode 0600 when missing), once per adapter.

    Use ``for_agent(agent_id)`` for a view acting as one agent; views share the pool, and
    closing a view does nothing. A view's stores: ``memory``, ``tasks``, ``teams``, and Storage
    II's ``knowledge`` (``_pg_knowledge``), ``service_keys`` (``_pg_service_keys``),
    ``observations`` and ``feedback`` (``_pg_sessions``), ``live_candidates``
    (``_pg_candidates``); ``rotate_master_key`` is a maintenance method of the adapter.

    Every store call is one transaction (``memory.create_items`` of a large batch: several
    that commit together). If it is cancelled, or the connection breaks, before COMMIT, none
    of it is applied; a break during COMMIT leaves it unknown whether it was
    (``StorageUnavailableError`` says so); a retry that passes the same ``id=`` cannot create
    a second row.
    """

    def __init__(
        self,
        dsn: str | None = None,
        *,
        admin_dsn: str | None = None,
        embedding_dim: int = 768,
        max_connections: int = 10,
        statement_cache_size: int | None = None,
        pool: asyncpg.Pool[asyncpg.Record] | None = None,
        hnsw_ef_search: int = 100,
        vector_exact_max: int | None = None,
        insert_connections: int = 2,
        master_key: MasterKey | None = None,
    ) -> None:
        core = PgCore(
            dsn,
            admin_dsn=admin_dsn,
            embedding_dim=embedding_dim,
            max_connections=max_connections,
            statement_cache_size=statement_cache_size,
            pool=pool,
            hnsw_ef_search=hnsw_ef_search,
            vector_exact_max=vector_exact_max,
            insert_connections=insert_connections,
            master_key=master_key,
        )
        self._init_view(core, None)

    def _init_view(self, core: PgCore, agent_id: str | None) -> None:
        self._core = core
        self._agent_id = agent_id
        self._stores: dict[str, Any] = {}

    @classmethod
    def from_config(cls, config: Config | StorageConfig) -> PgAdapter:
        """Build from ``storage.postgres`` and ``storage.embeddingDim``.

        Raises: ConfigError when there is no ``storage.postgres`` section.
        """
        storage = config.storage if isinstance(config, Config) else config
        pg = storage.postgres
        if pg is None:
            raise ConfigError(
                "storage.postgres is missing: add "
                '"postgres": {"connectionString": ..., "adminConnectionString": ...}'
            )
        adapter = cls(
            pg.connection_string,
            admin_dsn=pg.admin_connection_string,
            embedding_dim=storage.embedding_dim,
            max_connections=pg.max_connections,
            statement_cache_size=pg.statement_cache_size,
        )
        # Loaded on first service-key use, not here: most adapters never touch a secret.
        key_file = storage.service_keys.master_key_file
        adapter._core.master_key_loader = lambda: MasterKey.load(path=key_file)
        return adapter

    # --- views ----------------------------------------------------------------------------------

    @property
    def agent_id(self) -> str | None:
        return self._agent_id

    def for_agent(self, agent_id: str) -> PgAdapter:
        """A view acting as ``agent_id`` over the same pool.

        Raises: InvalidAgentIdError.
        """
        view = object.__new__(PgAdapter)
        view._init_view(self._core, validate_agent_id(agent_id))
        return view

    def _store(self, name: str, factory: Any) -> Any:
        store = self._stores.get(name)
        if store is None:
            store = self._stores[name] = factory(Scope(self._core, self._agent_id))
        return store

    @property
    def memory(self) -> PgMemory:
        """Raises: StorageError on the adapter itself (use ``for_agent``)."""
        store: PgMemory = self._store("memory", PgMemory)
        return store

    @property
    def tasks(self) -> PgTasks:
        store: PgTasks = self._store("tasks", PgTasks)
        return store

    @property
    def teams(self) -> PgTeams:
        store: PgTeams = self._store("teams", PgTeams)
        return store

    @property
    def agents(self) -> PgAgents:
        store: PgAgents = self._store("agents", PgAgents)
        return store

    @property
    def knowledge(self) -> PgKnowledge:
        store: PgKnowledge = self._store("knowledge", PgKnowledge)
        return store

    @property
    def service_keys(self) -> PgServiceKeys:
        store: PgServiceKeys = self._store("service_keys", PgServiceKeys)
        return store

    @property
    def observations(self) -> PgObservations:
        store: PgObservations = self._store("observations", PgObservations)
        return store

    @property
    def feedback(self) -> PgFeedback:
        store: PgFeedback = self._store("feedback", PgFeedback)
        return store

    @property
    def live_candidates(self) -> PgLiveCandidates:
        store: PgLiveCandidates = self._store("live_candidates", PgLiveCandidates)
        return store

    # --- lifecycle ------------------------------------------------------------------------------

    def is_ready(self) -> bool:
        return self._core.is_ready()

    async def open(self) -> None:
        """Migrate as the owner role (if ``admin_dsn``), open the app pool, check the schema.

        Idempotent; a view opens the adapter it belongs to.

        Raises: MigrationError, StorageUnavailableError, ConfigError (an app role that would
        bypass row-level security).
        """
        await self._core.open()

    async def aclose(self) -> None:
        """Close the pool (bounded, shielded). A view's ``aclose()`` does nothing."""
        if self._agent_id is None:
            await self._core.aclose()

    async def __aenter__(self) -> PgAdapter:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    @property
    def applied_migrations(self) -> list[int]:
        """Versions the last ``open()`` applied (empty when the schema was up to date)."""
        return list(self._core.applied_migrations)

    # --- maintenance (owner role) ---------------------------------------------------------------

    async def bulk_load_items(
        self, items: Sequence[Mapping[str, Any]], *, maintenance_work_mem: str = "1GB"
    ) -> int:
        """Load many agents' items at once, building the HNSW index after the rows are in.

        A maintenance method of the adapter (not of a view), run as the owner role through
        ``admin_dsn``: each mapping takes ``create_item``'s keyword arguments plus
        ``agent_id``. In one transaction it drops the HNSW index, inserts with ``INSERT …
        SELECT FROM unnest`` (rows whose id or agent + summary are already stored are
        skipped) and rebuilds the index over the whole table with ``maintenance_work_mem``;
        after COMMIT it runs ``VACUUM (ANALYZE)`` on the table. The table is locked (ACCESS
        EXCLUSIVE) until COMMIT: every reader and writer waits. See ``_pg_bulk``.

        Returns the number of rows inserted.

        Raises: StorageError (called on a view), ConfigError (no ``admin_dsn``),
        ValidationError (a bad row: nothing is loaded), StorageUnavailableError.
        If cancelled or disconnected before COMMIT, nothing is loaded.
        """
        if self._agent_id is not None:
            raise StorageError(
                "bulk_load_items is a maintenance method of the adapter, not of an agent's view"
            )
        core = self._core
        return await bulk_load_items(
            core.admin_dsn, items, embedding_dim=core.embedding_dim,
            maintenance_work_mem=maintenance_work_mem,
        )  # fmt: skip

    async def rotate_master_key(self, new: MasterKey) -> int:
        """Re-wrap every service key's data key under ``new`` (values untouched); returns how
        many rows were re-wrapped.

        A maintenance method of the adapter (not of a view), run as the owner role through
        ``admin_dsn`` since it spans agents, in one transaction: if anything fails (a row the
        current master key cannot unwrap included), nothing changes. Afterwards this adapter
        uses ``new``. **Store ``new`` first** (``AGENTBUS_MASTER_KEY`` or the key file): once
        this commits, the old key reads nothing, and other processes need the new key
        (``SecretDecryptionError`` names the key id they lack).

        Raises: StorageError (called on a view), ConfigError (no ``admin_dsn``),
        SecretDecryptionError, StorageUnavailableError.
        """
        if self._agent_id is not None:
            raise StorageError(
                "rotate_master_key is a maintenance method of the adapter, not of an agent's view"
            )
        if not isinstance(new, MasterKey):
            raise ConfigError(f"new must be a MasterKey, got {type(new).__name__}")
        core = self._core
        count = await rotate_master_key(core.admin_dsn, await core.master_key(), new)
        core.replace_master_key(new)
        return count


_: type[StorageAdapter] = PgAdapter
