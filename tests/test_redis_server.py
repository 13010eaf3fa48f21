"""The test harness's Redis servers are real, separate processes that tests can kill and restart."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
import redis

from agentbus.testing import RedisServer


def test_shared_server_is_a_separate_process(redis_server: RedisServer) -> None:
    """The session server is another process, configured like the project Redis."""
    assert redis_server.pid != os.getpid()
    client = redis.Redis.from_url(redis_server.url)
    try:
        assert client.ping()
        assert client.config_get("appendonly")["appendonly"] == "yes"
        assert client.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
        assert int(client.info("server")["process_id"]) == redis_server.pid
    finally:
        client.close()


def test_kill_and_restart_keep_the_aof(redis_server_factory: Callable[..., RedisServer]) -> None:
    """SIGKILL stops the server at once; a restart on the same dir replays the AOF."""
    server = redis_server_factory()
    client = redis.Redis.from_url(server.url)
    try:
        client.set("kept", "1")
        server.restart(graceful=True)
        assert client.get("kept") == b"1"
        old_pid = server.pid
        server.kill()
        assert not server.is_running()
        with pytest.raises(redis.ConnectionError):
            client.ping()
        server.restart(graceful=False)
        assert server.pid != old_pid
        assert client.get("kept") == b"1"
    finally:
        client.close()


def test_factory_servers_are_private(
    redis_server: RedisServer, redis_server_factory: Callable[..., RedisServer]
) -> None:
    """A destructive test's server shares nothing with the session server."""
    private = redis_server_factory()
    assert private.port != redis_server.port
    assert private.data_dir != redis_server.data_dir
