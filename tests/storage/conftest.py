"""Fixtures of the storage contract suite: one opened adapter per backend, unique agents per test.

Every test module gets a fresh store per backend (a SQLite file under pytest's temp dir; a new
PostgreSQL database created as the superuser, owned by ``agentbus_owner``, with pgvector), opened
once and shared by the module's tests. Tests isolate themselves by agent id (``new_agent``), never
by wiping the store, so the shared store also exercises the visibility rules between tests.

``storage`` is parametrized over ``sqlite`` and ``postgres``; a backend whose adapter is missing
or cannot open makes its tests fail, never skip.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest

from agentbus.storage._crypto import MASTER_KEY_ENV, MasterKey
from agentbus.testing import PostgresServer

from ._databases import create_app_database, drop_database
from ._support import EMBEDDING_DIM

BACKENDS = ["sqlite", "postgres"]

_ADAPTER_MODULE_PREFIXES = {
    "SQLiteAdapter": ("_sqlite",),
    "PgAdapter": ("_postgres", "_pg"),
}


def adapter_class(name: str) -> Any:
    """The adapter class, from ``agentbus.storage`` or one of its backend modules; fails (never
    skips) when it is missing."""
    import agentbus.storage as package

    cls = getattr(package, name, None)
    if cls is not None:
        return cls
    problems = [f"agentbus.storage has no {name}"]
    modules = sorted(info.name for info in pkgutil.iter_modules(package.__path__))
    for module_name in modules:
        if not module_name.startswith(_ADAPTER_MODULE_PREFIXES[name]):
            continue
        try:
            module = importlib.import_module(f"agentbus.storage.{module_name}")
        except ImportError as exc:
            problems.append(f"{module_name}: {exc}")
            continue
        cls = getattr(module, name, None)
        if cls is not None:
            return cls
    pytest.fail(f"{name} is not importable: {'; '.join(problems)}", pytrace=False)


@pytest.fixture(scope="module")
def pg_database(postgres_server: PostgresServer, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database for this module, laid out like ``postgres_roles.sql`` lays out
    ``agentbus``: owned by agentbus_owner, pgvector installed by the superuser, the app role may
    connect and use schema public (tables and grants come from the adapter's migrations)."""
    module = request.module.__name__.rsplit(".", 1)[-1]
    name = create_app_database(
        postgres_server, f"ab_{re.sub(r'[^a-z0-9]+', '_', module.lower())[:40]}"
    )
    yield name
    drop_database(postgres_server, name)


def make_pg_adapter(server: PostgresServer, database: str) -> Any:
    """A (not yet opened) PgAdapter serving as the app role, migrating as the owner."""
    cls = adapter_class("PgAdapter")
    return cls(
        server.dsn_for("agentbus_app", database),
        admin_dsn=server.dsn_for("agentbus_owner", database),
        embedding_dim=EMBEDDING_DIM,
    )


def make_sqlite_adapter(path: str) -> Any:
    cls = adapter_class("SQLiteAdapter")
    return cls(path, embedding_dim=EMBEDDING_DIM)


@pytest.fixture(scope="module")
def sqlite_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("sqlite") / "agentbus.db")


@pytest.fixture(scope="module")
async def sqlite_adapter(sqlite_path: str) -> AsyncIterator[Any]:
    """The module's opened SQLiteAdapter."""
    adapter = make_sqlite_adapter(sqlite_path)
    await adapter.open()
    try:
        yield adapter
    finally:
        await adapter.aclose()


@pytest.fixture(scope="module")
async def postgres_adapter(postgres_server: PostgresServer, pg_database: str) -> AsyncIterator[Any]:
    """The module's opened PgAdapter (app role; migrations through the owner dsn)."""
    adapter = make_pg_adapter(postgres_server, pg_database)
    await adapter.open()
    try:
        yield adapter
    finally:
        await adapter.aclose()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def storage(backend: str, request: pytest.FixtureRequest) -> Any:
    """An opened adapter of the parametrized backend (shared by the module's tests)."""
    adapter = request.getfixturevalue(f"{backend}_adapter")
    assert adapter.is_ready()
    return adapter


@pytest.fixture
def another_adapter(backend: str, request: pytest.FixtureRequest) -> Callable[[], Any]:
    """``another_adapter()``: a new, unopened adapter on the same store as ``storage``."""
    if backend == "sqlite":
        path = request.getfixturevalue("sqlite_path")
        return lambda: make_sqlite_adapter(path)
    server = request.getfixturevalue("postgres_server")
    database = request.getfixturevalue("pg_database")
    return lambda: make_pg_adapter(server, database)


@pytest.fixture
def new_agent(request: pytest.FixtureRequest) -> Callable[..., str]:
    """``new_agent("a")``: an agent id no other test uses (valid: ``[a-z0-9._-]{1,64}``)."""
    test = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:32]

    def make(label: str = "a") -> str:
        return f"{label}-{secrets.token_hex(4)}-{test}"[:64]

    return make


@pytest.fixture
def view(storage: Any, new_agent: Callable[..., str]) -> Callable[..., Any]:
    """``view("a")``: the adapter scoped to a new agent."""

    def make(label: str = "a") -> Any:
        return storage.for_agent(new_agent(label))

    return make


# --- Storage II: the master key that wraps service keys, and stores of a test's own -----------


@pytest.fixture(scope="session", autouse=True)
def master_key() -> Iterator[MasterKey]:
    """The suite's master key, also exported as ``AGENTBUS_MASTER_KEY`` for the whole session,
    so an adapter built without ``master_key=`` (the module fixtures) loads this key and never
    creates ``~/.agentbus/master.key``."""
    key = MasterKey.generate()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(MASTER_KEY_ENV, key.to_base64())
        yield key


def accepts_master_key(cls: Any) -> bool:
    return "master_key" in inspect.signature(cls).parameters


@dataclass
class PrivateStore:
    """A store of one test's own: ``await store.open(key)`` opens another adapter on it whose
    service keys are wrapped with ``key``. ``sqlite_path`` / ``pg_database`` locate it (for raw
    access); ``owner_dsn`` is the PostgreSQL owner role's dsn."""

    backend: str
    sqlite_path: str | None = None
    pg_database: str | None = None
    owner_dsn: str | None = None
    build: Callable[..., Any] | None = None
    monkeypatch: pytest.MonkeyPatch | None = None
    opened: list[Any] = field(default_factory=list)

    async def open(self, key: MasterKey) -> Any:
        assert self.build is not None
        assert self.monkeypatch is not None
        cls = adapter_class("SQLiteAdapter" if self.backend == "sqlite" else "PgAdapter")
        if accepts_master_key(cls):
            adapter = self.build(master_key=key)
        else:  # the constructor does not take the key (yet): MasterKey.load() reads the env
            self.monkeypatch.setenv(MASTER_KEY_ENV, key.to_base64())
            adapter = self.build()
        self.opened.append(adapter)
        await adapter.open()
        return adapter


@pytest.fixture
async def private_store(
    backend: str,
    request: pytest.FixtureRequest,
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[PrivateStore]:
    """A new, empty store of the parametrized backend for this test alone (a SQLite file under
    tmp_path, or a new PostgreSQL database), for tests that change store-wide state (master-key
    rotation) or inspect the raw tables; every adapter opened on it is closed afterwards."""
    if backend == "sqlite":
        path = str(tmp_path / "private.db")
        cls = adapter_class("SQLiteAdapter")
        store = PrivateStore(
            backend,
            sqlite_path=path,
            build=lambda **options: cls(path, embedding_dim=EMBEDDING_DIM, **options),
            monkeypatch=monkeypatch,
        )
    else:
        server: PostgresServer = request.getfixturevalue("postgres_server")
        name = create_app_database(server, "ab_private")
        cls = adapter_class("PgAdapter")
        store = PrivateStore(
            backend,
            pg_database=name,
            owner_dsn=server.dsn_for("agentbus_owner", name),
            build=lambda **options: cls(
                server.dsn_for("agentbus_app", name),
                admin_dsn=server.dsn_for("agentbus_owner", name),
                embedding_dim=EMBEDDING_DIM,
                **options,
            ),
            monkeypatch=monkeypatch,
        )
    try:
        yield store
    finally:
        for adapter in reversed(store.opened):
            await adapter.aclose()
        if store.pg_database is not None:
            drop_database(server, name)


@pytest.fixture
async def app_conn(
    postgres_server: PostgresServer, pg_database: str, postgres_adapter: Any
) -> AsyncIterator[Any]:
    """A raw asyncpg connection as the app role to the module's (migrated) database: what the
    row-level-security tests run their SQL on."""
    conn = await asyncpg.connect(postgres_server.dsn_for("agentbus_app", pg_database))
    try:
        yield conn
    finally:
        await conn.close()
