"""Sending: envelope ids, stream entries, idempotency, batches, pipelining and bad input."""

from __future__ import annotations

import time
import uuid
from typing import Any

import anyio
import pytest
from bus_support import bus_config, wait_until

from agentbus import (
    AgentBus,
    BusClosedError,
    EncodeError,
    InvalidAgentIdError,
    InvalidNameError,
    Message,
    MessageTooLargeError,
)
from agentbus.testing import RedisServer

pytestmark = pytest.mark.anyio


async def mailbox_entries(bus: AgentBus, agent: str) -> list[tuple[bytes, dict[bytes, bytes]]]:
    entries: list[tuple[bytes, dict[bytes, bytes]]] = await bus.redis.xrange(
        bus.keys.mailbox(agent)
    )
    return entries


async def receive(bus: AgentBus, count: int, *, timeout: float = 5.0) -> list[Message]:
    """Take ``count`` messages from ``bus.messages()`` and ack them."""
    received: list[Message] = []
    with anyio.fail_after(timeout):
        async with bus.messages() as stream:
            async for message in stream:
                received.append(message)
                await message.ack()
                if len(received) == count:
                    break
    return received


def count_round_trips(bus: AgentBus) -> list[int]:
    """Record the number of commands of every round trip the bus's sender makes."""
    sender: Any = bus._sender
    real = sender._pipeline
    trips: list[int] = []

    async def counting(commands: list[tuple[Any, ...]]) -> list[Any]:
        trips.append(len(commands))
        result: list[Any] = await real(commands)
        return result

    sender._pipeline = counting
    return trips


async def test_send_returns_a_uuid7_envelope_id(redis_server: RedisServer, namespace: str) -> None:
    """send() returns a new UUIDv7 envelope id whose timestamp is the sending time."""
    async with AgentBus("alice", config=bus_config(redis_server, namespace)) as bus:
        before = int(time.time() * 1000)
        first = await bus.send("bob", "greeting", {"n": 1})
        second = await bus.send("bob", "greeting", {"n": 2})
        after = int(time.time() * 1000)
    for mid in (first, second):
        parsed = uuid.UUID(mid)
        assert str(parsed) == mid
        assert parsed.version == 7
        assert parsed.variant == uuid.RFC_4122
        assert before <= parsed.int >> 80 <= after  # 48-bit Unix milliseconds
    assert first != second


async def test_stream_entry_keeps_type_and_sender_readable(
    redis_server: RedisServer, namespace: str
) -> None:
    """The mailbox entry carries plain-text type and sender fields next to the envelope."""
    async with AgentBus("alice", config=bus_config(redis_server, namespace)) as bus:
        await bus.send("bob", "task.assign", {"task": 7})
        entries = await mailbox_entries(bus, "bob")
    assert len(entries) == 1
    fields = entries[0][1]
    assert fields[b"type"] == b"task.assign"
    assert fields[b"sender"] == b"alice"
    assert set(fields) == {b"type", b"sender", b"env"}


async def test_repeated_idempotency_key_returns_first_id_and_writes_nothing(
    redis_server: RedisServer, namespace: str
) -> None:
    """A second send with the same idempotency key returns the first id and appends nothing."""
    async with AgentBus("alice", config=bus_config(redis_server, namespace)) as bus:
        first = await bus.send("bob", "task.assign", {"v": 1}, idempotency_key="task-1")
        again = await bus.send("bob", "task.assign", {"v": 2}, idempotency_key="task-1")
        other = await bus.send("bob", "task.assign", {"v": 3}, idempotency_key="task-2")
        entries = await mailbox_entries(bus, "bob")
    assert again == first
    assert other != first
    assert len(entries) == 2


async def test_concurrent_sends_with_one_idempotency_key_write_once(
    redis_server: RedisServer, namespace: str
) -> None:
    """Concurrent sends under one idempotency key (pipelined together) write one message."""
    async with AgentBus("alice", config=bus_config(redis_server, namespace)) as bus:
        ids: list[str] = []

        async def send(i: int) -> None:
            ids.append(await bus.send("bob", "task.assign", i, idempotency_key="same"))

        async with anyio.create_task_group() as tg:
            for i in range(10):
                tg.start_soon(send, i)
        entries = await mailbox_entries(bus, "bob")
    assert len(ids) == 10
    assert len(set(ids)) == 1
    assert len(entries) == 1


async def test_idempotency_key_is_usable_again_after_dedup_ttl(
    redis_server: RedisServer, namespace: str
) -> None:
    """Once bus.dedupTtl has passed, the same idempotency key sends a new message."""
    config = bus_config(redis_server, namespace, dedupTtl=0.3)
    async with AgentBus("alice", config=config) as bus:
        first = await bus.send("bob", "ping", idempotency_key="k")
        assert await bus.send("bob", "ping", idempotency_key="k") == first
        dedup_key = bus.keys.dedup("bob", "k")
        ttl_ms = await bus.redis.pttl(dedup_key)
        assert 0 < ttl_ms <= 300

        async def expired() -> bool:
            return not await bus.redis.exists(dedup_key)

        await wait_until(expired, what="the dedup key to expire")
        second = await bus.send("bob", "ping", idempotency_key="k")
        assert second != first
        assert len(await mailbox_entries(bus, "bob")) == 2


async def test_send_many_writes_a_batch_in_one_round_trip(
    redis_server: RedisServer, namespace: str
) -> None:
    """send_many writes every message in one round trip and returns their ids in order."""
    async with AgentBus("alice", config=bus_config(redis_server, namespace)) as bus:
        trips = count_round_trips(bus)
        ids = await bus.send_many([("bob", "item", i) for i in range(20)] + [("carol", "item", 99)])
        assert len(trips) == 1
        assert len(set(ids)) == 21
        bob = await mailbox_entries(bus, "bob")
        carol = await mailbox_entries(bus, "carol")
    assert len(bob) == 20
    assert len(carol) == 1


async def test_send_many_delivers_ids_in_order(redis_server: RedisServer, namespace: str) -> None:
    """The ids send_many returns match the messages in mailbox order."""
    config = bus_config(redis_server, namespace)
    async with AgentBus("alice", config=config) as alice:
        ids = await alice.send_many([("bob", "item", {"i": i}) for i in range(10)])
    async with AgentBus("bob", config=config) as bob:
        received = await receive(bob, 10)
    assert [m.id for m in received] == ids
    assert [m.data for m in received] == [{"i": i} for i in range(10)]


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        (("Bad Id", "item", 1), InvalidAgentIdError),
        (("bob", "bad type", 1), InvalidNameError),
        (("bob", "item", object()), EncodeError),
        (("bob", "item", "x" * 5000), MessageTooLargeError),
    ],
)
async def test_send_many_validates_everything_before_writing(
    redis_server: RedisServer, namespace: str, bad: tuple[str, str, Any], error: type[Exception]
) -> None:
    """One invalid message in a send_many batch raises and nothing of the batch is written."""
    config = bus_config(redis_server, namespace, maxPayloadBytes=1024)
    async with AgentBus("alice", config=config) as bus:
        batch = [("bob", "item", 1), ("carol", "item", 2), bad, ("bob", "item", 3)]
        with pytest.raises(error):
            await bus.send_many(batch)
        for agent in ("bob", "carol"):
            assert not await bus.redis.exists(bus.keys.mailbox(agent))


async def test_concurrent_sends_are_pipelined_and_all_arrive(
    redis_server: RedisServer, namespace: str
) -> None:
    """500 concurrent send() calls all arrive with distinct ids, in far fewer round trips."""
    async with AgentBus("alice", config=bus_config(redis_server, namespace)) as bus:
        trips = count_round_trips(bus)
        ids: dict[int, str] = {}

        async def send(i: int) -> None:
            ids[i] = await bus.send("bob", "item", {"i": i})

        async with anyio.create_task_group() as tg:
            for i in range(500):
                tg.start_soon(send, i)
        entries = await mailbox_entries(bus, "bob")
    assert len(set(ids.values())) == 500
    assert len(entries) == 500
    assert sum(trips) == 500
    assert len(trips) < 50, f"{len(trips)} round trips for 500 concurrent sends"


async def test_headers_and_ttl_round_trip(redis_server: RedisServer, namespace: str) -> None:
    """Headers and the ttl-derived expiry arrive with the message."""
    config = bus_config(redis_server, namespace)
    async with AgentBus("alice", config=config) as alice:
        mid = await alice.send(
            "bob", "note", {"x": [1, 2]}, headers={"trace": "abc", "lang": "en"}, ttl=30.0
        )
    async with AgentBus("bob", config=config) as bob:
        [message] = await receive(bob, 1)
    assert message.id == mid
    assert message.type == "note"
    assert message.sender == "alice"
    assert message.data == {"x": [1, 2]}
    assert message.headers == {"trace": "abc", "lang": "en"}
    assert message.envelope.expires_at is not None
    assert message.envelope.expires_at == pytest.approx(message.created_at + 30.0)
    assert message.deliveries == 1


# ---- bad input ---------------------------------------------------------------------------


async def test_payload_over_the_limit_is_refused(redis_server: RedisServer, namespace: str) -> None:
    """A payload larger than bus.maxPayloadBytes raises MessageTooLargeError; nothing is written."""
    config = bus_config(redis_server, namespace, maxPayloadBytes=1024)
    async with AgentBus("alice", config=config) as bus:
        await bus.send("bob", "blob", b"x" * 1000)  # just under the limit
        with pytest.raises(MessageTooLargeError, match="maxPayloadBytes=1024"):
            await bus.send("bob", "blob", b"x" * 1025)
        assert len(await mailbox_entries(bus, "bob")) == 1


@pytest.mark.parametrize(
    "data", [object(), {"nested": [1, complex(1, 2)]}, 2**70], ids=["object", "complex", "bigint"]
)
async def test_unencodable_data_is_refused(
    redis_server: RedisServer, namespace: str, data: Any
) -> None:
    """Data msgspec cannot encode raises EncodeError (also a TypeError); nothing is written."""
    async with AgentBus("alice", config=bus_config(redis_server, namespace)) as bus:
        with pytest.raises(EncodeError, match="cannot encode"):
            await bus.send("bob", "item", data)
        with pytest.raises(TypeError):
            await bus.send("bob", "item", data)
        assert not await bus.redis.exists(bus.keys.mailbox("bob"))


@pytest.mark.parametrize("agent", ["Bad Id", "", "a" * 65, "a{b}", "ÄGENT"])
async def test_bad_recipient_is_refused(
    redis_server: RedisServer, namespace: str, agent: str
) -> None:
    """A recipient that breaks the agent-id rule raises InvalidAgentIdError; nothing is written."""
    async with AgentBus("alice", config=bus_config(redis_server, namespace)) as bus:
        with pytest.raises(InvalidAgentIdError, match="invalid agent id"):
            await bus.send(agent, "item", 1)
        assert await bus.redis.keys(f"{namespace}:*mbox") == []


async def test_bad_own_agent_id_is_refused(redis_server: RedisServer, namespace: str) -> None:
    """An AgentBus cannot be created under an id that breaks the rule (64 characters is fine)."""
    config = bus_config(redis_server, namespace)
    for agent in ("Bad Id", "", "a" * 65):
        with pytest.raises(InvalidAgentIdError):
            AgentBus(agent, config=config)
    async with AgentBus("a" * 64, config=config) as bus:
        await bus.send("a" * 64, "note")
        assert (await bus.mailbox_stats()).length == 1


def test_a_bus_can_be_created_outside_the_event_loop(
    redis_server: RedisServer, namespace: str
) -> None:
    """AgentBus(...) can be built in synchronous code and entered later inside the loop."""
    bus = AgentBus("alice", config=bus_config(redis_server, namespace))

    async def main() -> str:
        async with bus:
            return await bus.send("bob", "note")

    assert uuid.UUID(anyio.run(main)).version == 7


@pytest.mark.parametrize("type_", ["", "has space", "a*", "x" * 129, "{tag}"])
async def test_bad_message_type_is_refused(
    redis_server: RedisServer, namespace: str, type_: str
) -> None:
    """A message type that breaks the name rule raises InvalidNameError; nothing is written."""
    async with AgentBus("alice", config=bus_config(redis_server, namespace)) as bus:
        with pytest.raises(InvalidNameError, match="message type"):
            await bus.send("bob", type_, 1)
        assert not await bus.redis.exists(bus.keys.mailbox("bob"))


async def test_use_after_close_raises_bus_closed(redis_server: RedisServer, namespace: str) -> None:
    """Every call on a closed bus raises BusClosedError."""
    bus = AgentBus("alice", config=bus_config(redis_server, namespace))
    with pytest.raises(BusClosedError):
        await bus.send("bob", "item", 1)  # not started yet
    async with bus:
        await bus.send("bob", "item", 1)
    with pytest.raises(BusClosedError):
        await bus.send("bob", "item", 2)
    with pytest.raises(BusClosedError):
        await bus.send_many([("bob", "item", 3)])
    with pytest.raises(BusClosedError):
        await bus.request("bob", "item", 4, timeout=1)
    with pytest.raises(BusClosedError):
        await bus.publish("topic", 5)
    with pytest.raises(BusClosedError):
        bus.messages()
    with pytest.raises(BusClosedError):
        bus.subscribe("task.*")
    with pytest.raises(BusClosedError):
        await bus.serve()
    with pytest.raises(BusClosedError):
        await bus.mailbox_stats()
    with pytest.raises(BusClosedError):
        async with bus:
            pass
