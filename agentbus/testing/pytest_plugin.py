"""pytest fixtures that run tests against real, private servers.

Enable in a ``conftest.py`` with ``pytest_plugins = ["agentbus.testing.pytest_plugin"]``.

- ``redis_server``: one private ``redis-server`` for the session; isolate tests by ``namespace``.
- ``redis_server_factory``: private servers for destructive tests (kill -9, restart, CONFIG SET),
  closed when the test ends.
- ``postgres_server``: one private PostgreSQL cluster with pgvector for the session.
- ``namespace``: a bus namespace no other test uses.

A missing binary (or pgvector < 0.8) skips the tests that need it on a developer machine and fails
them when ``CI`` is set, so CI can never go green by skipping.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any, NoReturn, TypeVar

import pytest

from ._errors import ServerUnavailableError
from ._namespace import unique_namespace
from ._postgres_server import PostgresServer
from ._redis_server import RedisServer

T = TypeVar("T")


def skip_or_fail(reason: str) -> NoReturn:
    """A missing prerequisite: skip on a developer machine, fail when ``CI`` is set (so CI can
    never go green by skipping)."""
    if os.environ.get("CI"):
        pytest.fail(f"CI is set and {reason}", pytrace=False)
    pytest.skip(reason)


def start_or_skip(start: Callable[[], T]) -> T:
    """Run ``start``; on :class:`ServerUnavailableError` skip locally but fail under ``CI``."""
    try:
        return start()
    except ServerUnavailableError as exc:
        skip_or_fail(f"a required server is unavailable: {exc}")


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """redis-py's asyncio client and asyncpg are asyncio-only."""
    return "asyncio"


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = start_or_skip(RedisServer.start)
    yield server
    server.close()


@pytest.fixture
def redis_server_factory() -> Iterator[Callable[..., RedisServer]]:
    started: list[RedisServer] = []

    def factory(**kwargs: Any) -> RedisServer:
        server = start_or_skip(lambda: RedisServer.start(**kwargs))
        started.append(server)
        return server

    yield factory
    for server in started:
        server.close()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = start_or_skip(PostgresServer.start)
    yield server
    server.close()


@pytest.fixture
def namespace() -> str:
    return unique_namespace()
