"""The lock scripts' kept connection (``DirectLine``): every caller gets its own reply, whatever
happens between a write and its reply (cancellation, a restart, a flushed script cache)."""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio
import pytest
import redis.exceptions as redis_errors

from agentbus.streams._direct_line import DirectLine
from agentbus.streams._redis import make_client
from agentbus.streams._scripts import LuaScript
from agentbus.testing import RedisServer

pytestmark = pytest.mark.anyio


async def test_concurrent_callers_each_get_their_own_reply(
    redis_server: RedisServer, namespace: str
) -> None:
    """50 INCRs at once (one on the line, the rest through the pool): replies are 1..50, each
    once — no caller is handed another's reply."""
    client = make_client(redis_server.url)
    line = DirectLine(client)
    replies: list[int] = []

    async def incr() -> None:
        replies.append(int(await line.execute("INCR", f"{namespace}:n")))

    try:
        async with anyio.create_task_group() as tg:
            for _ in range(50):
                tg.start_soon(incr)
        assert sorted(replies) == list(range(1, 51))
    finally:
        await line.aclose()
        await client.aclose()


async def test_a_call_cancelled_before_its_reply_leaves_the_line_in_step(
    redis_server: RedisServer, namespace: str
) -> None:
    """A BLPOP cancelled while waiting: the next command on the line reads its own reply, and
    the value pushed afterwards was not taken by the abandoned BLPOP."""
    client = make_client(redis_server.url)
    line = DirectLine(client)
    key = f"{namespace}:queue"
    try:
        with anyio.move_on_after(0.2):
            await line.execute("BLPOP", key, 5)
        await client.rpush(key, "kept")
        assert await line.execute("ECHO", "mine") == b"mine"
        assert await client.lrange(key, 0, -1) == [b"kept"]
    finally:
        await line.aclose()
        await client.aclose()


async def test_the_line_reconnects_after_a_restart_and_reloads_a_flushed_script(
    redis_server_factory: Callable[..., RedisServer], namespace: str
) -> None:
    """After a restart the kept connection is found closed and replaced before use (no error for
    the caller); a script the server no longer knows is loaded and run once."""
    server = redis_server_factory()
    client = make_client(server.url)
    line = DirectLine(client)
    script = LuaScript(client, "return redis.call('INCR', KEYS[1])")
    key = f"{namespace}:runs"
    try:
        assert await line.run(script, [key], []) == 1
        await anyio.to_thread.run_sync(lambda: server.restart(graceful=True))
        assert await line.execute("PING") in (b"PONG", True)
        await client.script_flush()
        assert await line.run(script, [key], []) == 2  # ran once more, not twice
    finally:
        await line.aclose()
        await client.aclose()


async def test_the_line_keeps_a_connection_outside_the_pool_until_closed(
    redis_server: RedisServer, namespace: str
) -> None:
    """The line's connection is its own (the pool lends none to it) and is closed by aclose();
    the client outlives the line, and later calls go through the pool."""
    client = make_client(redis_server.url)
    line = DirectLine(client)
    name = f"{namespace}:line"
    try:
        await line.execute("CLIENT", "SETNAME", name)
        listed = (await client.execute_command("CLIENT", "LIST")).decode()
        assert f"name={name}" in listed
        assert len(client.connection_pool._in_use_connections) == 0
        await line.aclose()
        for _ in range(50):  # the server notices the closed socket shortly
            listed = (await client.execute_command("CLIENT", "LIST")).decode()
            if f"name={name}" not in listed:
                break
            await anyio.sleep(0.02)
        assert f"name={name}" not in listed
        assert await line.execute("ECHO", "after") == b"after"
    finally:
        await client.aclose()


async def test_a_reply_that_does_not_come_is_a_timeout_and_the_line_recovers(
    redis_server: RedisServer, namespace: str
) -> None:
    """With a 0.3 s socket timeout, a BLPOP waiting 5 s raises redis-py's TimeoutError after
    about 0.3 s (not 5); the next command gets its own reply."""
    client = make_client(redis_server.url)
    client.connection_pool.connection_kwargs["socket_timeout"] = 0.3
    line = DirectLine(client)
    try:
        started = time.monotonic()
        with pytest.raises(redis_errors.TimeoutError, match=r"within 0\.3 s"):
            await line.execute("BLPOP", f"{namespace}:never", 5)
        assert time.monotonic() - started < 2
        assert await line.execute("ECHO", "next") == b"next"
    finally:
        await line.aclose()
        await client.aclose()
