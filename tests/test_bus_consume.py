"""Consuming: handlers and serve(), manual consumption, retries, dead letters, replay, stats."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest
from bus_support import bus_config, wait_for_value, wait_until

from agentbus import AgentBus, DeadLetter, MailboxStats, Message
from agentbus.testing import RedisServer

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def serving(bus: AgentBus, *, concurrency: int = 16) -> AsyncIterator[AgentBus]:
    """Run ``bus.serve()`` in the background for the duration of the block."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: bus.serve(concurrency=concurrency))
        yield bus
        tg.cancel_scope.cancel()


async def pending(bus: AgentBus) -> int:
    return (await bus.mailbox_stats()).pending


async def dead_letters_of(bus: AgentBus, count: int, *, timeout: float = 5.0) -> list[DeadLetter]:
    """Wait until ``bus``'s agent has ``count`` dead letters; return them."""

    async def enough() -> list[DeadLetter]:
        letters = await bus.dead_letters()
        return letters if len(letters) >= count else []

    letters = await wait_until(enough, timeout=timeout, what=f"{count} dead letter(s)")
    assert len(letters) == count
    return letters


class Recorder:
    """Collects what a handler saw; ``wait(n)`` returns once ``n`` calls were recorded."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.deliveries: list[int] = []
        self._changed = anyio.Event()

    def record(self, message: Message) -> None:
        self.messages.append(message)
        self.deliveries.append(message.deliveries)
        self._changed.set()
        self._changed = anyio.Event()

    async def wait(self, count: int, *, timeout: float = 5.0) -> list[Message]:
        with anyio.fail_after(timeout):
            while len(self.messages) < count:
                await self._changed.wait()
        return self.messages


async def test_serve_acks_after_the_handler_succeeds(
    redis_server: RedisServer, namespace: str
) -> None:
    """serve() runs the handler and acks the message afterwards: nothing stays pending."""
    config = bus_config(redis_server, namespace)
    seen = Recorder()
    pending_while_handling: list[int] = []
    async with AgentBus("worker", config=config) as bus:

        @bus.handler("job")
        async def on_job(message: Message) -> None:
            pending_while_handling.append(await pending(bus))
            seen.record(message)

        mid = await bus.send("worker", "job", {"n": 1})
        async with serving(bus):
            [message] = await seen.wait(1)
            await wait_for_value(lambda: pending(bus), 0, what="pending after the ack")
        stats = await bus.mailbox_stats()
    assert pending_while_handling == [1]  # not acked while the handler runs
    assert message.id == mid
    assert message.data == {"n": 1}
    assert stats.depth == 0
    assert stats.dead_letters == 0


async def test_serve_bounds_handler_concurrency(redis_server: RedisServer, namespace: str) -> None:
    """With concurrency=3 at most three handlers run at once, and three do when work waits."""
    config = bus_config(redis_server, namespace)
    running = 0
    most = 0
    three_running = anyio.Event()
    done = Recorder()
    async with AgentBus("worker", config=config) as bus:

        @bus.handler("job")
        async def on_job(message: Message) -> None:
            nonlocal running, most
            running += 1
            most = max(most, running)
            if running == 3:
                three_running.set()
            with anyio.fail_after(5):
                await three_running.wait()  # hold the first three until three run together
            running -= 1
            done.record(message)

        await bus.send_many([("worker", "job", i) for i in range(12)])
        async with serving(bus, concurrency=3):
            await done.wait(12)
    assert most == 3
    assert sorted(m.data for m in done.messages) == list(range(12))


async def test_messages_iterator_ack_and_nack_with_delay(
    redis_server: RedisServer, namespace: str
) -> None:
    """messages() yields messages; nack(delay=...) brings one back no sooner than the delay."""
    config = bus_config(redis_server, namespace)
    async with AgentBus("worker", config=config, retry_base=0.05) as bus:
        first = await bus.send("worker", "job", "first")
        second = await bus.send("worker", "job", "second")
        seen: list[tuple[str, int]] = []
        with anyio.fail_after(5):
            async with bus.messages() as stream:
                async for message in stream:
                    seen.append((message.data, message.deliveries))
                    if message.data == "first" and message.deliveries == 1:
                        nacked_at = time.monotonic()
                        await message.nack(delay=0.3)
                        continue
                    await message.ack()
                    if message.data == "first":
                        redelivered_after = time.monotonic() - nacked_at
                        assert message.id == first
                        break
        await wait_for_value(lambda: pending(bus), 0, what="pending after the acks")
        stats = await bus.mailbox_stats()
    assert seen == [("first", 1), ("second", 1), ("first", 2)]
    assert redelivered_after >= 0.29
    assert second != first
    assert stats.delayed == 0
    assert stats.dead_letters == 0


async def test_messages_can_be_consumed_again_after_the_stream_closes(
    redis_server: RedisServer, namespace: str
) -> None:
    """After a messages() stream closes the bus can consume again at once; what the first
    stream left unsettled is delivered again, what it acked is not."""
    config = bus_config(redis_server, namespace)
    async with AgentBus("worker", config=config) as bus:
        await bus.send_many([("worker", "job", i) for i in range(3)])
        with anyio.fail_after(5):
            async with bus.messages() as stream:
                first = await stream.__anext__()
                await first.ack()
                unsettled = await stream.__anext__()  # left unsettled on purpose
            again: list[Message] = []
            async with bus.messages() as stream:
                async for message in stream:
                    again.append(message)
                    await message.ack()
                    if len(again) == 2:
                        break
        await wait_for_value(lambda: pending(bus), 0, what="pending after the acks")
    assert (first.data, unsettled.data) == (0, 1)
    # The first stream had prefetched all three: both unsettled ones come back as redeliveries.
    assert [(m.data, m.deliveries) for m in again] == [(1, 2), (2, 2)]


async def test_deliveries_count_up_across_retries(
    redis_server: RedisServer, namespace: str
) -> None:
    """A failing handler is retried with the same envelope id and a growing delivery count."""
    config = bus_config(redis_server, namespace)
    seen = Recorder()
    async with AgentBus("worker", config=config, retry_base=0.05) as bus:

        @bus.handler("flaky")
        async def on_flaky(message: Message) -> str:
            seen.record(message)
            if message.deliveries < 3:
                raise RuntimeError(f"attempt {message.deliveries} fails")
            return "ok"

        mid = await bus.send("worker", "flaky", {"n": 1})
        async with serving(bus):
            messages = await seen.wait(3)
            await wait_for_value(lambda: pending(bus), 0, what="pending after the last try")
        stats = await bus.mailbox_stats()
    assert seen.deliveries == [1, 2, 3]
    assert {m.id for m in messages} == {mid}
    assert len({m.entry_id for m in messages}) == 3  # each retry is a new stream entry
    assert stats.dead_letters == 0
    assert stats.delayed == 0


async def test_poison_message_lands_in_dead_letters_and_replays(
    redis_server: RedisServer, namespace: str
) -> None:
    """A message whose handler keeps failing is dead-lettered after maxDeliveries attempts with
    its error, and replay_dead_letter delivers it again under the same envelope id."""
    config = bus_config(redis_server, namespace, maxDeliveries=3)
    seen = Recorder()
    healed = False
    async with AgentBus("worker", config=config, retry_base=0.05) as bus:

        @bus.handler("poison")
        async def explode(message: Message) -> None:
            seen.record(message)
            if not healed:
                raise ValueError(f"cannot digest {message.data['dose']}")

        mid = await bus.send("worker", "poison", {"dose": 42}, headers={"h": "1"})
        async with serving(bus):
            await seen.wait(3)
            [letter] = await dead_letters_of(bus, 1)
            stats = await bus.mailbox_stats()
            assert (stats.pending, stats.delayed, stats.dead_letters) == (0, 0, 1)

            healed = True
            assert await bus.replay_dead_letter(mid) is True
            [*_, replayed] = await seen.wait(4)
            await wait_for_value(lambda: pending(bus), 0, what="pending after the replay")
        assert await bus.dead_letters() == []
        assert await bus.replay_dead_letter(mid) is False  # gone: nothing to replay
    assert seen.deliveries == [1, 2, 3, 1]
    assert letter.reason == "error"
    assert letter.envelope_id == mid
    assert letter.type == "poison"
    assert letter.sender == "worker"
    assert letter.error_type == "ValueError"
    assert letter.error_message == "cannot digest 42"
    assert letter.traceback is not None
    assert "explode" in letter.traceback
    assert "raise ValueError" in letter.traceback
    assert letter.handler is not None
    assert letter.handler.endswith("explode")
    assert letter.attempts == 3
    assert letter.dead_at == pytest.approx(time.time(), abs=10)
    assert letter.envelope is not None
    assert letter.envelope.id == mid
    assert letter.envelope.headers == {"h": "1"}
    assert replayed.id == mid
    assert replayed.data == {"dose": 42}
    assert replayed.headers == {"h": "1"}


async def test_purge_dead_letters_empties_the_stream(
    redis_server: RedisServer, namespace: str
) -> None:
    """purge_dead_letters deletes every dead letter and says how many there were."""
    config = bus_config(redis_server, namespace)
    async with AgentBus("worker", config=config) as bus:
        await bus.send_many([("worker", "unhandled", i) for i in range(3)])
        async with serving(bus):
            await dead_letters_of(bus, 3)
        assert await bus.purge_dead_letters(older_than=3600) == 0  # all are newer than that
        assert await bus.purge_dead_letters() == 3
        assert await bus.dead_letters() == []
        assert (await bus.mailbox_stats()).dead_letters == 0


async def test_message_without_handler_is_dead_lettered(
    redis_server: RedisServer, namespace: str
) -> None:
    """A message of a type nobody handles is dead-lettered as no-handler and not retried."""
    config = bus_config(redis_server, namespace)
    seen = Recorder()
    async with AgentBus("worker", config=config) as bus:

        @bus.handler("known")
        async def on_known(message: Message) -> None:
            seen.record(message)

        mid = await bus.send("worker", "unknown", {"x": 1})
        await bus.send("worker", "known", {"x": 2})
        async with serving(bus):
            await seen.wait(1)
            [letter] = await dead_letters_of(bus, 1)
            await wait_for_value(lambda: pending(bus), 0, what="pending")
    assert letter.reason == "no-handler"
    assert letter.envelope_id == mid
    assert letter.type == "unknown"
    assert letter.envelope is not None
    assert letter.envelope.id == mid
    assert [m.data for m in seen.messages] == [{"x": 2}]


async def test_garbage_entries_are_dead_lettered_and_consumption_goes_on(
    redis_server: RedisServer, namespace: str
) -> None:
    """Entries that are not envelopes are dead-lettered as decode; later messages are handled."""
    config = bus_config(redis_server, namespace)
    seen = Recorder()
    async with AgentBus("worker", config=config) as bus:

        @bus.handler("job")
        async def on_job(message: Message) -> None:
            seen.record(message)

        mailbox = bus.keys.mailbox("worker")
        await bus.redis.xadd(mailbox, {"foo": "bar"})
        await bus.redis.xadd(mailbox, {"env": b"\xff\x00garbage"})
        mid = await bus.send("worker", "job", "valid")
        async with serving(bus):
            [message] = await seen.wait(1)
            letters = await dead_letters_of(bus, 2)
            await wait_for_value(lambda: pending(bus), 0, what="pending")
    assert message.id == mid
    assert [letter.reason for letter in letters] == ["decode", "decode"]
    assert letters[0].raw_fields == {"foo": b"bar"}
    assert letters[1].raw_fields == {"env": b"\xff\x00garbage"}
    assert all(letter.envelope is None for letter in letters)
    assert all(letter.error_type == "DecodeError" for letter in letters[1:])


async def test_expired_message_is_dead_lettered_not_handled(
    redis_server: RedisServer, namespace: str
) -> None:
    """A message whose ttl ran out before it was consumed is dead-lettered as expired."""
    config = bus_config(redis_server, namespace)
    seen = Recorder()
    async with AgentBus("sender", config=config) as sender:
        stale = await sender.send("worker", "job", "stale", ttl=0.05)
        fresh = await sender.send("worker", "job", "fresh", ttl=60)
    await anyio.sleep(0.1)  # let the first ttl run out (a deadline, not a guess)
    async with AgentBus("worker", config=config) as bus:

        @bus.handler("job")
        async def on_job(message: Message) -> None:
            seen.record(message)

        async with serving(bus):
            [message] = await seen.wait(1)
            [letter] = await dead_letters_of(bus, 1)
    assert message.id == fresh
    assert letter.reason == "expired"
    assert letter.envelope_id == stale


async def test_replaying_an_expired_message_delivers_it(
    redis_server: RedisServer, namespace: str
) -> None:
    """A replayed expired dead letter is handled (the replay drops its ttl), same envelope id."""
    config = bus_config(redis_server, namespace)
    seen = Recorder()
    async with AgentBus("worker", config=config) as bus:

        @bus.handler("job")
        async def on_job(message: Message) -> None:
            seen.record(message)

        mid = await bus.send("worker", "job", "late", ttl=0.05)
        await anyio.sleep(0.1)  # let the ttl run out (a deadline, not a guess)
        async with serving(bus):
            [letter] = await dead_letters_of(bus, 1)
            assert letter.reason == "expired"
            assert seen.messages == []
            assert await bus.replay_dead_letter(mid)
            [message] = await seen.wait(1)
            await wait_for_value(lambda: pending(bus), 0, what="pending after the replay")
        assert await bus.dead_letters() == []
    assert message.id == mid
    assert message.envelope.expires_at is None


async def test_nack_on_the_last_attempt_dead_letters(
    redis_server: RedisServer, namespace: str
) -> None:
    """With manual consumption, a message nacked maxDeliveries times goes to the dead letters."""
    config = bus_config(redis_server, namespace, maxDeliveries=2)
    async with AgentBus("worker", config=config) as bus:
        mid = await bus.send("worker", "job", 1)
        deliveries: list[int] = []
        with anyio.fail_after(5):
            async with bus.messages() as stream:
                async for message in stream:
                    deliveries.append(message.deliveries)
                    await message.nack(delay=0, error=RuntimeError("nope"))
                    await message.ack()  # only the first settle counts
                    if len(deliveries) == 2:
                        break
        [letter] = await dead_letters_of(bus, 1)
        stats = await bus.mailbox_stats()
    assert deliveries == [1, 2]
    assert letter.reason == "error"
    assert letter.envelope_id == mid
    assert letter.attempts == 2
    assert letter.error_type == "RuntimeError"
    assert letter.handler is None
    assert (stats.pending, stats.delayed) == (0, 0)


async def test_one_consumer_without_retries_sees_fifo_order(
    redis_server: RedisServer, namespace: str
) -> None:
    """One consumer receives a mailbox's messages in the order they were sent."""
    config = bus_config(redis_server, namespace)
    async with AgentBus("producer", config=config) as producer:
        ids = [await producer.send("worker", "job", i) for i in range(30)]
        ids += await producer.send_many([("worker", "job", i) for i in range(30, 60)])
    order: list[Message] = []
    async with AgentBus("worker", config=config, batch_size=7, prefetch=7) as bus:
        with anyio.fail_after(5):
            async with bus.messages() as stream:
                async for message in stream:
                    order.append(message)
                    await message.ack()
                    if len(order) == 60:
                        break
    assert [m.id for m in order] == ids
    assert [m.data for m in order] == list(range(60))


async def test_message_sent_before_the_agent_ever_started_is_delivered(
    redis_server: RedisServer, namespace: str
) -> None:
    """A mailbox keeps what was sent before its agent first started; the agent gets it."""
    config = bus_config(redis_server, namespace)
    async with AgentBus("early", config=config) as early:
        mid = await early.send("newcomer", "welcome", {"hi": True})
        registered = await early.redis.hexists(early.keys.registry, "newcomer")
    assert not registered
    seen = Recorder()
    async with AgentBus("newcomer", config=config) as bus:

        @bus.handler("welcome")
        async def on_welcome(message: Message) -> None:
            seen.record(message)

        async with serving(bus):
            [message] = await seen.wait(1)
    assert message.id == mid
    assert message.data == {"hi": True}


async def test_mailbox_stats_reflect_the_mailbox(redis_server: RedisServer, namespace: str) -> None:
    """mailbox_stats counts undelivered, pending, delayed and dead entries and pending age."""
    config = bus_config(redis_server, namespace)
    async with AgentBus("producer", config=config) as producer:
        await producer.redis.xadd(producer.keys.mailbox("worker"), {"foo": "bar"})  # garbage
        await producer.send_many([("worker", "job", i) for i in range(5)])
        before = await producer.mailbox_stats("worker")
    assert before == MailboxStats(
        depth=6, pending=0, oldest_pending_age=0.0, delayed=0, dead_letters=0, length=6
    )

    async with AgentBus("worker", config=config, batch_size=2, prefetch=2) as bus:
        stream = bus.messages()
        with anyio.fail_after(5):
            m0 = await stream.__anext__()
            m1 = await stream.__anext__()
        assert (m0.data, m1.data) == (0, 1)  # the garbage went to the dead letters
        waited_from = time.monotonic()
        stats = await bus.mailbox_stats()
        assert (stats.depth, stats.pending, stats.delayed, stats.dead_letters) == (3, 2, 0, 1)

        await anyio.sleep(0.25)  # let the pending entries age by a known amount
        aged = await bus.mailbox_stats()
        assert aged.oldest_pending_age >= 0.24
        assert aged.oldest_pending_age <= time.monotonic() - waited_from + 1.0

        await m0.nack(delay=60)  # into the delayed set for a minute
        await m1.ack()
        with anyio.fail_after(5):
            m2 = await stream.__anext__()
            m3 = await stream.__anext__()
        assert (m2.data, m3.data) == (2, 3)

        async def summary() -> tuple[int, int, int, int, int]:
            s = await bus.mailbox_stats()
            return (s.depth, s.pending, s.delayed, s.dead_letters, s.length)

        await wait_for_value(summary, (1, 2, 1, 1, 6), what="(depth, pending, delayed, dlq, len)")
        await stream.aclose()


async def test_no_handler_is_not_confused_with_a_failing_handler(
    redis_server: RedisServer, namespace: str
) -> None:
    """Dead letters say which handler failed; a no-handler dead letter names no handler."""
    config = bus_config(redis_server, namespace, maxDeliveries=1)
    async with AgentBus("worker", config=config) as bus:

        @bus.handler("fails")
        async def fails(message: Message) -> None:
            raise KeyError("missing")

        await bus.send("worker", "fails")
        await bus.send("worker", "nobody")
        async with serving(bus):
            letters = await dead_letters_of(bus, 2)
    by_reason: dict[str, DeadLetter] = {letter.reason: letter for letter in letters}
    assert set(by_reason) == {"error", "no-handler"}
    assert by_reason["error"].handler is not None
    assert by_reason["error"].error_type == "KeyError"
    assert by_reason["error"].attempts == 1
    assert by_reason["no-handler"].handler is None
    assert by_reason["no-handler"].error_type is None
