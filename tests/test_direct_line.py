"""The lock scripts' kept connection (``DirectLine``): every caller gets its own reply, whatever
happens between a write and its reply (cancellation, a restart, a flushed script cache)."""

from __future__ import annotations

from collections.abc import Callable

import anyio
import pytest

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


async def test_closing_the_line_gives_its_connection_back(
    redis_server: RedisServer,
) -> None:
    """The client outlives the line: aclose() returns the kept connection to the pool, and
    later calls go through the pool."""
    client = make_client(redis_server.url)
    pool = client.connection_pool
    line = DirectLine(client)
    try:
        await line.execute("PING")
        assert len(pool._in_use_connections) == 1
        await line.aclose()
        assert len(pool._in_use_connections) == 0
        assert await line.execute("ECHO", "after") == b"after"
        assert len(pool._in_use_connections) == 0
    finally:
        await client.aclose()
