"""Request/reply: answers, timeouts, remote errors, late replies, sibling instances, processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from bus_support import bus_config

from agentbus import AgentBus, Config, Message, RemoteError, RequestTimeoutError
from agentbus.testing import RedisServer

pytestmark = pytest.mark.anyio

ECHO_SERVER = Path(__file__).with_name("bus_echo_server.py")


@asynccontextmanager
async def echo_agent(
    config: Config, agent: str = "echo", *, concurrency: int = 16
) -> AsyncIterator[AgentBus]:
    """An agent that answers ``echo`` with its data, ``fail`` by raising, ``slow`` after a wait."""
    async with AgentBus(agent, config=config) as bus:

        @bus.handler("echo")
        async def echo(message: Message) -> Any:
            return {"data": message.data, "sender": message.sender}

        @bus.handler("fail")
        async def fail(message: Message) -> None:
            raise LookupError(f"no such thing: {message.data}")

        @bus.handler("slow")
        async def slow(message: Message) -> Any:
            await anyio.sleep(message.data["wait"])
            return message.data["n"]

        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: bus.serve(concurrency=concurrency))
            yield bus
            tg.cancel_scope.cancel()


async def test_request_gets_the_handlers_return_value(
    redis_server: RedisServer, namespace: str
) -> None:
    """request() returns the handler's return value as the reply's data."""
    config = bus_config(redis_server, namespace)
    async with echo_agent(config), AgentBus("asker", config=config) as asker:
        reply = await asker.request("echo", "echo", {"q": [1, 2, 3]}, timeout=5)
        second = await asker.request("echo", "echo", "again", timeout=5)
    assert reply.data == {"data": {"q": [1, 2, 3]}, "sender": "asker"}
    assert reply.sender == "echo"
    assert reply.type == "reply"
    assert reply.correlation_id is not None
    assert second.data == {"data": "again", "sender": "asker"}


async def test_request_times_out_when_nobody_serves(
    redis_server: RedisServer, namespace: str
) -> None:
    """With no instance serving the recipient, request() raises RequestTimeoutError in time."""
    config = bus_config(redis_server, namespace)
    async with AgentBus("asker", config=config) as asker:
        started = time.monotonic()
        with pytest.raises(RequestTimeoutError, match="no reply from 'nobody'"):
            await asker.request("nobody", "question", timeout=0.3)
        elapsed = time.monotonic() - started
        with pytest.raises(TimeoutError):  # also a builtin TimeoutError
            await asker.request("nobody", "question", timeout=0.1)
    assert 0.3 <= elapsed < 2.0


async def test_request_to_a_failing_handler_raises_remote_error(
    redis_server: RedisServer, namespace: str
) -> None:
    """A handler that raises answers with RemoteError at once, not with a timeout."""
    config = bus_config(redis_server, namespace)
    async with echo_agent(config) as server, AgentBus("asker", config=config) as asker:
        started = time.monotonic()
        with pytest.raises(RemoteError) as caught:
            await asker.request("echo", "fail", "the key", timeout=10)
        elapsed = time.monotonic() - started
        stats = await server.mailbox_stats()
    assert caught.value.remote_type == "LookupError"
    assert caught.value.remote_message == "no such thing: the key"
    assert not isinstance(caught.value, TimeoutError)
    assert elapsed < 5
    assert (stats.delayed, stats.dead_letters) == (0, 0)  # requests are not retried


async def test_unencodable_return_value_answers_with_remote_error(
    redis_server: RedisServer, namespace: str
) -> None:
    """A handler whose return value cannot be encoded answers with RemoteError(EncodeError)."""
    config = bus_config(redis_server, namespace)
    async with AgentBus("server", config=config) as server:

        @server.handler("odd")
        async def odd(message: Message) -> object:
            return object()

        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve)
            with pytest.raises(RemoteError) as caught:
                await server.request("server", "odd", timeout=5)
            tg.cancel_scope.cancel()
    assert caught.value.remote_type == "EncodeError"
    assert "cannot encode" in caught.value.remote_message


async def test_requests_can_be_answered_by_manual_consumption(
    redis_server: RedisServer, namespace: str
) -> None:
    """A request read through messages() is answered with msg.reply()."""
    config = bus_config(redis_server, namespace)
    async with (
        AgentBus("manual", config=config) as server,
        AgentBus("asker", config=config) as asker,
    ):

        async def answer_one() -> None:
            async with server.messages() as stream:
                async for message in stream:
                    assert message.is_request
                    await message.reply({"got": message.data})
                    await message.ack()
                    return

        async with anyio.create_task_group() as tg:
            tg.start_soon(answer_one)
            reply = await asker.request("manual", "question", [1], timeout=5)
    assert reply.data == {"got": [1]}


async def test_late_reply_is_dropped_and_next_request_gets_its_own(
    redis_server: RedisServer, namespace: str
) -> None:
    """A reply that arrives after its request timed out is dropped; the next request gets the
    reply to itself."""
    config = bus_config(redis_server, namespace)
    async with echo_agent(config, concurrency=1), AgentBus("asker", config=config) as asker:
        with pytest.raises(RequestTimeoutError):
            await asker.request("echo", "slow", {"n": 1, "wait": 0.6}, timeout=0.3)
        # One handler at a time: the late answer to n=1 is written before the answer to n=2.
        reply = await asker.request("echo", "slow", {"n": 2, "wait": 0}, timeout=5)
        assert reply.data == 2
        assert asker._replies.dropped == 1


async def test_sibling_instances_each_get_their_own_replies(
    redis_server: RedisServer, namespace: str
) -> None:
    """Two instances of one agent requesting concurrently each receive only their replies."""
    config = bus_config(redis_server, namespace)
    results: dict[str, list[Any]] = {"one": [], "two": []}

    async def ask(bus: AgentBus, name: str, i: int) -> None:
        reply = await bus.request("echo", "echo", {"who": name, "i": i}, timeout=10)
        results[name].append(reply.data["data"])

    async with (
        echo_agent(config),
        AgentBus("asker", config=config, instance_id="one") as one,
        AgentBus("asker", config=config, instance_id="two") as two,
    ):
        async with anyio.create_task_group() as tg:
            for i in range(25):
                tg.start_soon(ask, one, "one", i)
                tg.start_soon(ask, two, "two", i)
        assert one._replies.dropped == 0
        assert two._replies.dropped == 0
    for name in ("one", "two"):
        assert sorted(r["i"] for r in results[name]) == list(range(25))
        assert {r["who"] for r in results[name]} == {name}


async def test_reply_stream_is_deleted_on_close(redis_server: RedisServer, namespace: str) -> None:
    """Closing the bus deletes its instance's reply stream."""
    config = bus_config(redis_server, namespace)
    async with echo_agent(config) as server:
        async with AgentBus("asker", config=config, instance_id="i1") as asker:
            await asker.request("echo", "echo", 1, timeout=5)
            reply_key = asker.keys.reply("asker", "i1")
            assert await server.redis.exists(reply_key)
            ttl_ms = await server.redis.pttl(reply_key)
            assert ttl_ms > 0  # and expires by itself when nobody closes it
        assert not await server.redis.exists(reply_key)


async def test_requests_work_between_processes(
    redis_server: RedisServer, namespace: str, tmp_path: Path
) -> None:
    """An agent in another process answers this process's requests."""
    config = bus_config(redis_server, namespace)
    log = tmp_path / "server.log"
    replies: list[Any] = []
    with log.open("wb") as stderr:
        process = await anyio.open_process(
            [sys.executable, str(ECHO_SERVER), redis_server.url, namespace, "remote"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
        )  # fmt: skip
    async with process:
        try:
            async with AgentBus("asker", config=config) as asker:
                # Requests wait in the mailbox until the process has started serving.
                first = await asker.request("remote", "echo", {"n": 1}, timeout=20)

                async def ask(i: int) -> None:
                    replies.append((await asker.request("remote", "echo", i, timeout=10)).data)

                async with anyio.create_task_group() as tg:
                    for i in range(10):
                        tg.start_soon(ask, i)
        except RequestTimeoutError:
            pytest.fail(f"the server process did not answer; its log:\n{log.read_text()}")
        finally:
            process.terminate()
            with anyio.fail_after(10):
                await process.wait()
    assert first.data["data"] == {"n": 1}
    assert first.data["sender"] == "asker"
    assert first.data["pid"] == process.pid != os.getpid()
    assert sorted(r["data"] for r in replies) == list(range(10))
