"""``snapshot()``: what the dashboard shows — every registered agent with presence, state,
mailbox counters, held locks and last heartbeats, paged — through a bus or a plain client."""

from __future__ import annotations

from functools import partial

import anyio
import pytest
import redis.asyncio
from bus_support import bus_config, wait_until

from agentbus import AgentBus, Keys
from agentbus.presence import HeartbeatRun, MailboxCounts, snapshot
from agentbus.testing import RedisServer

pytestmark = pytest.mark.anyio


async def beat(run: HeartbeatRun) -> None:
    return None


async def run_one_heartbeat(bus: AgentBus, *, family: bool = False) -> HeartbeatRun:
    """Run ``beat`` as heartbeat "beat" until one run is recorded; returns that run."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(partial(bus.run_heartbeat, beat, every=0.2, name="beat", family=family))
        last = await wait_until(
            lambda: bus.last_heartbeat("beat", family=family), what="a heartbeat run"
        )
        tg.cancel_scope.cancel()
    assert last is not None
    return last


async def test_snapshot_shows_presence_state_mailbox_locks_and_heartbeats(
    redis_server: RedisServer, namespace: str
) -> None:
    """A snapshot lists every agent in the registry, online or not, with its presence, state,
    mailbox counters (as mailbox_stats() counts them), the locks it holds (not released ones)
    and its last heartbeat; family-wide locks and heartbeats are listed apart."""
    config = bus_config(redis_server, namespace)
    async with AgentBus("gamma", config=config):
        pass  # registered, then gone
    async with (
        AgentBus("alpha", config=config, metadata={"role": "planner"}) as alpha,
        AgentBus("beta", config=config) as beta,
    ):
        await alpha.set_state(status="busy", task="t-1")
        for i in range(3):
            await beta.send("alpha", "job", {"i": i})
        mailbox = alpha.keys.mailbox("alpha")
        await alpha.redis.xgroup_create(mailbox, "workers", id="0")
        await alpha.redis.xreadgroup("workers", "c1", {mailbox: ">"}, count=1)  # 1 pending
        alpha_beat = await run_one_heartbeat(alpha)
        family_beat = await run_one_heartbeat(beta, family=True)
        async with alpha.lock("released", ttl=5):
            pass
        async with alpha.lock("nightly", ttl=5) as held, beta.lock("deploy", ttl=5, family=True):
            snap = await beta.snapshot()
        stats = await alpha.mailbox_stats()

    assert snap.total_agents == 3
    assert snap.next_cursor is None
    assert [a.agent for a in snap.agents] == ["alpha", "beta", "gamma"]
    alpha_snap, beta_snap, gamma_snap = snap.agents

    assert alpha_snap.online
    assert alpha_snap.presence is not None
    [instance] = alpha_snap.presence.instances
    assert (instance.instance, instance.metadata) == (alpha.instance_id, {"role": "planner"})
    assert alpha_snap.state.status == "busy"
    assert alpha_snap.state.fields == {"status": "busy", "task": "t-1"}
    assert alpha_snap.mailbox == MailboxCounts(depth=2, pending=1, delayed=0, dead_letters=0)
    assert (stats.depth, stats.pending) == (2, 1)
    [lock] = alpha_snap.locks
    assert (lock.name, lock.fencing_token) == ("nightly", held.fencing_token)
    assert lock.holder == f"alpha/{alpha.instance_id}"
    assert lock.acquired_at < lock.expires_at <= lock.acquired_at + 5.5
    [alpha_run] = alpha_snap.heartbeats
    assert (alpha_run.window, alpha_run.outcome) == (alpha_beat.window, "ok")

    assert beta_snap.online
    assert beta_snap.state.status == "idle"
    assert beta_snap.locks == []
    assert beta_snap.heartbeats == []
    assert [(lock.name, lock.holder) for lock in snap.family_locks] == [
        ("deploy", f"beta/{beta.instance_id}")
    ]
    assert [run.runner for run in snap.family_heartbeats] == [family_beat.runner]

    assert not gamma_snap.online
    assert gamma_snap.presence is None
    assert gamma_snap.last_seen is not None
    assert gamma_snap.state.status == "offline"
    assert gamma_snap.mailbox == MailboxCounts(depth=0, pending=0, delayed=0, dead_letters=0)


async def test_snapshot_pages_cover_every_agent_exactly_once(
    redis_server: RedisServer, namespace: str
) -> None:
    """Paging with limit and next_cursor visits every registered agent once, in id order, and
    the last page has no cursor; a limit outside 1..5000 raises ValueError."""
    config = bus_config(redis_server, namespace)
    agents = sorted(f"agent-{i:02d}" for i in range(23))
    for agent in agents:
        async with AgentBus(agent, config=config):
            pass
    async with AgentBus("agent-07", config=config) as bus:
        seen: list[str] = []
        cursor: str | None = None
        pages = 0
        while True:
            page = await bus.snapshot(cursor=cursor, limit=5)
            pages += 1
            assert page.total_agents == len(agents)
            seen += [a.agent for a in page.agents]
            cursor = page.next_cursor
            if cursor is None:
                break
        assert seen == agents
        assert pages == 5
        assert [a.agent for a in (await bus.snapshot()).agents if a.online] == ["agent-07"]
        for limit in (0, -1, 5001):
            with pytest.raises(ValueError, match="limit"):
                await bus.snapshot(limit=limit)


@pytest.mark.parametrize("decode_responses", [False, True], ids=["bytes", "str"])
async def test_snapshot_with_a_plain_redis_client(
    redis_server: RedisServer, namespace: str, decode_responses: bool
) -> None:
    """snapshot() works with a plain redis.asyncio client and Keys(namespace), without an
    AgentBus, whether the client decodes responses or not."""
    config = bus_config(redis_server, namespace)
    async with AgentBus("alpha", config=config) as alpha:
        await alpha.set_state(status="busy")
        async with alpha.lock("nightly", ttl=5):
            client = redis.asyncio.Redis.from_url(
                redis_server.url, decode_responses=decode_responses
            )
            async with client:
                snap = await snapshot(client, Keys(namespace))
    [agent] = snap.agents
    assert (agent.agent, agent.online, agent.state.status) == ("alpha", True, "busy")
    assert [lock.name for lock in agent.locks] == ["nightly"]
