"""Presence: who is online, built on the instance leases.

Each instance is a member ``agent/instance`` of one sorted set (score: when its lease expires) with
its info in one hash, both under the ``{~presence}`` tag. ``online()`` reads both in one round
trip — never ``KEYS``, never a full ``SCAN``. Joins, leaves and deliberate updates bump a version
counter and publish a diff; an instance that stops refreshing is removed by a sweep (any bus, or a
dashboard, runs one at most once a second family-wide), which publishes exactly one leave.
"""

from __future__ import annotations

import time

import msgspec
import redis.asyncio as aioredis

from .._keys import Keys
from ..streams._narrow import text
from ..streams._redis import map_redis_errors
from ..streams._scripts import load_script

SWEEP_INTERVAL = 1.0
"""Seconds between sweeps family-wide; a dead instance is reported gone within TTL + this + 1."""


class InstanceInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One running instance as presence shows it."""

    agent: str
    instance: str
    since: float
    last_seen: float
    ttl: float
    host: str
    pid: int
    metadata: dict[str, str] = msgspec.field(default_factory=dict)


class AgentPresence(msgspec.Struct, frozen=True, kw_only=True):
    """An online agent: its live instances, when it came online and when it was last seen."""

    agent: str
    instances: list[InstanceInfo]
    since: float
    last_seen: float


class PresenceSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """Every online agent, at presence ``version``."""

    version: int
    agents: dict[str, AgentPresence]


class PresenceDiff(msgspec.Struct, frozen=True, kw_only=True):
    """``join``, ``leave`` or ``update`` of one instance; versions increase by one per diff."""

    kind: str
    version: int
    time: float  # seconds
    agent: str
    instance: str
    info: InstanceInfo | None = None


class _RawDiff(msgspec.Struct, frozen=True):
    kind: str
    version: int
    time: float
    agent: str
    instance: str
    info: str = ""


_json = msgspec.json.Encoder()
_info_decoder = msgspec.json.Decoder(InstanceInfo)
_diff_decoder = msgspec.json.Decoder(_RawDiff)


class PresenceScripts:
    def __init__(self, client: aioredis.Redis) -> None:
        self.touch = load_script(client, "presence_touch", __package__)
        self.leave = load_script(client, "presence_leave", __package__)


def member(agent: str, instance: str) -> str:
    return f"{agent}/{instance}"


def encode_info(info: InstanceInfo) -> bytes:
    return _json.encode(info)


def decode_diff(payload: bytes) -> PresenceDiff:
    raw = _diff_decoder.decode(payload)
    info = _info_decoder.decode(raw.info) if raw.info else None
    return PresenceDiff(
        kind=raw.kind, version=raw.version, time=raw.time / 1000, agent=raw.agent,
        instance=raw.instance, info=info,
    )  # fmt: skip


def touch_args(
    keys: Keys, info: InstanceInfo, *, changed: bool
) -> tuple[list[str], list[str | int | bytes]]:
    """KEYS and ARGV of presence_touch.lua (the lease refresh pipelines it with the lease)."""
    expiry_ms = int((info.last_seen + info.ttl) * 1000)
    return (
        [keys.presence_index, keys.presence_info, keys.presence_version],
        [member(info.agent, info.instance), expiry_ms, encode_info(info), keys.presence_diffs,
         int(time.time() * 1000), "1" if changed else "0"],
    )  # fmt: skip


async def leave(
    client: aioredis.Redis, keys: Keys, scripts: PresenceScripts, agent: str, instance: str
) -> bool:
    """Remove one instance at once (graceful close); True when it was still listed."""
    removed = await scripts.leave(
        keys=_leave_keys(keys),
        args=[int(time.time() * 1000), keys.presence_diffs, member(agent, instance), 0],
        client=client,
    )
    return bool(removed)


async def sweep(
    client: aioredis.Redis, keys: Keys, scripts: PresenceScripts, *, gate: float = SWEEP_INTERVAL
) -> list[tuple[str, str]]:
    """Remove instances whose lease expired; returns ``(agent, instance)`` of each removed.

    ``gate`` seconds: a sweep runs at most that often family-wide (0: always).
    """
    with map_redis_errors("sweeping presence"):
        removed = await scripts.leave(
            keys=_leave_keys(keys),
            args=[int(time.time() * 1000), keys.presence_diffs, "", int(gate * 1000)],
            client=client,
        )
        gone = [tuple(text(m).split("/", 1)) for m in removed]
        if gone:
            # Per-agent instance sets live in other slots; tidy them in one pipeline.
            async with client.pipeline(transaction=False) as pipe:
                for agent, instance in gone:
                    pipe.zrem(keys.instances(agent), instance)
                await pipe.execute()
    return [(agent, instance) for agent, instance in gone]


def _leave_keys(keys: Keys) -> list[str]:
    return [keys.presence_index, keys.presence_info, keys.presence_version, keys.presence_sweep]


async def online(client: aioredis.Redis, keys: Keys) -> PresenceSnapshot:
    """Every online agent with its instances, in one round trip."""
    now_ms = int(time.time() * 1000)
    with map_redis_errors("reading presence"):
        async with client.pipeline(transaction=True) as pipe:
            pipe.zrangebyscore(keys.presence_index, now_ms, "+inf")
            pipe.hgetall(keys.presence_info)
            pipe.get(keys.presence_version)
            alive, infos, version = await pipe.execute()
    agents: dict[str, list[InstanceInfo]] = {}
    for raw_member in alive:
        raw_info = infos.get(raw_member)
        if raw_info is None:
            continue
        info = _info_decoder.decode(raw_info)
        agents.setdefault(info.agent, []).append(info)
    return PresenceSnapshot(
        version=int(version or 0),
        agents={agent: agent_presence(agent, agents[agent]) for agent in sorted(agents)},
    )


def agent_presence(agent: str, instances: list[InstanceInfo]) -> AgentPresence:
    since = min(i.since for i in instances)
    last_seen = max(i.last_seen for i in instances)
    return AgentPresence(agent=agent, instances=instances, since=since, last_seen=last_seen)


async def is_online(client: aioredis.Redis, keys: Keys, agent: str) -> bool:
    """True while at least one instance of ``agent`` holds a lease (one command)."""
    with map_redis_errors("reading presence"):
        count = await client.zcount(keys.instances(agent), int(time.time() * 1000), "+inf")
    return int(count) > 0
