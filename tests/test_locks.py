"""Heartbeat locks: one holder at a time across real processes, fencing tokens, and a body that is
cancelled before its TTL runs out when renewal cannot be confirmed.

Holders that die run in processes of their own (``tests/presence_process.py lock``) and are
killed with SIGKILL; Redis is a real ``redis-server`` (a private one where a test kills or
restarts it).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from bus_support import bus_config
from presence_process import AgentProcess, Processes, wait_for

from agentbus import (
    AgentBus,
    InvalidNameError,
    LockLostError,
    LockNotAcquiredError,
    StaleFencingTokenError,
)
from agentbus.presence import LockLease
from agentbus.testing import RedisServer

pytestmark = pytest.mark.anyio

LOCK_TTL = 2.0
"""Lock TTL of the tests' holders, in seconds."""


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    """Agents in processes of their own; SIGKILLed at the end of the test."""
    started = Processes(tmp_path)
    yield started
    started.kill_all()


def bodies(agent: AgentProcess) -> list[tuple[float, float, int, str]]:
    """``(start, end, token, instance)`` of every body the agent recorded; a body it was killed
    in ends at the kill."""
    ends = {r["token"]: r["t"] for r in agent.records("end")}
    found = []
    for start in agent.records("start"):
        end = ends.get(start["token"])
        if end is None:
            assert agent.killed_at is not None, f"{agent.instance} left a body it never ended"
            end = agent.killed_at
        found.append((start["t"], end, start["token"], agent.instance))
    return found


async def test_sigkilled_holder_hands_the_lock_over_within_ttl_without_overlap(
    redis_server: RedisServer, namespace: str, processes: Processes, tmp_path: Path
) -> None:
    """Two processes of one agent take turns on a lock; when the holder is SIGKILLed in its body,
    the other gets the lock within TTL + 1 s, no two bodies overlap, fencing tokens strictly
    increase, and a write with the dead holder's token is refused."""
    hold_file = tmp_path / "hold-now"
    options: dict[str, Any] = {"lock_ttl": LOCK_TTL, "hold": 0.1, "gap": 0.1}
    url = redis_server.url
    a = processes.start("lock", url, namespace, instance="a", hold_file=hold_file, **options)
    b = processes.start("lock", url, namespace, instance="b", hold_file=hold_file, **options)
    await wait_for(
        lambda: len(a.records("end")) >= 2 and len(b.records("end")) >= 2,
        timeout=15, what="both processes to hold the lock twice", agents=[a, b],
    )  # fmt: skip

    hold_file.touch()  # the next holder keeps the lock until it is killed
    holder = await wait_for(
        lambda: next((p for p in (a, b) if p.records("holding")), None),
        timeout=5, what="a process to hold the lock", agents=[a, b],
    )  # fmt: skip
    other = b if holder is a else a
    killed_at = holder.kill()
    held_token = holder.records("holding")[0]["token"]

    def taken_over() -> dict[str, Any] | None:
        return next((r for r in other.records("start") if r["t"] > killed_at), None)

    takeover = await wait_for(
        taken_over, timeout=LOCK_TTL + 3, what="the other process to take over", agents=[other]
    )
    handover = takeover["t"] - killed_at
    print(f"lock handed over {handover:.3f} s after the SIGKILL (TTL {LOCK_TTL} s)")
    assert handover <= LOCK_TTL + 1.0
    assert takeover["token"] > held_token
    ends_before = len(other.records("end"))
    await other.wait_records("end", ends_before + 2, timeout=5)
    other.kill()

    every = sorted(bodies(a) + bodies(b))
    for (_, prev_end, _, prev_who), (start, _, _, who) in itertools.pairwise(every):
        assert start >= prev_end, f"body of {who} started before the body of {prev_who} ended"
    tokens = [token for _, _, token, _ in every]
    assert tokens == list(range(tokens[0], tokens[0] + len(tokens))), "tokens skip or repeat"
    assert len(every) >= 7  # 2 + 2 turns, the killed one, 2 after the takeover

    async with AgentBus("worker", config=bus_config(redis_server, namespace)) as bus:
        seen, data = await bus.read_fenced("nightly")
        assert seen in tokens
        assert seen >= takeover["token"]
        assert data == {"writer": other.instance}
        with pytest.raises(StaleFencingTokenError):
            await bus.fenced_write("nightly", held_token, {"writer": holder.instance})
        assert await bus.read_fenced("nightly") == (seen, data)


async def test_family_lock_is_shared_across_agents(
    redis_server: RedisServer, namespace: str
) -> None:
    """A family-wide lock held by one agent is refused to another agent (while the same name
    scoped to that agent is free), and the next holder gets a greater fencing token."""
    config = bus_config(redis_server, namespace)
    async with AgentBus("alpha", config=config) as alpha, AgentBus("beta", config=config) as beta:
        async with alpha.lock("deploy", ttl=LOCK_TTL, family=True) as first:
            with pytest.raises(LockNotAcquiredError):
                async with beta.lock("deploy", ttl=LOCK_TTL, family=True, blocking=False):
                    pass
            started = time.monotonic()
            with pytest.raises(LockNotAcquiredError):
                async with beta.lock("deploy", ttl=LOCK_TTL, family=True, timeout=0.3):
                    pass
            assert 0.3 <= time.monotonic() - started < 1.5
            async with beta.lock("deploy", ttl=LOCK_TTL) as own:  # beta's own scope
                assert own.fencing_token == 1
        async with beta.lock("deploy", ttl=LOCK_TTL, family=True, blocking=False) as second:
            assert second.fencing_token > first.fencing_token


async def test_bodies_longer_than_the_ttl_keep_their_locks(
    redis_server: RedisServer, namespace: str
) -> None:
    """Two locks with short, different TTLs held at once by one bus for three TTLs each are
    renewed all along: another instance never gets either, and both bodies end normally."""
    config = bus_config(redis_server, namespace)
    ttls = {"short": 1.0, "shorter": 0.75}
    refused = dict.fromkeys(ttls, 0)
    async with (
        AgentBus("worker", config=config) as holder,
        AgentBus("worker", config=config) as rival,
    ):

        async def hold(name: str) -> None:
            async with holder.lock(name, ttl=ttls[name]):
                deadline = time.monotonic() + 3 * ttls[name]
                while time.monotonic() < deadline:
                    with pytest.raises(LockNotAcquiredError):
                        async with rival.lock(name, ttl=ttls[name], blocking=False):
                            pass
                    refused[name] += 1
                    await anyio.sleep(0.05)

        async with anyio.create_task_group() as tg:
            for name in ttls:
                tg.start_soon(hold, name)
        for name in ttls:
            async with rival.lock(name, ttl=ttls[name], blocking=False) as lease:
                assert lease.fencing_token == 2  # the holder's was 1: nobody got it in between
    assert min(refused.values()) >= 10


async def test_unconfirmed_renewal_cancels_the_body_before_the_ttl(
    redis_server_factory: Callable[..., RedisServer], namespace: str
) -> None:
    """With Redis gone while the body runs, the body is cancelled before the TTL after
    acquisition has passed, and the ``async with`` raises LockLostError."""
    server = redis_server_factory()
    leases: list[LockLease] = []
    ran_for: list[float] = []

    async def hold(bus: AgentBus) -> None:
        async with bus.lock("job", ttl=LOCK_TTL) as lease:
            leases.append(lease)
            acquired = time.monotonic()
            server.kill()
            try:
                await anyio.sleep(LOCK_TTL * 5)
            finally:
                ran_for.append(time.monotonic() - acquired)

    async with AgentBus("worker", config=bus_config(server, namespace)) as bus:
        with pytest.raises(LockLostError, match="could not be renewed"):
            await hold(bus)
    assert leases[0].lost
    print(f"body cancelled {ran_for[0]:.3f} s after acquisition (TTL {LOCK_TTL} s)")
    assert LOCK_TTL / 3 <= ran_for[0] < LOCK_TTL


async def test_fencing_tokens_keep_increasing_across_a_graceful_redis_restart(
    redis_server_factory: Callable[..., RedisServer], namespace: str
) -> None:
    """The fencing token of a lock taken after a graceful Redis restart is greater than every
    token handed out before it."""
    server = redis_server_factory()
    async with AgentBus("worker", config=bus_config(server, namespace)) as bus:
        before = []
        for _ in range(3):
            async with bus.lock("job", ttl=LOCK_TTL) as lease:
                before.append(lease.fencing_token)
        assert before == sorted(set(before))
        # In a thread: the event loop keeps running and sees the old connections close, as it
        # would in production (a blocked loop would find out only on its next command).
        await anyio.to_thread.run_sync(lambda: server.restart(graceful=True))
        async with bus.lock("job", ttl=LOCK_TTL) as lease:
            after = lease.fencing_token
    assert after > max(before)


async def test_bad_lock_arguments_raise_clear_errors(
    redis_server: RedisServer, namespace: str
) -> None:
    """Empty, overlong (> 128) and spaced lock names raise InvalidNameError; non-positive TTLs
    raise ValueError; a 128-character name is fine."""
    async with AgentBus("worker", config=bus_config(redis_server, namespace)) as bus:
        for name in ("", "x" * 129, "two words", "tab\there"):
            with pytest.raises(InvalidNameError, match="lock name"):
                bus.lock(name, ttl=LOCK_TTL)
        for ttl in (0, -1, -0.5):
            with pytest.raises(ValueError, match="ttl"):
                bus.lock("job", ttl=ttl)
        with pytest.raises(InvalidNameError):
            await bus.fenced_write("two words", 1, {"a": 1})
        async with bus.lock("x" * 128, ttl=LOCK_TTL) as lease:
            assert lease.fencing_token == 1
