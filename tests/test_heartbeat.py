"""``run_heartbeat``: at most one run per window across real processes, hand-over when the runner
dies mid-run, and what ``last_heartbeat()`` records.

Runners that die run in processes of their own (``tests/presence_process.py heartbeat``) and are
killed with SIGKILL; Redis is a real ``redis-server``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis.asyncio
from bus_support import bus_config, wait_until
from presence_process import AgentProcess, Processes, wait_for

from agentbus import AgentBus, InvalidNameError, Keys
from agentbus.presence import HeartbeatRun
from agentbus.testing import RedisServer

pytestmark = pytest.mark.anyio

EVERY = 0.4
"""Heartbeat period of the tests, in seconds."""

WINDOWS = 20
"""Consecutive windows the coverage test watches."""


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    """Agents in processes of their own; SIGKILLed at the end of the test."""
    started = Processes(tmp_path)
    yield started
    started.kill_all()


async def redis_window(client: redis.asyncio.Redis) -> int:
    """The window Redis's clock is in now (run_heartbeat's own clock)."""
    seconds, micros = await client.time()
    return math.floor((int(seconds) + int(micros) / 1e6) / EVERY)


def runs_of(agents: list[AgentProcess]) -> list[dict[str, Any]]:
    return sorted((r for a in agents for r in a.records("run")), key=lambda r: r["window"])


def assert_once_per_window_with_increasing_tokens(runs: list[dict[str, Any]]) -> None:
    twice = [w for w, n in Counter(r["window"] for r in runs).items() if n > 1]
    assert not twice, f"windows that ran more than once: {twice}"
    tokens = [r["token"] for r in runs]  # runs are in window order
    assert tokens == sorted(set(tokens)), "fencing tokens do not increase with the window"


async def test_three_processes_run_each_window_at_most_once(
    redis_server: RedisServer, namespace: str, processes: Processes
) -> None:
    """Three processes running the same heartbeat every 0.4 s for 20 windows: no window runs
    twice, at least 90 % of the windows run, and fencing tokens increase with the window."""
    agents = [
        processes.start("heartbeat", redis_server.url, namespace, instance=f"h{i}", every=EVERY)
        for i in range(3)
    ]
    for agent in agents:
        await agent.wait_records("ready")
    async with redis.asyncio.Redis.from_url(redis_server.url) as client:
        first = await redis_window(client) + 1  # every process is up before this window starts
    last = first + WINDOWS - 1
    await wait_for(
        lambda: any(r["window"] > last for r in runs_of(agents)),
        timeout=WINDOWS * EVERY + 5, what=f"a run after window {last}", agents=agents,
    )  # fmt: skip
    for agent in agents:
        agent.kill()

    runs = runs_of(agents)
    assert_once_per_window_with_increasing_tokens(runs)
    ran = [r for r in runs if first <= r["window"] <= last]
    by_runner = Counter(r["runner"] for r in ran)
    print(f"{len(ran)} of {WINDOWS} windows ran; runs per process: {dict(by_runner)}")
    assert len(ran) >= 0.9 * WINDOWS
    assert len(by_runner) >= 2, "one process won every window: the processes never raced"


async def test_killing_the_runner_mid_run_hands_the_next_window_to_another_process(
    redis_server: RedisServer, namespace: str, processes: Processes
) -> None:
    """While a runner's run is going, the other processes skip their windows; once that runner
    is SIGKILLed mid-run, another process runs a window no later than two windows on."""
    url = redis_server.url
    sleeper = processes.start(
        "heartbeat", url, namespace, instance="sleeper", every=EVERY, sleep_on_run=1
    )
    sleeping = (await sleeper.wait_records("sleeping"))[0]
    others = [
        processes.start("heartbeat", url, namespace, instance=f"h{i}", every=EVERY)
        for i in range(2)
    ]
    for agent in others:
        await agent.wait_records("ready")
    state_key = Keys(namespace).heartbeat("worker", "beat")
    async with redis.asyncio.Redis.from_url(url) as client:
        ready_window = await redis_window(client)

        async def skipped() -> bool:
            # The window only moves on when somebody claims one; the sleeper is stuck in its run.
            return int(await client.hget(state_key, "window") or -1) > ready_window

        await wait_until(skipped, timeout=3, what="the others to claim (and skip) a window")
        assert not runs_of(others), "a window ran while another run was still going"
        sleeper.kill()
        kill_window = await redis_window(client)

    first = (await wait_for(lambda: runs_of(others), timeout=5, what="a run after the kill"))[0]
    print(f"killed in window {kill_window}, the next run came in window {first['window']}")
    assert kill_window < first["window"] <= kill_window + 2
    await wait_for(lambda: len(runs_of(others)) >= 3, timeout=5, what="three more runs")
    runs = runs_of([sleeper, *others])
    assert runs[0]["window"] == sleeping["window"]
    assert_once_per_window_with_increasing_tokens(runs)


async def test_last_heartbeat_reports_time_runner_duration_outcome_and_token(
    redis_server: RedisServer, namespace: str
) -> None:
    """last_heartbeat() returns the last finished run: its window, start and finish time,
    runner (agent/instance), duration, outcome "ok" and fencing token."""
    runs: list[HeartbeatRun] = []

    async def beat(run: HeartbeatRun) -> None:
        runs.append(run)
        await anyio.sleep(0.05)

    async with AgentBus("worker", config=bus_config(redis_server, namespace)) as bus:
        assert await bus.last_heartbeat("beat") is None
        async with anyio.create_task_group() as tg:
            tg.start_soon(partial(bus.run_heartbeat, beat, every=EVERY, name="beat"))
            last = await wait_until(
                lambda: bus.last_heartbeat("beat"), what="a finished heartbeat run"
            )
            tg.cancel_scope.cancel()
        assert last is not None
        run = next(r for r in runs if r.window == last.window)
        assert last.runner == f"worker/{bus.instance_id}" == run.runner
        assert last.fencing_token == run.fencing_token
        assert last.started_at == run.started_at
        assert last.started_at == pytest.approx(last.window * EVERY, abs=EVERY)
        assert last.outcome == "ok"
        assert last.duration is not None
        assert 0.05 <= last.duration < EVERY
        assert last.finished_at == pytest.approx(last.started_at + last.duration)


async def test_a_failing_heartbeat_records_its_error_and_keeps_running(
    redis_server: RedisServer, namespace: str
) -> None:
    """A heartbeat function that raises is recorded with outcome "error: <type>: <message>",
    and the next window runs again."""
    attempts: list[int] = []

    async def beat(run: HeartbeatRun) -> None:
        attempts.append(run.window)
        raise RuntimeError("disk full")

    async def failed_twice() -> bool:
        return len(attempts) >= 2

    async with AgentBus("worker", config=bus_config(redis_server, namespace)) as bus:
        async with anyio.create_task_group() as tg:
            tg.start_soon(partial(bus.run_heartbeat, beat, every=EVERY / 2, name="failing"))
            await wait_until(failed_twice, what="two failed runs")
            tg.cancel_scope.cancel()
        last = await bus.last_heartbeat("failing")
    assert last is not None
    assert last.outcome == "error: RuntimeError: disk full"
    assert last.window in attempts


async def test_bad_heartbeat_arguments_raise_clear_errors(
    redis_server: RedisServer, namespace: str
) -> None:
    """run_heartbeat with every <= 0 raises ValueError and a bad name InvalidNameError, before
    anything runs."""

    async def beat(run: HeartbeatRun) -> None:
        raise AssertionError("must not run")

    async with AgentBus("worker", config=bus_config(redis_server, namespace)) as bus:
        for every in (0, -1, -0.1):
            with pytest.raises(ValueError, match="every"):
                await bus.run_heartbeat(beat, every=every)
        with pytest.raises(InvalidNameError):
            await bus.run_heartbeat(beat, every=1, name="two words")
