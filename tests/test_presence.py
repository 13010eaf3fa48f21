"""Presence and agent state: join/leave/update diffs in version order, exactly one leave for a
SIGKILLed agent however many watchers and sweepers run, a late watcher's snapshot, state that
reads ``offline`` once the lease is gone, and read-only use with a plain redis-py client.

Agents that die run in processes of their own (``tests/presence_process.py presence``) and are
killed with SIGKILL; Redis is a real ``redis-server``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import anyio
import pytest
import redis.asyncio
from bus_support import bus_config, wait_until
from presence_process import Processes

from agentbus import AgentBus, EncodeError, InvalidAgentIdError, InvalidNameError, Keys
from agentbus.presence import (
    PresenceDiff,
    PresenceSnapshot,
    PresenceWatch,
    get_state,
    is_online,
    online,
    watch_presence,
)
from agentbus.presence._presence import SWEEP_INTERVAL
from agentbus.testing import RedisServer

pytestmark = pytest.mark.anyio

TTL = 2.0
"""Lease TTL of the tests' instances, in seconds."""


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    """Agents in processes of their own; SIGKILLed at the end of the test."""
    started = Processes(tmp_path)
    yield started
    started.kill_all()


class Watcher:
    """Collects what one presence watch yields, with the monotonic time each item arrived."""

    def __init__(self, watch: PresenceWatch) -> None:
        self.watch = watch
        self.items: list[tuple[float, PresenceSnapshot | PresenceDiff]] = []

    async def run(self) -> None:
        async with self.watch:
            async for item in self.watch:
                self.items.append((time.monotonic(), item))

    def snapshots(self) -> list[PresenceSnapshot]:
        return [item for _, item in self.items if isinstance(item, PresenceSnapshot)]

    def diffs(self, kind: str | None = None, instance: str | None = None) -> list[PresenceDiff]:
        return [
            item for _, item in self.items
            if isinstance(item, PresenceDiff)
            and (kind is None or item.kind == kind)
            and (instance is None or item.instance == instance)
        ]  # fmt: skip

    def arrival(self, diff: PresenceDiff) -> float:
        return next(at for at, item in self.items if item is diff)

    def sees(self, agent: str, instance: str) -> bool:
        """True when the latest snapshot or a later join lists the instance."""
        listed = False
        for _, item in self.items:
            if isinstance(item, PresenceSnapshot):
                live = item.agents.get(agent)
                listed = live is not None and any(i.instance == instance for i in live.instances)
            elif item.agent == agent and item.instance == instance:
                listed = item.kind != "leave"
        return listed

    async def wait(self, check: Callable[[Watcher], object], what: str, timeout: float = 5) -> None:
        async def done() -> bool:
            return bool(check(self))

        await wait_until(done, timeout=timeout, what=what)

    def assert_consecutive_versions(self) -> None:
        """One snapshot first, then diffs whose versions go up by one."""
        assert isinstance(self.items[0][1], PresenceSnapshot)
        assert len(self.snapshots()) == 1, "a gap made the watcher start over from a snapshot"
        versions = [self.snapshots()[0].version] + [d.version for d in self.diffs()]
        assert versions == list(range(versions[0], versions[0] + len(versions)))


@asynccontextmanager
async def watching(*watches: PresenceWatch) -> AsyncIterator[list[Watcher]]:
    """Run each watch in a task, collecting into a :class:`Watcher`, until the block ends; the
    block starts once every watcher has its first snapshot."""
    watchers = [Watcher(watch) for watch in watches]
    async with anyio.create_task_group() as tg:
        for watcher in watchers:
            tg.start_soon(watcher.run)
        for watcher in watchers:
            await watcher.wait(lambda w: w.snapshots(), "the first snapshot")
        yield watchers
        tg.cancel_scope.cancel()


async def test_diffs_arrive_in_order_with_consecutive_versions(
    redis_server: RedisServer, namespace: str
) -> None:
    """Three instances joining and leaving reach a watcher as join, join, join, leave, leave,
    leave diffs, in order, each version one more than the last."""
    config = bus_config(redis_server, namespace)
    async with AgentBus("watcher", config=config) as bus, watching(bus.watch_presence()) as [w]:
        async with AsyncExitStack() as stack:
            for agent in ("a1", "a2", "a3"):
                await stack.enter_async_context(AgentBus(agent, config=config, instance_id="i"))
        await w.wait(lambda w: len(w.diffs()) >= 6, "six diffs")
        assert [(d.kind, d.agent) for d in w.diffs()] == [
            ("join", "a1"), ("join", "a2"), ("join", "a3"),
            ("leave", "a3"), ("leave", "a2"), ("leave", "a1"),
        ]  # fmt: skip
        w.assert_consecutive_versions()
        join = w.diffs("join")[0]
        assert join.info is not None
        assert (join.info.agent, join.info.instance, join.info.ttl) == ("a1", "i", TTL)


async def test_sigkilled_agent_gives_exactly_one_leave_per_watcher(
    redis_server: RedisServer, namespace: str, processes: Processes
) -> None:
    """With three watchers and three buses all sweeping, a SIGKILLed agent's instance leaves
    within TTL + 2 s, and each watcher sees exactly one leave for it."""
    config = bus_config(redis_server, namespace)
    victim = processes.start("presence", redis_server.url, namespace, instance="victim")
    async with AsyncExitStack() as stack:
        client = redis.asyncio.Redis.from_url(redis_server.url)
        stack.push_async_callback(client.aclose)
        buses = [
            await stack.enter_async_context(AgentBus(f"sweeper{i}", config=config))
            for i in range(3)
        ]
        watches = [watch_presence(client, Keys(namespace))] + [
            bus.watch_presence() for bus in buses[:2]
        ]
        watchers = await stack.enter_async_context(watching(*watches))
        await victim.wait_records("ready")
        for w in watchers:
            await w.wait(lambda w: w.sees("worker", "victim"), "the victim to be listed")

        killed_at = time.monotonic()
        victim.kill()
        for w in watchers:
            await w.wait(lambda w: w.diffs("leave", "victim"), "the leave", timeout=TTL + 3)
        delays = [w.arrival(w.diffs("leave", "victim")[0]) - killed_at for w in watchers]
        print(f"leave seen {', '.join(f'{d:.2f}' for d in delays)} s after the kill (TTL {TTL})")
        assert max(delays) <= TTL + 2

        # Give every sweeper two more chances to repeat the leave, then mark the end with a join.
        await anyio.sleep(2 * SWEEP_INTERVAL)
        await stack.enter_async_context(AgentBus("sentinel", config=config))
        for w in watchers:
            await w.wait(
                lambda w: any(d.agent == "sentinel" for d in w.diffs("join")), "the sentinel"
            )
            assert len(w.diffs("leave", "victim")) == 1
            w.assert_consecutive_versions()
        assert not await is_online(client, Keys(namespace), "worker")


async def test_late_watcher_gets_the_snapshot_then_diffs(
    redis_server: RedisServer, namespace: str
) -> None:
    """A watcher that starts after agents joined first gets a snapshot listing them at the
    current version, then the diffs that follow it."""
    config = bus_config(redis_server, namespace)
    async with AgentBus("a1", config=config) as a1, AgentBus("a2", config=config):
        await a1.update_presence(role="planner")
        current = (await a1.online()).version
        async with watching(a1.watch_presence()) as [w]:
            [snap] = w.snapshots()
            assert snap.version == current
            assert sorted(snap.agents) == ["a1", "a2"]
            assert snap.agents["a1"].instances[0].metadata == {"role": "planner"}
            async with AgentBus("a3", config=config):
                await w.wait(lambda w: w.diffs(), "a join")
            await w.wait(lambda w: len(w.diffs()) == 2, "a leave")
        assert [(d.kind, d.agent, d.version) for d in w.diffs()] == [
            ("join", "a3", current + 1), ("leave", "a3", current + 2),
        ]  # fmt: skip


async def test_graceful_close_leaves_at_once(redis_server: RedisServer, namespace: str) -> None:
    """Closing a bus removes its instance at once: the leave diff arrives and is_online turns
    false well within a second, although the lease TTL is 30 s."""
    config = bus_config(redis_server, namespace, leaseTtl=30)
    async with AgentBus("watcher", config=config) as bus, watching(bus.watch_presence()) as [w]:
        async with AgentBus("leaver", config=config) as leaver:
            await w.wait(lambda w: w.diffs("join"), "the join")
            closed_at = time.monotonic()
        assert not await bus.is_online("leaver")
        await w.wait(lambda w: w.diffs("leave"), "the leave", timeout=1)
        assert w.arrival(w.diffs("leave")[0]) - closed_at < 1.0
        assert w.diffs("leave")[0].instance == leaver.instance_id
        assert "leaver" not in (await bus.online()).agents


async def test_killed_agent_state_reads_offline_once_its_lease_expires(
    redis_server: RedisServer, namespace: str, processes: Processes
) -> None:
    """An agent that set status "busy" and was SIGKILLed reads "busy" while its lease lasts and
    "offline" within TTL + 0.5 s of the kill; its own fields are kept."""
    agent = processes.start("presence", redis_server.url, namespace, instance="v", status="busy")
    await agent.wait_records("ready")
    async with AgentBus("observer", config=bus_config(redis_server, namespace)) as bus:
        state = await bus.get_state("worker")
        assert (state.status, state.online) == ("busy", True)
        agent.kill()
        killed_at = time.monotonic()

        async def offline() -> bool:
            return (await bus.get_state("worker")).status == "offline"

        await wait_until(offline, timeout=TTL + 1, what="the killed agent to read offline")
        print(f"state read offline {time.monotonic() - killed_at:.2f} s after the kill")
        assert time.monotonic() - killed_at <= TTL + 0.5
        state = await bus.get_state("worker")
        assert state.online is False
        assert state.fields == {"status": "busy"}
        assert state.updated_at is not None
        assert not await bus.is_online("worker")


async def test_set_state_merges_fields_and_publishes_an_agent_state_event(
    redis_server: RedisServer, namespace: str
) -> None:
    """set_state() merges fields into the agent's state, stamps updated_at and publishes an
    "agent.state" event carrying the agent, the fields set and updated_at."""
    config = bus_config(redis_server, namespace)
    async with AgentBus("planner", config=config) as bus, AgentBus("ui", config=config) as ui:
        async with ui.subscribe("agent.state") as events:
            first = await bus.set_state(status="busy", task="t-1")
            second = await bus.set_state(progress=0.5)
            with anyio.fail_after(5):
                got = [await events.__anext__(), await events.__anext__()]
        assert [(e.topic, e.sender) for e in got] == [("agent.state", "planner")] * 2
        assert got[0].data == {
            "agent": "planner", "fields": {"status": "busy", "task": "t-1"}, "updated_at": first,
        }  # fmt: skip
        assert got[1].data["fields"] == {"progress": 0.5}
        state = await ui.get_state("planner")
        assert state.fields == {"status": "busy", "task": "t-1", "progress": 0.5}
        assert (state.status, state.online, state.updated_at) == ("busy", True, second)
        assert (await ui.get_state("nobody")).status == "offline"


async def test_update_presence_gives_an_update_diff(
    redis_server: RedisServer, namespace: str
) -> None:
    """update_presence() replaces the instance's metadata, shows in online() and reaches
    watchers as an "update" diff."""
    config = bus_config(redis_server, namespace)
    async with AgentBus("planner", config=config) as bus, watching(bus.watch_presence()) as [w]:
        await bus.update_presence(role="lead", load=3)  # type: ignore[arg-type]
        await w.wait(lambda w: w.diffs("update"), "the update")
        [diff] = w.diffs()
        assert (diff.kind, diff.agent, diff.instance) == ("update", "planner", bus.instance_id)
        assert diff.info is not None
        assert diff.info.metadata == {"role": "lead", "load": "3"}
        [instance] = (await bus.online()).agents["planner"].instances
        assert instance.metadata == {"role": "lead", "load": "3"}
        w.assert_consecutive_versions()


@pytest.mark.parametrize("decode_responses", [False, True], ids=["bytes", "str"])
async def test_read_only_use_with_a_plain_redis_client(
    redis_server: RedisServer, namespace: str, decode_responses: bool
) -> None:
    """online(), is_online(), get_state() and watch_presence() work with a plain redis.asyncio
    client (decoding responses or not) and Keys(namespace), without an AgentBus."""
    config = bus_config(redis_server, namespace)
    keys = Keys(namespace)
    async with (
        redis.asyncio.Redis.from_url(redis_server.url, decode_responses=decode_responses) as client,
        AgentBus("a1", config=config, metadata={"role": "x"}) as a1,
        AgentBus("a2", config=config),
    ):
        await a1.set_state(status="busy")
        snap = await online(client, keys)
        assert sorted(snap.agents) == ["a1", "a2"]
        assert snap.agents["a1"].instances[0].metadata == {"role": "x"}
        assert await is_online(client, keys, "a2")
        assert not await is_online(client, keys, "a3")
        state = await get_state(client, keys, "a1")
        assert (state.status, state.fields) == ("busy", {"status": "busy"})
        async with watching(watch_presence(client, keys)) as [w]:
            assert w.snapshots()[0].version == snap.version
            async with AgentBus("a3", config=config):
                await w.wait(lambda w: w.diffs("join"), "a join")
        assert w.diffs()[0].agent == "a3"


async def test_bad_state_input_raises_clear_errors(
    redis_server: RedisServer, namespace: str
) -> None:
    """set_state() with no fields or the reserved updated_at raises ValueError, an
    unserialisable value EncodeError, a bad field name InvalidNameError; nothing is written."""
    async with AgentBus("planner", config=bus_config(redis_server, namespace)) as bus:
        with pytest.raises(ValueError, match="at least one field"):
            await bus.set_state()
        with pytest.raises(EncodeError, match="'task'"):
            await bus.set_state(status="busy", task=object())
        with pytest.raises(ValueError, match="updated_at"):
            await bus.set_state(updated_at=1.0)
        with pytest.raises(InvalidNameError):
            await bus.set_state(**{"two words": 1})
        with pytest.raises(InvalidAgentIdError):
            await bus.get_state("Not An Id")
        state = await bus.get_state()
        assert (state.fields, state.updated_at, state.status) == ({}, None, "idle")
