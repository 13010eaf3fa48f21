"""``snapshot()``: everything a dashboard shows, in three round trips whatever the family's size.

Round trip 1 reads the registry, the presence index and the family-wide lock index and
heartbeats; round trip 2 pipelines a fixed set of reads per agent for one page of agents (state,
mailbox counters, lock index, heartbeats); round trip 3 reads the locks those indexes name.
Pages are in agent-id order; pass ``next_cursor`` back for the next.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec
import redis.asyncio as aioredis

from .._keys import CONSUMER_GROUP, FAMILY, Keys
from ..streams._narrow import text
from ..streams._redis import map_redis_errors
from ._heartbeat import HeartbeatRun, decode_run
from ._presence import AgentPresence, InstanceInfo, agent_presence
from ._state import AgentState, decode_state

MAX_PAGE = 5_000


class LockInfo(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    holder: str
    fencing_token: int
    acquired_at: float
    expires_at: float


class MailboxCounts(msgspec.Struct, frozen=True, kw_only=True):
    depth: int
    pending: int
    delayed: int
    dead_letters: int


class AgentSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    agent: str
    online: bool
    last_seen: float | None
    presence: AgentPresence | None
    state: AgentState
    mailbox: MailboxCounts
    locks: list[LockInfo]
    heartbeats: list[HeartbeatRun]


class FamilySnapshot(msgspec.Struct, frozen=True, kw_only=True):
    taken_at: float
    presence_version: int
    total_agents: int
    agents: list[AgentSnapshot]
    family_locks: list[LockInfo]
    family_heartbeats: list[HeartbeatRun]
    next_cursor: str | None


class _LockEntry(msgspec.Struct, frozen=True):
    holder: str
    acquired_at: float
    expires_at: float


_lock_decoder = msgspec.json.Decoder(_LockEntry)
_info_decoder = msgspec.json.Decoder(InstanceInfo)
_registry_decoder = msgspec.json.Decoder(dict[str, Any])


_TOKEN_CHARS = 32  # a lock's value is the holder's 32-hex-digit token, then its JSON entry


def _lock_names(index: dict[Any, Any]) -> list[tuple[str, int]]:
    """(name, newest fencing token) of every lock ever taken in one scope, by name."""
    return sorted((text(name), int(token)) for name, token in index.items())


def _locks(names: list[tuple[str, int]], values: list[Any]) -> list[LockInfo]:
    """The locks held now: a missing value is a released (or expired) lock. The holder's
    fencing token is the newest one, since tokens only grow with successful acquisitions."""
    held = []
    for (name, token), value in zip(names, values, strict=True):
        if value:
            entry = _lock_decoder.decode(value[_TOKEN_CHARS:])
            held.append(LockInfo(
                name=name, holder=entry.holder, fencing_token=token,
                acquired_at=entry.acquired_at / 1000, expires_at=entry.expires_at / 1000,
            ))  # fmt: skip
    return held


def _heartbeats(raw: dict[Any, Any]) -> list[HeartbeatRun]:
    return [decode_run(raw[name]) for name in sorted(raw)]


async def snapshot(
    client: aioredis.Redis, keys: Keys, *, cursor: str | None = None, limit: int = 1000
) -> FamilySnapshot:
    """Every agent in the registry (online or not), ``limit`` per page after ``cursor``."""
    if not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit must be 1..{MAX_PAGE}, got {limit!r}")
    now = time.time()
    now_ms = now * 1000
    with map_redis_errors("taking a snapshot"):
        async with client.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys.registry)
            pipe.zrangebyscore(keys.presence_index, int(now_ms), "+inf")
            pipe.hgetall(keys.presence_info)
            pipe.get(keys.presence_version)
            pipe.hgetall(keys.locks(FAMILY))
            pipe.hgetall(keys.heartbeats(FAMILY))
            registry, alive, infos, version, family_locks, family_beats = await pipe.execute()
        registry = {text(name): entry for name, entry in registry.items()}  # bytes or str keys
        names = sorted(registry)
        if cursor is not None:
            names = [name for name in names if name > cursor]
        page, rest = names[:limit], names[limit:]
        async with client.pipeline(transaction=False) as pipe:
            for agent in page:
                pipe.hgetall(keys.state(agent))
                pipe.xinfo_groups(keys.mailbox(agent))
                pipe.xlen(keys.mailbox(agent))
                pipe.zcard(keys.delayed(agent))
                pipe.xlen(keys.dead_letters(agent))
                pipe.hgetall(keys.locks(agent))
                pipe.hgetall(keys.heartbeats(agent))
            replies = await pipe.execute(raise_on_error=False)
        # Round trip 3: the values of the locks those indexes name (who holds them, if anyone).
        scoped = [(FAMILY, _lock_names(family_locks))]
        scoped += [(agent, _lock_names(replies[i * 7 + 5])) for i, agent in enumerate(page)]
        lock_values: list[Any] = []
        if any(names_ for _, names_ in scoped):
            async with client.pipeline(transaction=False) as pipe:
                for scope, lock_names in scoped:
                    for name, _ in lock_names:
                        pipe.get(keys.lock(scope, name))
                lock_values = await pipe.execute()
    held: dict[str, list[LockInfo]] = {}
    offset = 0
    for scope, lock_names in scoped:
        held[scope] = _locks(lock_names, lock_values[offset : offset + len(lock_names)])
        offset += len(lock_names)
    presence: dict[str, list[InstanceInfo]] = {}
    for raw_member in alive:
        raw_info = infos.get(raw_member)
        if raw_info is not None:
            info = _info_decoder.decode(raw_info)
            presence.setdefault(info.agent, []).append(info)
    agents = []
    for index, agent in enumerate(page):
        state, groups, length, delayed, dead, _, beats = replies[index * 7 : index * 7 + 7]
        instances = presence.get(agent)
        entry = _registry_decoder.decode(registry[agent])
        agents.append(AgentSnapshot(
            agent=agent,
            online=instances is not None,
            last_seen=entry.get("last_seen"),
            presence=agent_presence(agent, instances) if instances else None,
            state=decode_state(agent, state, instances is not None),
            mailbox=_mailbox_counts(groups, length, delayed, dead),
            locks=held[agent],
            heartbeats=_heartbeats(beats),
        ))  # fmt: skip
    return FamilySnapshot(
        taken_at=now,
        presence_version=int(version or 0),
        total_agents=len(registry),
        agents=agents,
        family_locks=held[FAMILY],
        family_heartbeats=_heartbeats(family_beats),
        next_cursor=page[-1] if rest else None,
    )


def _mailbox_counts(groups: Any, length: Any, delayed: Any, dead: Any) -> MailboxCounts:
    pending, depth = 0, int(length)
    if not isinstance(groups, Exception):  # no mailbox stream yet
        for group in groups:
            if text(group["name"]) == CONSUMER_GROUP:
                pending = int(group["pending"])
                lag = group.get("lag")
                depth = int(lag) if lag is not None else max(0, int(length) - pending)
    return MailboxCounts(depth=depth, pending=pending, delayed=int(delayed), dead_letters=int(dead))
