"""Broadcast to many mailboxes, and best-effort pub/sub events (also across a Redis restart)."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AsyncExitStack

import anyio
import pytest
from bus_support import bus_config, wait_until

from agentbus import AgentBus, BackendError, InvalidNameError, ReceivedEvent, Subscription
from agentbus.testing import RedisServer

pytestmark = pytest.mark.anyio


async def mailbox_types(bus: AgentBus, agent: str) -> list[tuple[bytes, bytes]]:
    entries = await bus.redis.xrange(bus.keys.mailbox(agent))
    return [(fields[b"type"], fields[b"sender"]) for _, fields in entries]


async def publish_until_heard(bus: AgentBus, topic: str, data: object) -> None:
    """Publish until a subscriber received it (a fresh subscription may not be active yet)."""

    async def heard() -> bool:
        return await bus.publish(topic, data) > 0

    await wait_until(heard, what=f"a subscriber to hear {topic!r}")


async def next_event(events: Subscription, timeout: float = 5.0) -> ReceivedEvent:
    with anyio.fail_after(timeout):
        return await events.__anext__()


async def test_broadcast_to_explicit_agents(redis_server: RedisServer, namespace: str) -> None:
    """broadcast(to=[...]) writes one message into each named mailbox (duplicates once)."""
    async with AgentBus("boss", config=bus_config(redis_server, namespace)) as bus:
        ids = await bus.broadcast("alert", {"level": 2}, to=["a1", "a2", "a3", "a2"])
        assert list(ids) == ["a1", "a2", "a3"]
        assert len(set(ids.values())) == 3
        for agent in ("a1", "a2", "a3"):
            assert await mailbox_types(bus, agent) == [(b"alert", b"boss")]
        assert not await bus.redis.exists(bus.keys.mailbox("boss"))


async def test_broadcast_defaults_to_every_registered_agent_but_self(
    redis_server: RedisServer, namespace: str
) -> None:
    """broadcast() without ``to`` reaches every agent in the registry except the sender."""
    config = bus_config(redis_server, namespace)
    async with AsyncExitStack() as stack:
        for agent in ("r1", "r2", "r3"):
            await stack.enter_async_context(AgentBus(agent, config=config))
        # A second instance of r2 is still one agent: one message.
        await stack.enter_async_context(AgentBus("r2", config=config))
        boss = await stack.enter_async_context(AgentBus("boss", config=config))
        ids = await boss.broadcast("alert", "all hands")
        assert sorted(ids) == ["r1", "r2", "r3"]
        for agent in ("r1", "r2", "r3"):
            assert await mailbox_types(boss, agent) == [(b"alert", b"boss")]
        assert not await boss.redis.exists(boss.keys.mailbox("boss"))


async def test_subscription_receives_matching_topics_only(
    redis_server: RedisServer, namespace: str
) -> None:
    """subscribe("task.*") receives task events with topic, sender, time and data, and no others."""
    config = bus_config(redis_server, namespace)
    async with (
        AgentBus("listener", config=config) as listener,
        AgentBus("planner", config=config) as planner,
        listener.subscribe("task.*") as events,
    ):
        await publish_until_heard(planner, "task.warmup", None)
        assert (await next_event(events)).topic == "task.warmup"

        assert await planner.publish("project.updated", {"x": 1}) == 0
        assert await planner.publish("task", {"x": 2}) == 0  # "task.*" needs the dot
        before = time.time()
        assert await planner.publish("task.updated", {"id": 7, "tags": ["a"]}) == 1
        assert await planner.publish("task.done.today", None) == 1  # "*" spans dots
        first = await next_event(events)
        second = await next_event(events)
    assert first.topic == "task.updated"
    assert first.sender == "planner"
    assert first.data == {"id": 7, "tags": ["a"]}
    assert before - 1 <= first.time <= time.time() + 1
    assert second.topic == "task.done.today"
    assert second.data is None


async def test_subscription_with_several_patterns(
    redis_server: RedisServer, namespace: str
) -> None:
    """A subscription with several patterns receives every topic that matches any of them."""
    config = bus_config(redis_server, namespace)
    async with AgentBus("listener", config=config) as bus, bus.subscribe("a.*", "b.x") as events:
        await publish_until_heard(bus, "b.x", 0)
        assert (await next_event(events)).data == 0
        assert await bus.publish("a.y", 1) == 1
        assert await bus.publish("b.y", 2) == 0
        assert await bus.publish("b.x", 3) == 1
        assert [(await next_event(events)).data for _ in range(2)] == [1, 3]


async def test_bad_topics_and_patterns_are_refused(
    redis_server: RedisServer, namespace: str
) -> None:
    """publish() refuses a topic with spaces or glob characters; subscribe() needs a pattern."""
    async with AgentBus("planner", config=bus_config(redis_server, namespace)) as bus:
        for topic in ("task.*", "has space", ""):
            with pytest.raises(InvalidNameError):
                await bus.publish(topic, 1)
        with pytest.raises(ValueError, match="at least one topic pattern"):
            bus.subscribe()
        with pytest.raises(ValueError, match="invalid topic pattern"):
            bus.subscribe("has space")


async def test_subscription_survives_a_redis_restart(
    redis_server_factory: Callable[..., RedisServer], namespace: str
) -> None:
    """A subscription reconnects by itself after Redis restarts and gets later events."""
    server = redis_server_factory()
    config = bus_config(server, namespace)
    async with (
        AgentBus("listener", config=config) as listener,
        AgentBus("planner", config=config) as planner,
        listener.subscribe("task.*") as events,
    ):
        await publish_until_heard(planner, "task.before", 1)
        assert (await next_event(events)).topic == "task.before"

        await anyio.to_thread.run_sync(lambda: server.restart(graceful=True))
        received = anyio.Event()
        seen: list[ReceivedEvent] = []

        async def listen() -> None:
            async for event in events:
                seen.append(event)
                if event.topic == "task.after":
                    received.set()
                    return

        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                tg.start_soon(listen)
                while not received.is_set():
                    try:
                        await planner.publish("task.after", {"n": 2})
                    except BackendError:
                        pass  # the publisher's connection is reconnecting too
                    with anyio.move_on_after(0.1):
                        await received.wait()
        assert events.reconnects >= 1
        assert seen[-1].data == {"n": 2}
