"""The PostgreSQL backend's plumbing: the app-role pool and agent-scoped transactions.

Every call of a store runs in one transaction that starts with
``SELECT set_config('app.agent_id', $1, true)``: transaction-local, so a pooled connection never
carries one agent's id into another agent's transaction (a session ``SET`` would). The policies
of migration 0002 read that setting; an empty one sees nothing.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeAlias

import anyio
import asyncpg
from asyncpg.pool import PoolConnectionProxy
from pgvector.asyncpg import register_vector

from .._errors import ConfigError
from ._canonical import canonical_json
from ._crypto import MasterKey
from ._errors import MigrationError, StorageError, StorageUnavailableError
from ._pg_errors import SETUP_HINT, map_pg_errors
from ._pg_migrations import check_schema, migrate

if TYPE_CHECKING:  # the stubs are generic, the runtime class is not
    Conn: TypeAlias = PoolConnectionProxy[asyncpg.Record]
else:
    Conn = PoolConnectionProxy

_SET_AGENT = "SELECT set_config('app.agent_id', $1, true)"
_SET_AGENT_AND_LOCK_TIMEOUT = (
    "SELECT set_config('app.agent_id', $1, true), set_config('lock_timeout', $2, true)"
)
_CLOSE_TIMEOUT = 5.0
_MAX_HNSW_DIM = 2000  # pgvector's HNSW index on `vector` columns


def _encode_jsonb(value: str | Mapping[str, Any]) -> str:
    return value if isinstance(value, str) else canonical_json(value)


def _decode_jsonb(text: str) -> dict[str, Any]:
    # jsonb keeps object keys shorter-first; the canonical form (and every backend) sorts them.
    value = json.loads(text, object_pairs_hook=lambda pairs: dict(sorted(pairs)))
    if not isinstance(value, dict):
        raise MigrationError(f"a jsonb column holds {type(value).__name__}, not an object")
    return value


async def init_connection(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    """Per-connection set-up (the pool's ``init=``): pgvector's types by name, looked up in this
    database (never a hard-coded OID), and jsonb as canonical JSON <-> dict.

    Pass it as ``init=`` when injecting your own pool into :class:`PgAdapter`.
    """
    try:
        await register_vector(conn)
    except ValueError as exc:
        raise MigrationError(
            f"pgvector is not installed in this database ({exc}); a superuser must run "
            f"CREATE EXTENSION vector ({SETUP_HINT})"
        ) from exc
    await conn.set_type_codec(
        "jsonb", schema="pg_catalog", encoder=_encode_jsonb, decoder=_decode_jsonb, format="text"
    )


class PgCore:
    """What every view of one :class:`PgAdapter` shares: settings, the pool, its lifecycle."""

    def __init__(
        self,
        dsn: str | None,
        *,
        admin_dsn: str | None,
        embedding_dim: int,
        max_connections: int,
        statement_cache_size: int | None,
        pool: asyncpg.Pool[asyncpg.Record] | None,
        hnsw_ef_search: int = 100,
        vector_exact_max: int | None = None,
        insert_connections: int = 2,
        master_key: MasterKey | None = None,
        master_key_loader: Callable[[], MasterKey] = MasterKey.load,
    ) -> None:
        if dsn is None and pool is None:
            raise ConfigError("PgAdapter needs a connection string (the app role) or a pool")
        if isinstance(embedding_dim, bool) or not isinstance(embedding_dim, int):
            raise ConfigError(f"embedding_dim must be an integer, got {embedding_dim!r}")
        if not 1 <= embedding_dim <= _MAX_HNSW_DIM:
            raise ConfigError(
                f"embedding_dim {embedding_dim} is out of range: pgvector's HNSW index takes "
                f"1..{_MAX_HNSW_DIM} dimensions (storage.embeddingDim)"
            )
        if not isinstance(max_connections, int) or max_connections < 1:
            raise ConfigError(f"max_connections must be at least 1, got {max_connections!r}")
        if statement_cache_size is not None and statement_cache_size < 0:
            raise ConfigError(
                "statement_cache_size must be >= 0 (0 for PgBouncer transaction mode)"
            )
        if not isinstance(hnsw_ef_search, int) or not 1 <= hnsw_ef_search <= 1000:
            raise ConfigError(f"hnsw_ef_search must be 1..1000, got {hnsw_ef_search!r}")
        if (
            isinstance(insert_connections, bool)
            or not isinstance(insert_connections, int)
            or insert_connections < 1
        ):
            raise ConfigError(f"insert_connections must be at least 1, got {insert_connections!r}")
        if master_key is not None and not isinstance(master_key, MasterKey):
            raise ConfigError(f"master_key must be a MasterKey, got {type(master_key).__name__}")
        if vector_exact_max is not None and (
            not isinstance(vector_exact_max, int) or vector_exact_max < 0
        ):
            raise ConfigError(f"vector_exact_max must be >= 0, got {vector_exact_max!r}")
        self.hnsw_ef_search = hnsw_ef_search
        self.vector_exact_max = vector_exact_max
        self.insert_connections = min(insert_connections, max_connections)
        # How long a share of a batched insert waits for a lock before the batch is redone in
        # one transaction (see PgMemory.create_items); tests shorten it.
        self.share_lock_timeout = 1.0
        self.dsn = dsn
        self.admin_dsn = admin_dsn
        self.embedding_dim = embedding_dim
        self.max_connections = max_connections
        self.statement_cache_size = statement_cache_size
        self._pool = pool
        self._owns_pool = pool is None
        self._checked = False
        self._lock = anyio.Lock()
        self.applied_migrations: list[int] = []
        self._master_key = master_key
        self.master_key_loader = master_key_loader
        self._key_lock = anyio.Lock()

    async def master_key(self) -> MasterKey:
        """The service keys' master key, loaded once (off the event loop: it may create the
        key file) on first use when none was passed in."""
        if self._master_key is None:
            async with self._key_lock:
                if self._master_key is None:
                    self._master_key = await anyio.to_thread.run_sync(self.master_key_loader)
        return self._master_key

    def replace_master_key(self, key: MasterKey) -> None:
        self._master_key = key

    def is_ready(self) -> bool:
        return self._pool is not None and self._checked and not self._pool.is_closing()

    async def open(self) -> None:
        async with self._lock:
            if self.is_ready():
                return
            if self.admin_dsn is not None:
                self.applied_migrations = await migrate(
                    self.admin_dsn, embedding_dim=self.embedding_dim
                )
            if self._pool is None or self._pool.is_closing():
                self._pool = await self._create_pool()
                self._owns_pool = True
            try:
                with map_pg_errors("checking the schema"):
                    async with self._pool.acquire() as conn:
                        await check_schema(conn, embedding_dim=self.embedding_dim)
            except BaseException:
                if self._owns_pool:
                    await self._close_pool()
                raise
            self._checked = True

    async def _create_pool(self) -> asyncpg.Pool[asyncpg.Record]:
        options: dict[str, Any] = {}
        if self.statement_cache_size is not None:
            options["statement_cache_size"] = self.statement_cache_size
        with map_pg_errors("connecting the pool"):
            pool: asyncpg.Pool[asyncpg.Record] = await asyncpg.create_pool(
                self.dsn,
                min_size=1,
                max_size=self.max_connections,
                init=init_connection,
                **options,
            )
        return pool

    async def aclose(self) -> None:
        async with self._lock:
            self._checked = False
            if self._owns_pool:
                await self._close_pool()

    async def _close_pool(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None or pool.is_closing():
            return
        # Bounded and shielded: a dead server must not hang close(), nor a cancelled caller
        # leave sockets open.
        with anyio.CancelScope(shield=True):
            with anyio.move_on_after(_CLOSE_TIMEOUT):
                await pool.close()
                return
            pool.terminate()

    @asynccontextmanager
    async def transaction(
        self, agent_id: str | None, action: str, *, lock_timeout: float | None = None
    ) -> AsyncIterator[Conn]:
        """A transaction acting as ``agent_id`` (None: no agent, which sees no agent rows).

        ``lock_timeout`` (seconds): a statement that waits longer for a lock fails with
        asyncpg's ``LockNotAvailableError`` (55P03) in the body; None: PostgreSQL's setting.

        Raises: StorageUnavailableError when the adapter is not open or PostgreSQL is down.
        If cancelled or disconnected, the transaction is rolled back by the server.
        """
        pool = self._pool
        if pool is None or not self._checked:
            raise StorageUnavailableError("the PgAdapter is not open: await adapter.open() first")
        with map_pg_errors(action):
            async with pool.acquire() as conn, conn.transaction():
                if lock_timeout is None:
                    await conn.execute(_SET_AGENT, agent_id or "")
                else:
                    timeout = f"{max(1, round(lock_timeout * 1000))}ms"
                    await conn.execute(_SET_AGENT_AND_LOCK_TIMEOUT, agent_id or "", timeout)
                yield conn

    @asynccontextmanager
    async def connection(self, action: str) -> AsyncIterator[Conn]:
        """A pooled connection outside a transaction and with no agent id (which sees no agent
        rows): for one statement that sets ``app.agent_id`` itself with ``set_config(…, true)``,
        which lasts until that statement's own transaction ends. It saves the BEGIN, set_config
        and COMMIT round trips of :meth:`transaction` (knowledge search, migration 0010).

        Raises: StorageUnavailableError when the adapter is not open or PostgreSQL is down.
        """
        pool = self._pool
        if pool is None or not self._checked:
            raise StorageUnavailableError("the PgAdapter is not open: await adapter.open() first")
        with map_pg_errors(action):
            async with pool.acquire() as conn:
                yield conn


class Scope:
    """One agent's handle on the shared core: what every store method starts from."""

    __slots__ = ("agent_id", "core")

    def __init__(self, core: PgCore, agent_id: str | None) -> None:
        self.core = core
        self.agent_id = agent_id

    @property
    def agent(self) -> str:
        if self.agent_id is None:  # the stores are only built for views (PgAdapter.for_agent)
            raise StorageError("this store needs an agent: use adapter.for_agent(agent_id)")
        return self.agent_id

    def tx(self, action: str) -> AbstractAsyncContextManager[Conn]:
        return self.core.transaction(self.agent_id, action)
