"""Test against real servers the way agentbus does: private redis-server and PostgreSQL processes.

Use the fixtures (``pytest_plugins = ["agentbus.testing.pytest_plugin"]``) or the classes.
"""

from ._errors import ServerUnavailableError as ServerUnavailableError
from ._namespace import unique_namespace as unique_namespace
from ._ports import free_port as free_port
from ._postgres_server import PostgresServer as PostgresServer
from ._redis_server import RedisServer as RedisServer

__all__ = [
    "PostgresServer",
    "RedisServer",
    "ServerUnavailableError",
    "free_port",
    "unique_namespace",
]
