"""``agentbus status``: the dashboard in a terminal — read-only, no AgentBus needed."""

from __future__ import annotations

from datetime import UTC, datetime

import anyio
import redis.asyncio as aioredis

from ._config import Config
from ._keys import Keys
from .presence import FamilySnapshot, snapshot


def _when(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return datetime.fromtimestamp(seconds, UTC).strftime("%H:%M:%S")


def render(snap: FamilySnapshot) -> str:
    """The snapshot as a fixed-width table."""
    lines = [
        f"{snap.total_agents} agents, presence version {snap.presence_version}, "
        f"taken {_when(snap.taken_at)} UTC",
        f"{'agent':24} {'status':10} {'inst':>4} {'depth':>6} {'pend':>5} {'dlq':>4} "
        f"{'locks':>5} {'last heartbeat':20} last seen",
    ]
    for agent in snap.agents:
        instances = len(agent.presence.instances) if agent.presence else 0
        beat = agent.heartbeats[-1] if agent.heartbeats else None
        beat_text = f"{beat.name} {beat.outcome or '?'}"[:20] if beat else "-"
        box = agent.mailbox
        lines.append(
            f"{agent.agent[:24]:24} {agent.state.status[:10]:10} {instances:>4} {box.depth:>6} "
            f"{box.pending:>5} {box.dead_letters:>4} {len(agent.locks):>5} {beat_text:20} "
            f"{_when(agent.last_seen)}"
        )
    for lock in snap.family_locks:
        lines.append(f"family lock {lock.name}: {lock.holder} token {lock.fencing_token}")
    for run in snap.family_heartbeats:
        lines.append(
            f"family heartbeat {run.name}: {run.outcome or '?'} at {_when(run.started_at)} by "
            f"{run.runner} (token {run.fencing_token})"
        )
    if snap.next_cursor:
        lines.append(f"... more agents after {snap.next_cursor}")
    return "\n".join(lines)


async def _status(config: Config, watch: float | None, limit: int) -> None:
    client = aioredis.Redis.from_url(config.storage.redis.url, socket_timeout=5)
    keys = Keys(config.bus.namespace)
    try:
        while True:
            text = render(await snapshot(client, keys, limit=limit))
            if watch is None:
                print(text)
                return
            print("\x1b[2J\x1b[H" + text, flush=True)  # clear the screen, then draw
            await anyio.sleep(watch)
    finally:
        await client.aclose()


def run_status(config: Config, *, watch: float | None = None, limit: int = 200) -> int:
    try:
        anyio.run(_status, config, watch, limit)
    except KeyboardInterrupt:
        pass
    return 0
