"""Looking into a mailbox: stats, dead letters, replay and purge. Usable without a consumer."""

from __future__ import annotations

import time
from dataclasses import dataclass

import msgspec
import redis.asyncio as aioredis

from .._keys import CONSUMER_GROUP, Keys
from ._dead_letters import DeadLetter, parse_dead_letter
from ._envelope import encode_envelope
from ._narrow import entries, text
from ._redis import map_redis_errors


@dataclass(frozen=True, slots=True)
class MailboxStats:
    """How a mailbox is doing.

    Attributes:
        depth: entries not yet delivered to any instance.
        pending: delivered and not yet settled.
        oldest_pending_age: seconds since the oldest pending entry was last delivered (0 if none).
        delayed: retries waiting for their time.
        dead_letters: entries in the dead-letter stream.
        length: entries in the stream (acked ones stay until retention trims them).
    """

    depth: int
    pending: int
    oldest_pending_age: float
    delayed: int
    dead_letters: int
    length: int


async def mailbox_stats(client: aioredis.Redis, keys: Keys, agent: str) -> MailboxStats:
    mailbox = keys.mailbox(agent)
    with map_redis_errors("reading mailbox stats"):
        async with client.pipeline(transaction=False) as pipe:
            pipe.xlen(mailbox)
            pipe.zcard(keys.delayed(agent))
            pipe.xlen(keys.dead_letters(agent))
            pipe.xinfo_groups(mailbox)
            pipe.xpending_range(mailbox, CONSUMER_GROUP, "-", "+", 1)
            length, delayed, dead, groups, oldest = await pipe.execute(raise_on_error=False)
    if isinstance(groups, Exception):  # no stream yet
        groups, oldest = [], []
    group = next((g for g in groups if text(g["name"]) == CONSUMER_GROUP), None)
    if group is None:
        depth, pending = int(length), 0
    else:
        pending = int(group["pending"])
        lag = group.get("lag")
        depth = int(lag) if lag is not None else max(0, int(length) - pending)
    age = 0.0
    if oldest and not isinstance(oldest, Exception):
        age = int(oldest[0]["time_since_delivered"]) / 1000
    return MailboxStats(
        depth=depth, pending=pending, oldest_pending_age=age, delayed=int(delayed),
        dead_letters=int(dead), length=int(length),
    )  # fmt: skip


async def list_dead_letters(
    client: aioredis.Redis, keys: Keys, agent: str, *, count: int = 100
) -> list[DeadLetter]:
    """The oldest ``count`` dead letters of ``agent``."""
    with map_redis_errors("reading dead letters"):
        rows = entries(await client.xrange(keys.dead_letters(agent), count=count))
    return [parse_dead_letter(entry_id, fields or {}) for entry_id, fields in rows]


async def replay_dead_letter(
    client: aioredis.Redis, keys: Keys, agent: str, envelope_id: str
) -> bool:
    """Put a dead letter back into the mailbox with a fresh attempt count and no expiry.

    The idempotency key and the ``ttl`` are not consulted (a replay is deliberate: an expired
    message would otherwise go straight back to the dead letters). Returns False when no dead
    letter has that envelope id (or it has no envelope, e.g. a ``decode`` dead letter).
    """
    stream = keys.dead_letters(agent)
    with map_redis_errors("replaying a dead letter"):
        for entry_id, fields in entries(await client.xrange(stream)):
            letter = parse_dead_letter(entry_id, fields or {})
            if letter.envelope_id != envelope_id or letter.envelope is None:
                continue
            fresh = msgspec.structs.replace(letter.envelope, deliveries=0, expires_at=None)
            async with client.pipeline(transaction=True) as pipe:
                pipe.xadd(keys.mailbox(agent), {
                    "type": fresh.type, "sender": fresh.sender, "env": encode_envelope(fresh)
                })  # fmt: skip
                pipe.xdel(stream, entry_id)
                await pipe.execute()
            return True
    return False


async def purge_dead_letters(
    client: aioredis.Redis, keys: Keys, agent: str, *, older_than: float | None = None
) -> int:
    """Delete dead letters (all, or those older than ``older_than`` seconds); returns how many."""
    stream = keys.dead_letters(agent)
    with map_redis_errors("purging dead letters"):
        if older_than is None:
            count = int(await client.xlen(stream))
            await client.delete(stream)
            return count
        min_id = f"{int((time.time() - older_than) * 1000)}-0"
        return int(await client.xtrim(stream, minid=min_id))
