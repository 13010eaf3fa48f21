"""Storage writes fenced by the bus's locks and heartbeats: ``fence=lease.fence`` (or
``run.fence``) carries the lock's scope, so a holder that lost a family-wide lock to another agent
cannot write to the shared store any more, while agent-scope locks of two agents stay apart.

Two ``AgentBus`` instances for different agents share one real ``redis-server`` and one SQLite
store (the contract suite runs the same rules on PostgreSQL too).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import anyio
import pytest

from agentbus import AgentBus, Config, Fence, load_config
from agentbus.presence import HeartbeatRun
from agentbus.storage import StaleWriteError
from agentbus.testing import RedisServer

pytestmark = pytest.mark.anyio

LOCK_TTL = 2.0


def shared_config(server: RedisServer, namespace: str, db: Path) -> Config:
    """One Redis namespace and one SQLite store for every bus of the test."""
    return load_config(
        redis_url=server.url,
        sqlite_path=db,
        overrides={"bus": {"namespace": namespace, "leaseTtl": 2}},
    )


async def test_a_stale_family_lock_holder_cannot_write_to_storage(
    redis_server: RedisServer, namespace: str, tmp_path: Path
) -> None:
    """Agents alpha and beta take the family-wide lock "nightly" in turn and write a shared task
    with ``fence=lease.fence``; alpha's later write with its old lease's fence is refused with
    StaleWriteError and changes nothing."""
    config = shared_config(redis_server, namespace, tmp_path / "family.db")
    async with AgentBus("alpha", config=config) as alpha, AgentBus("beta", config=config) as beta:
        task = await alpha.storage.tasks.create_task(
            "nightly report", assignee="beta", visibility="family"
        )
        async with alpha.lock("nightly", ttl=LOCK_TTL, family=True) as first:
            assert first.fence == Fence("nightly", first.fencing_token, family=True)
            await alpha.storage.tasks.update_task(task.id, status="in_progress", fence=first.fence)
        async with beta.lock("nightly", ttl=LOCK_TTL, family=True) as second:
            assert second.fence == Fence("nightly", second.fencing_token, family=True)
            assert second.fencing_token > first.fencing_token
            written = await beta.storage.tasks.update_task(
                task.id, metadata={"rows": 10}, fence=second.fence
            )
        with pytest.raises(StaleWriteError):
            await alpha.storage.tasks.update_task(task.id, status="completed", fence=first.fence)
        assert await alpha.storage.tasks.get_task(task.id) == written
        assert written.status == "in_progress"


async def test_agent_scope_locks_of_two_agents_fence_apart(
    redis_server: RedisServer, namespace: str, tmp_path: Path
) -> None:
    """An agent-scope lock's ``lease.fence`` is compared with that agent's own writes only:
    beta's lock "nightly" reaching token 3 does not make alpha's token 1 stale, but alpha's
    older lease is refused once alpha wrote with a newer one."""
    config = shared_config(redis_server, namespace, tmp_path / "agents.db")
    async with AgentBus("alpha", config=config) as alpha, AgentBus("beta", config=config) as beta:
        for _ in range(3):
            async with beta.lock("nightly", ttl=LOCK_TTL) as theirs:
                pass
        assert theirs.fence == Fence("nightly", 3)
        their_task = await beta.storage.tasks.create_task("beta's")
        await beta.storage.tasks.update_task(their_task.id, title="by beta", fence=theirs.fence)
        task = await alpha.storage.tasks.create_task("alpha's")
        async with alpha.lock("nightly", ttl=LOCK_TTL) as first:
            assert first.fence == Fence("nightly", 1)
            mine = await alpha.storage.tasks.update_task(task.id, title="1", fence=first.fence)
            assert mine.title == "1"
        async with alpha.lock("nightly", ttl=LOCK_TTL) as second:
            await alpha.storage.tasks.update_task(task.id, title="2", fence=second.fence)
        with pytest.raises(StaleWriteError):
            await alpha.storage.tasks.update_task(task.id, title="stale", fence=first.fence)


async def test_a_family_heartbeat_run_fences_storage_writes_family_wide(
    redis_server: RedisServer, namespace: str, tmp_path: Path
) -> None:
    """A family-wide heartbeat hands its run a family-scope ``run.fence`` (an agent-scope one
    for the agent's own heartbeat); once beta's later run wrote with its fence, a write with
    alpha's earlier run's fence is refused."""
    config = shared_config(redis_server, namespace, tmp_path / "beats.db")
    async with AgentBus("alpha", config=config) as alpha, AgentBus("beta", config=config) as beta:
        task = await alpha.storage.tasks.create_task("beat", assignee="beta", visibility="family")

        async def one_run(bus: AgentBus, *, family: bool) -> HeartbeatRun:
            runs: list[HeartbeatRun] = []
            ran = anyio.Event()

            async def beat(run: HeartbeatRun) -> None:
                await bus.storage.tasks.update_task(task.id, metadata={"by": bus.agent_id},
                                                    fence=run.fence)  # fmt: skip
                runs.append(run)
                ran.set()

            async with anyio.create_task_group() as tg:
                tg.start_soon(partial(bus.run_heartbeat, beat, every=0.2, name="sweep",
                                      family=family))  # fmt: skip
                with anyio.fail_after(5):
                    await ran.wait()
                tg.cancel_scope.cancel()
            return runs[0]

        first = await one_run(alpha, family=True)
        assert first.fence == Fence("sweep", first.fencing_token, family=True)
        second = await one_run(beta, family=True)
        assert second.fencing_token > first.fencing_token
        with pytest.raises(StaleWriteError):
            await alpha.storage.tasks.update_task(task.id, status="failed", fence=first.fence)
        assert (await alpha.storage.tasks.get_task(task.id)).metadata == {"by": "beta"}
        own = await one_run(alpha, family=False)
        assert own.fence == Fence("sweep", own.fencing_token)
