"""Faults with real processes: SIGKILLed consumers, slow handlers, Redis restarts and crashes,
mailboxes trimmed under pending entries.

Consumers that die run in processes of their own (``tests/agent_process.py``) and are killed with
SIGKILL; Redis is a real ``redis-server`` (a private one where a test stops or kills it). Nothing is
mocked. Measured numbers are printed (``pytest -s``) and asserted against the documented bounds.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from agentbus import AgentBus, BackendError, Config, Message, ReceivedEvent, load_config
from agentbus.testing import RedisServer

pytestmark = pytest.mark.anyio

TTL = 2.0
"""Lease TTL of the tests' instances, in seconds."""

POLL = 0.02
"""How often a condition is re-checked while waiting on a deadline."""

OUTAGE = 1.0
"""How long Redis stays down in the reconnect test, in seconds."""

AGENT_SCRIPT = Path(__file__).with_name("agent_process.py")


def bus_config(server: RedisServer, namespace: str, *, ttl: float = TTL) -> Config:
    return load_config(
        redis_url=server.url, overrides={"bus": {"namespace": namespace, "leaseTtl": ttl}}
    )


def fast_bus(agent: str, config: Config, **options: Any) -> AgentBus:
    """A bus that reclaims and retries quickly and never trims by itself."""
    options = {"retry_base": 0.05, "reclaim_interval": 0.2, "trim_interval": 3600} | options
    return AgentBus(agent, config=config, **options)


def as_text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def wait_until(
    check: Callable[[], Awaitable[Any] | Any], *, timeout: float, what: str
) -> Any:
    """Re-run ``check`` (sync or async) until it returns something truthy, or fail."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await anyio.sleep(POLL)


async def send_until_written(bus: AgentBus, to: str, data: dict[str, Any], key: str) -> str:
    """``send()`` with the retry the docs prescribe: on BackendError, the same idempotency key."""
    while True:
        try:
            return await bus.send(to, "job", data, idempotency_key=key)
        except BackendError:
            await anyio.sleep(0.05)


class AgentProcess:
    """A running ``tests/agent_process.py`` and the records it wrote."""

    def __init__(self, process: subprocess.Popen[bytes], records: Path, log: Path) -> None:
        self.process = process
        self.records_path = records
        self.log_path = log

    def records(self, event: str) -> list[dict[str, Any]]:
        if not self.records_path.exists():
            return []
        # Only lines ended by a newline are complete (one may be half-written right now).
        lines = self.records_path.read_text("utf-8").split("\n")[:-1]
        parsed = [json.loads(line) for line in lines]
        return [record for record in parsed if record["event"] == event]

    async def wait_records(
        self, event: str, count: int, *, timeout: float = 10.0
    ) -> list[dict[str, Any]]:
        def enough() -> list[dict[str, Any]]:
            if self.process.poll() is not None:
                raise AssertionError(f"the agent process exited:\n{self.log_tail()}")
            found = self.records(event)
            return found if len(found) >= count else []

        found: list[dict[str, Any]] = await wait_until(
            enough, timeout=timeout, what=f"{count} {event!r} record(s) of {self.log_path.stem}"
        )
        return found

    def kill(self) -> float:
        """SIGKILL the process; returns ``time.monotonic()`` at the kill."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        self.process.wait()
        return killed_at

    def log_tail(self) -> str:
        return self.log_path.read_text("utf-8", "replace")[-2000:]


SpawnAgent = Callable[..., AgentProcess]


@pytest.fixture
def spawn_agent(tmp_path: Path) -> Iterator[SpawnAgent]:
    """Start consumer agents in processes of their own; SIGKILLed at the end of the test."""
    started: list[AgentProcess] = []

    def spawn(
        server: RedisServer,
        namespace: str,
        *,
        instance: str,
        mode: str = "work",
        lease_ttl: float = TTL,
        slow: float = 3.0,
        effects_prefix: str = "effects:",
    ) -> AgentProcess:
        records, log = tmp_path / f"{instance}.jsonl", tmp_path / f"{instance}.log"
        command = [
            sys.executable, str(AGENT_SCRIPT), "--url", server.url, "--namespace", namespace,
            "--agent", "worker", "--instance", instance, "--records", str(records),
            "--mode", mode, "--lease-ttl", str(lease_ttl), "--slow", str(slow),
            "--effects-prefix", effects_prefix,
        ]  # fmt: skip
        with log.open("wb") as log_file:
            process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT
            )
        agent = AgentProcess(process, records, log)
        started.append(agent)
        return agent

    yield spawn
    for agent in started:
        agent.kill()


async def drained(bus: AgentBus) -> bool:
    """Nothing undelivered, pending or waiting for a retry in ``bus``'s own mailbox."""
    stats = await bus.mailbox_stats()
    return stats.depth == 0 and stats.pending == 0 and stats.delayed == 0


# ---- a consumer process dies ------------------------------------------------------------------


async def test_sigkilled_instance_pending_messages_are_handled_by_live_instances(
    redis_server: RedisServer, namespace: str, spawn_agent: SpawnAgent
) -> None:
    """Twenty entries held un-acked by a SIGKILLed instance are each handled once by the two live
    instances of the same agent within lease TTL + 1 s; an effect repeats only where the dead
    instance had applied it before dying, and effect keys stop any later repeat."""
    config = bus_config(redis_server, namespace)
    prefix = f"{namespace}:test:effects:"
    victim = spawn_agent(redis_server, namespace, instance="victim", effects_prefix=prefix)
    await victim.wait_records("ready", 1)
    # Odd tasks: the victim applies the effect, then hangs (it dies inside the crash window the
    # README names). Even tasks: it hangs before the effect.
    modes = {f"task-{i}": "effect-then-hold" if i % 2 else "hold" for i in range(20)}
    handled: list[tuple[str, str, int, float]] = []  # id, instance, deliveries, monotonic time

    def serve_jobs(bus: AgentBus) -> None:
        @bus.handler("job", effect_key=lambda m: str(m.data["task"]))
        async def job(message: Message) -> None:
            await bus.redis.incr(prefix + message.data["task"])
            handled.append((message.id, bus.instance_id, message.deliveries, time.monotonic()))

    async with (
        AgentBus("producer", config=config) as producer,
        fast_bus("worker", config, instance_id="survivor-a") as survivor_a,
        fast_bus("worker", config, instance_id="survivor-b") as survivor_b,
    ):
        serve_jobs(survivor_a)
        serve_jobs(survivor_b)
        ids = {}
        for task, mode in modes.items():
            ids[await producer.send("worker", "job", {"task": task, "mode": mode})] = task
        started = await victim.wait_records("started", 20)
        await victim.wait_records("effect", 10)

        async with anyio.create_task_group() as tg:
            tg.start_soon(survivor_a.serve)
            tg.start_soon(survivor_b.serve)
            killed_at = victim.kill()
            await wait_until(
                lambda: len(handled) >= 20, timeout=TTL + 5, what="the 20 reclaimed messages"
            )
            first = min(t for *_, t in handled) - killed_at
            last = max(t for *_, t in handled) - killed_at

            # The same tasks again (a producer retrying without an idempotency key): their
            # effect keys were stored with the reclaimed messages' acks, so nothing runs.
            for task in modes:
                await producer.send("worker", "job", {"task": task})
            await wait_until(lambda: drained(survivor_a), timeout=5, what="the resent tasks")
            tg.cancel_scope.cancel()

        redis = producer.redis
        counts = {task: int(await redis.get(prefix + task) or 0) for task in modes}
        keys_stored = [await redis.exists(producer.keys.effect("worker", t)) for t in modes]

    by_instance = Counter(instance for _, instance, _, _ in handled)
    print(
        f"\nreclaim after SIGKILL (TTL {TTL} s): first {first:.2f} s, all 20 {last:.2f} s, "
        f"split {dict(by_instance)}"
    )
    assert sorted(r["id"] for r in started) == sorted(ids)
    assert all(r["deliveries"] == 1 and r["instance"] == "victim" for r in started)
    handled_ids = [message_id for message_id, *_ in handled]
    assert sorted(handled_ids) == sorted(ids), "each held message is handled exactly once"
    assert all(deliveries == 2 for _, _, deliveries, _ in handled)
    assert last <= TTL + 1.0, f"reclaim took {last:.2f} s after the kill"
    # The victim refreshed its lease every TTL/3, so it outlived the kill by >= 2/3 TTL; nothing
    # may be taken before it expired.
    assert first >= TTL * 2 / 3 - 0.2, f"reclaimed {first:.2f} s after the kill: lease alive"
    assert counts == {task: 2 if mode == "effect-then-hold" else 1 for task, mode in modes.items()}
    assert all(keys_stored)


async def test_slow_handler_on_a_live_instance_runs_exactly_once(
    redis_server: RedisServer, namespace: str, spawn_agent: SpawnAgent
) -> None:
    """A handler that runs 3.5 lease TTLs on a live instance is never reclaimed by another live
    instance reclaiming every 0.1 s (it runs once); the same reclaimer takes the instance's other
    entry as soon as the instance is SIGKILLed."""
    ttl, slow = 1.0, 3.5
    slowpoke = spawn_agent(redis_server, namespace, instance="slowpoke", lease_ttl=ttl, slow=slow)
    await slowpoke.wait_records("ready", 1)
    config = bus_config(redis_server, namespace, ttl=ttl)
    seen_by_watcher: list[tuple[str, float]] = []

    async with fast_bus("worker", config, instance_id="watcher", reclaim_interval=0.1) as watcher:

        @watcher.handler("job")
        async def job(message: Message) -> None:
            seen_by_watcher.append((message.id, time.monotonic()))

        slow_id = await watcher.send("worker", "job", {"task": "slow", "mode": "slow"})
        held_id = await watcher.send("worker", "job", {"task": "held", "mode": "hold"})
        await slowpoke.wait_records("started", 2)

        async with anyio.create_task_group() as tg:
            tg.start_soon(watcher.serve)

            async def slow_entry_idle_for_two_ttls() -> list[dict[str, Any]]:
                rows = await watcher.redis.xpending_range(
                    watcher.keys.mailbox("worker"), "workers", "-", "+", 10
                )
                return [r for r in rows if int(r["time_since_delivered"]) >= 2 * ttl * 1000]

            idle = await wait_until(
                slow_entry_idle_for_two_ttls, timeout=slow, what="the slow entry to idle 2 TTLs"
            )
            await slowpoke.wait_records("done", 1, timeout=slow + 5)

            async def only_the_held_entry_pending() -> bool:
                rows = await watcher.redis.xpending_range(
                    watcher.keys.mailbox("worker"), "workers", "-", "+", 10
                )
                return len(rows) == 1  # the slow entry's ack is written

            await wait_until(only_the_held_entry_pending, timeout=5, what="the slow entry acked")
            killed_at = slowpoke.kill()
            await wait_until(
                lambda: len(seen_by_watcher) >= 1, timeout=ttl + 3, what="the held entry"
            )
            reclaimed_after = seen_by_watcher[0][1] - killed_at
            await wait_until(lambda: drained(watcher), timeout=5, what="an empty mailbox")
            tg.cancel_scope.cancel()

    print(f"\nslow handler: {slow} s at TTL {ttl} s; held entry reclaimed {reclaimed_after:.2f} s")
    # While the slow handler ran, both entries sat idle far past XCLAIM's min idle (TTL/3), still
    # owned by the live instance and delivered once.
    assert {(r["consumer"], r["times_delivered"]) for r in idle} == {(b"slowpoke", 1)}
    started = [r["id"] for r in slowpoke.records("started")]
    assert sorted(started) == sorted([slow_id, held_id])
    assert [r["id"] for r in slowpoke.records("done")] == [slow_id]
    assert [message_id for message_id, _ in seen_by_watcher] == [held_id]
    assert reclaimed_after <= ttl + 1.0


async def test_live_instance_keeps_its_work_after_a_redis_outage_longer_than_its_lease(
    redis_server_factory: Callable[..., RedisServer], namespace: str, spawn_agent: SpawnAgent
) -> None:
    """After a Redis outage longer than the lease TTL, a reclaimer that is back before a live
    instance has renewed its lease does not take that instance's in-progress entry: the slow
    handler runs once.

    SIGSTOP holds the live instance across the outage only to make it reconnect after the
    reclaimer every time; left to chance, the reclaimer won that race in about 1 run of 40.
    """
    ttl = 1.0
    server = redis_server_factory()
    slowpoke = spawn_agent(server, namespace, instance="slowpoke", lease_ttl=ttl, slow=6.0)
    await slowpoke.wait_records("ready", 1)
    config = bus_config(server, namespace, ttl=ttl)
    seen_by_watcher: list[str] = []

    async with fast_bus("worker", config, instance_id="watcher", reclaim_interval=0.1) as watcher:

        @watcher.handler("job")
        async def job(message: Message) -> None:
            seen_by_watcher.append(message.id)

        slow_id = await watcher.send("worker", "job", {"task": "slow", "mode": "slow"})
        await slowpoke.wait_records("started", 1)

        async with anyio.create_task_group() as tg:
            tg.start_soon(watcher.serve)
            slowpoke.process.send_signal(signal.SIGSTOP)
            server.kill()
            await anyio.sleep(1.5 * ttl)  # the scenario: the outage outlasts every lease
            await anyio.to_thread.run_sync(lambda: server.restart(graceful=False))
            stats = await watcher.redis.info("commandstats")
            pings = stats.get("cmdstat_ping", {}).get("calls", 0)  # the harness's readiness PING

            async def reclaimer_is_back() -> bool:
                # Only the watcher's reclaimer sends PING or XPENDING here (the slowpoke is
                # stopped, and the watcher holds nothing of its own).
                stats = await watcher.redis.info("commandstats")
                ping_calls = stats.get("cmdstat_ping", {}).get("calls", 0)
                return ping_calls > pings or "cmdstat_xpending" in stats

            await wait_until(reclaimer_is_back, timeout=5, what="the reclaimer to reconnect")
            slowpoke.process.send_signal(signal.SIGCONT)
            await slowpoke.wait_records("done", 1, timeout=10)
            await wait_until(lambda: drained(watcher), timeout=5, what="the slow entry acked")
            tg.cancel_scope.cancel()

    assert seen_by_watcher == [], "the live instance's entry was handled a second time"
    assert [r["id"] for r in slowpoke.records("started")] == [slow_id]
    assert [r["id"] for r in slowpoke.records("done")] == [slow_id]


# ---- Redis restarts and crashes -----------------------------------------------------------------


async def publish_until_received(bus: AgentBus, topic: str, *, timeout: float) -> None:
    """Publish ``topic`` until Redis says a subscriber got it (pub/sub keeps nothing)."""

    async def delivered() -> bool:
        try:
            return await bus.publish(topic, {"topic": topic}) > 0
        except BackendError:
            return False

    await wait_until(delivered, timeout=timeout, what=f"a subscriber for {topic!r}")


async def test_graceful_redis_restart_mid_stream_loses_and_repeats_nothing(
    redis_server_factory: Callable[..., RedisServer], namespace: str
) -> None:
    """A graceful Redis restart while a producer sends and a consumer consumes: every sent
    message is handled, none twice, and a subscription gets events published after it."""
    server = redis_server_factory()
    config = bus_config(server, namespace)
    total = 300
    sent: list[str] = []
    handled: list[str] = []
    events: list[ReceivedEvent] = []
    failed_sends = 0

    async with (
        AgentBus("producer", config=config) as producer,
        fast_bus("worker", config) as worker,
    ):

        @worker.handler("job")
        async def job(message: Message) -> None:
            handled.append(message.id)

        async def produce() -> None:
            nonlocal failed_sends
            for i in range(total):
                key = f"job-{i}"
                while True:
                    try:
                        sent.append(
                            await producer.send("worker", "job", {"i": i}, idempotency_key=key)
                        )
                        break
                    except BackendError:
                        failed_sends += 1
                        await anyio.sleep(0.05)
                await anyio.sleep(0.004)  # a steady stream, so the restart lands in its middle

        async with worker.subscribe("t.*") as subscription, anyio.create_task_group() as tg:

            async def listen() -> None:
                async for event in subscription:
                    events.append(event)

            tg.start_soon(worker.serve)
            tg.start_soon(listen)
            await publish_until_received(producer, "t.before", timeout=5)
            tg.start_soon(produce)
            await wait_until(lambda: len(handled) >= total // 3, timeout=10, what="a third")
            await anyio.to_thread.run_sync(lambda: server.restart(graceful=True))
            handled_at_restart = len(handled)
            await publish_until_received(producer, "t.after", timeout=10)
            await wait_until(
                lambda: any(e.topic == "t.after" for e in events), timeout=5, what="t.after"
            )
            await wait_until(
                lambda: len(sent) == total and set(sent) <= set(handled),
                timeout=20,
                what="every sent message handled",
            )
            await wait_until(lambda: drained(worker), timeout=5, what="every ack written")
            tg.cancel_scope.cancel()

    repeated = {message_id: n for message_id, n in Counter(handled).items() if n > 1}
    print(
        f"\ngraceful restart after {handled_at_restart} of {total} handled: {failed_sends} "
        f"failed sends retried, {len(repeated)} repeated, subscription reconnects "
        f"{subscription.reconnects}"
    )
    assert failed_sends > 0, "the restart did not land in the middle of the stream"
    assert len(set(sent)) == total
    assert set(handled) == set(sent), "nothing sent is lost"
    assert repeated == {}, "nothing acked is delivered again"
    assert subscription.reconnects >= 1


async def test_sigkilled_redis_loses_at_most_the_last_second(
    redis_server_factory: Callable[..., RedisServer], namespace: str
) -> None:
    """With AOF ``everysec``, what survives a SIGKILLed Redis is a prefix of the acknowledged
    sends, and any acknowledged send lost was sent within 1.5 s of the kill.

    Killing only the process usually loses nothing: the AOF was ``write()``-n before the reply,
    so the kernel still holds it; the second of ``everysec`` is at risk on a machine crash (and
    when a slow fsync makes Redis postpone the write). The test bounds the loss either way.
    """
    server = redis_server_factory()
    config = bus_config(server, namespace)
    acked: list[tuple[int, float]] = []  # sequence number, wall time when it was sent

    async with AgentBus("writer", config=config) as writer:

        async def write() -> None:
            for i in range(1_000_000):
                sent_at = time.time()
                try:
                    await writer.send("sink", "seq", {"i": i, "t": sent_at})
                except BackendError:
                    return  # the kill
                acked.append((i, sent_at))
                await anyio.sleep(0.001)

        async with anyio.create_task_group() as tg:
            tg.start_soon(write)
            await wait_until(
                lambda: acked and acked[-1][1] - acked[0][1] >= 2.0, timeout=10, what="2 s"
            )
            killed_at = time.time()
            server.kill()
        await anyio.to_thread.run_sync(lambda: server.restart(graceful=False))

    async with fast_bus("sink", config) as sink:
        length = int(await sink.redis.xlen(sink.keys.mailbox("sink")))
        kept: list[int] = []
        async with sink.messages() as stream:
            with anyio.fail_after(10):
                async for message in stream:
                    kept.append(message.data["i"])
                    await message.ack()
                    if len(kept) == length:
                        break

    lost = [(i, t) for i, t in acked if i >= len(kept)]
    window = killed_at - min(t for _, t in lost) if lost else 0.0
    print(f"\nSIGKILL after {len(acked)} acknowledged sends: {len(lost)} lost ({window:.3f} s)")
    assert sorted(kept) == list(range(len(kept))), "what survives is a prefix, without gaps"
    assert len(kept) <= len(acked) + 1  # + the send in flight at the kill, maybe
    assert window <= 1.5, f"lost acknowledged sends from {window:.2f} s before the kill"


async def test_idle_consumer_reconnects_after_redis_is_killed(
    redis_server_factory: Callable[..., RedisServer], namespace: str
) -> None:
    """A consumer blocked in its read when Redis is SIGKILLed and stays down for a second keeps
    reconnecting (with backoff capped at 2 s) and handles messages sent once Redis is back."""
    server = redis_server_factory()
    config = bus_config(server, namespace)
    handled: list[tuple[str, float]] = []

    async with (
        AgentBus("producer", config=config) as producer,
        fast_bus("worker", config) as worker,
    ):

        @worker.handler("job")
        async def job(message: Message) -> None:
            handled.append((message.id, time.monotonic()))

        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.serve)
            first = await send_until_written(producer, "worker", {"n": 1}, "first")
            await wait_until(lambda: len(handled) == 1, timeout=5, what="the first message")

            async def blocked_in_read() -> bool:
                clients = await producer.redis.client_list()
                return any(c["cmd"] == "xreadgroup" and "b" in c["flags"] for c in clients)

            await wait_until(blocked_in_read, timeout=5, what="the consumer blocked in XREADGROUP")
            server.kill()
            await anyio.sleep(OUTAGE)  # the scenario: Redis stays down this long
            await anyio.to_thread.run_sync(lambda: server.restart(graceful=False))
            restarted_at = time.monotonic()
            second = await send_until_written(producer, "worker", {"n": 2}, "second")
            await wait_until(lambda: len(handled) == 2, timeout=10, what="the second message")
            await wait_until(blocked_in_read, timeout=5, what="the consumer blocked again")
            tg.cancel_scope.cancel()

    latency = handled[1][1] - restarted_at
    print(f"\nafter a {OUTAGE} s outage the consumer handled a message {latency:.2f} s after")
    assert [message_id for message_id, _ in handled] == [first, second]
    assert latency < 2.0 + 1.0  # the reconnect backoff's cap + slack


# ---- retention under pending entries -------------------------------------------------------------


async def test_trim_mailbox_deletes_only_acked_entries(
    redis_server: RedisServer, namespace: str
) -> None:
    """``trim_mailbox()`` on a mailbox holding acked, pending and undelivered entries deletes
    only the acked ones; the others are all handled afterwards."""
    config = bus_config(redis_server, namespace)
    async with AgentBus("producer", config=config) as producer:
        mailbox = producer.keys.mailbox("worker")
        acked = [await producer.send("worker", "job", {"n": n}) for n in range(10)]
        holder = fast_bus("worker", config, instance_id="holder", batch_size=10)
        async with holder, holder.messages() as stream:
            for _ in acked:
                await (await anext(stream)).ack()
            await wait_until(lambda: drained(holder), timeout=5, what="acks written")
            pending = [await producer.send("worker", "job", {"n": n}) for n in range(10, 20)]
            held = [(await anext(stream)).id for _ in pending]
        # The holder is gone (lease released), leaving its ten entries pending.
        undelivered = [await producer.send("worker", "job", {"n": n}) for n in range(20, 30)]
        assert held == pending
        assert await producer.redis.xlen(mailbox) == 30

        handled: list[str] = []
        async with fast_bus("worker", config, instance_id="trimmer") as trimmer:
            deleted = await trimmer.trim_mailbox()
            length_after = await producer.redis.xlen(mailbox)

            @trimmer.handler("job")
            async def job(message: Message) -> None:
                handled.append(message.id)

            async with anyio.create_task_group() as tg:
                tg.start_soon(trimmer.serve)
                await wait_until(lambda: len(handled) >= 20, timeout=TTL + 5, what="20 handled")
                await wait_until(lambda: drained(trimmer), timeout=5, what="an empty mailbox")
                tg.cancel_scope.cancel()
            assert await trimmer.dead_letters() == []

    assert (deleted, length_after) == (10, 20)
    assert sorted(handled) == sorted(pending + undelivered)


async def test_hand_trimmed_pending_entries_of_a_dead_instance_are_dead_lettered(
    redis_server: RedisServer, namespace: str, spawn_agent: SpawnAgent
) -> None:
    """Pending entries of a SIGKILLed instance deleted by a hand-run ``XTRIM MAXLEN 0`` are
    dead-lettered as ``trimmed`` by a live instance's reclaim, not lost silently."""
    config = bus_config(redis_server, namespace)
    victim = spawn_agent(redis_server, namespace, instance="victim", mode="hold")
    await victim.wait_records("ready", 1)
    async with fast_bus("worker", config, instance_id="rescuer") as rescuer:
        mailbox = rescuer.keys.mailbox("worker")
        for n in range(5):
            await rescuer.send("worker", "job", {"task": f"t{n}"})
        await victim.wait_records("started", 5)
        rows = await rescuer.redis.xpending_range(mailbox, "workers", "-", "+", 10)
        entry_ids = sorted(as_text(r["message_id"]) for r in rows)
        victim.kill()
        assert await rescuer.redis.xtrim(mailbox, maxlen=0, approximate=False) == 5

        stream = rescuer.messages()  # starts consuming, hence reclaiming
        letters = await wait_until(
            rescuer.dead_letters, timeout=TTL + 5, what="dead letters of the trimmed entries"
        )
        await stream.aclose()
        pending_after = (await rescuer.mailbox_stats()).pending

    assert sorted(str(letter.mailbox_entry_id) for letter in letters) == entry_ids
    assert {letter.reason for letter in letters} == {"trimmed"}
    assert pending_after == 0


async def test_own_pending_entries_trimmed_while_away_are_dead_lettered_at_start(
    redis_server: RedisServer, namespace: str
) -> None:
    """An instance that comes back (same instance id) to pending entries someone deleted with
    ``XTRIM MAXLEN 0`` dead-letters them as ``trimmed`` when it re-reads its pending list."""
    config = bus_config(redis_server, namespace)
    async with fast_bus("worker", config, instance_id="phoenix") as first:
        mailbox = first.keys.mailbox("worker")
        for n in range(3):
            await first.send("worker", "job", {"n": n})
        async with first.messages() as stream:
            for _ in range(3):
                await anext(stream)  # taken, never acked
        rows = await first.redis.xpending_range(mailbox, "workers", "-", "+", 10)
        entry_ids = sorted(as_text(r["message_id"]) for r in rows)
        assert await first.redis.xtrim(mailbox, maxlen=0, approximate=False) == 3

    async with fast_bus("worker", config, instance_id="phoenix") as again:
        stream = again.messages()
        letters = await wait_until(again.dead_letters, timeout=5, what="trimmed dead letters")
        await stream.aclose()
        pending_after = (await again.mailbox_stats()).pending

    assert len(entry_ids) == 3
    assert sorted(str(letter.mailbox_entry_id) for letter in letters) == entry_ids
    assert {letter.reason for letter in letters} == {"trimmed"}
    assert pending_after == 0
