"""Background work of a consuming instance: due retries, reclaim from dead instances, retention.

Reclaim is gated by liveness, not idle time: XAUTOCLAIM cannot filter by consumer, and claiming by
idle time alone would take entries from a live instance whose handler is merely slow and run them
twice. So each round lists the group's consumers (XPENDING summary), checks their lease keys, and
only for consumers whose lease is gone lists their entries (XPENDING ... consumer) and XCLAIMs
them, before any XGROUP DELCONSUMER (which would orphan them). XCLAIM's min-idle-time is a third
of the lease TTL: a dead consumer's entries are at least that idle once its lease expired (its
last refresh was a TTL ago), and an entry another instance has just claimed is not, so two
reclaimers never take the same entry.

A missing lease means "dead" only while Redis was reachable: during an outage no instance can
renew its lease, so after losing Redis the reclaimer waits until Redis answers again and then one
more lease TTL (time for live instances to renew) before it claims anything.
"""

from __future__ import annotations

import time
from typing import Any

import anyio
import redis.exceptions as redis_errors

from .._ids import is_valid_agent_id
from .._keys import CONSUMER_GROUP
from ._consumer import MailboxConsumer, Sink
from ._dead_letters import dead_letter_fields
from ._narrow import entries, pending_consumers, pending_rows, text
from ._redis import CONNECTION_ERRORS, Backoff
from ._scripts import Scripts

_RECLAIM_BATCH = 100


async def run_delayed_mover(consumer: MailboxConsumer, scripts: Scripts) -> None:
    """Move due retries back into the mailbox; sleep until the next one is due (at most 1 s)."""
    backoff = Backoff()
    while True:
        try:
            next_due = await scripts.promote_due(
                keys=[consumer.delayed, consumer.mailbox],
                args=[int(time.time() * 1000), _RECLAIM_BATCH],
            )
            backoff.reset()
        except CONNECTION_ERRORS:
            await anyio.sleep(backoff.next_delay())
            continue
        wait = 1.0 if int(next_due) < 0 else (int(next_due) / 1000 - time.time())
        if wait > 0:
            consumer.retry_scheduled.clear()
            with anyio.move_on_after(min(wait, 1.0)):
                await consumer.retry_scheduled.wait()


async def run_reclaimer(consumer: MailboxConsumer, sink: Sink, interval: float) -> None:
    backoff = Backoff()
    lost_redis = False
    while True:
        try:
            if lost_redis:
                # Leases ran out while nobody could renew them; once Redis answers, give the
                # live instances a lease TTL to renew theirs before judging anyone dead.
                await consumer.client.ping()
                lost_redis = False
                backoff.reset()
                await anyio.sleep(consumer.settings.lease_ttl)
            await reclaim_once(consumer, sink)
            backoff.reset()
            await anyio.sleep(interval)
        except CONNECTION_ERRORS:
            lost_redis = True
            await anyio.sleep(backoff.next_delay())
        except redis_errors.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await anyio.sleep(interval)


async def reclaim_once(consumer: MailboxConsumer, sink: Sink) -> int:
    """Claim the pending entries of consumers whose lease is gone; returns how many."""
    client, keys = consumer.client, consumer.keys
    summary = pending_consumers(await client.xpending(consumer.mailbox, CONSUMER_GROUP))
    others = [name for name in summary if name != consumer.instance]
    if not others:
        return 0
    async with client.pipeline(transaction=False) as pipe:
        for name in others:
            pipe.exists(keys.lease(consumer.agent, _lease_name(name)))
        alive = await pipe.execute()
    claimed = 0
    min_idle_ms = max(1, int(consumer.settings.lease_ttl * 1000 / 3))
    for name, is_alive in zip(others, alive, strict=True):
        if is_alive:
            continue
        claimed += await _claim_from(consumer, sink, name, min_idle_ms)
    return claimed


def _lease_name(consumer_name: str) -> str:
    # Consumers created outside agentbus may have names no lease key can have; they count as
    # dead (the idle-time fallback) once their entries are idle for a third of the lease TTL.
    return consumer_name if is_valid_agent_id(consumer_name) else "-"


async def _claim_from(consumer: MailboxConsumer, sink: Sink, name: str, min_idle_ms: int) -> int:
    client = consumer.client
    rows = pending_rows(await client.xpending_range(
        consumer.mailbox, CONSUMER_GROUP, "-", "+", _RECLAIM_BATCH,
        consumername=name, idle=min_idle_ms,
    ))  # fmt: skip
    if not rows:
        return 0
    times = {row.entry_id: row.times_delivered for row in rows}
    ids = list(times)
    # XCLAIM silently drops entries that were deleted from the stream; find them first so that
    # they are dead-lettered as "trimmed" instead of vanishing.
    async with client.pipeline(transaction=False) as pipe:
        for entry_id in ids:
            pipe.xrange(consumer.mailbox, entry_id, entry_id)
        exists = await pipe.execute()
    gone = [entry_id for entry_id, found in zip(ids, exists, strict=True) if not found]
    if gone:
        await _dead_letter_trimmed(consumer, gone)
    alive_ids = [entry_id for entry_id in ids if entry_id not in gone]
    if not alive_ids:
        return 0
    claimed = entries(await client.xclaim(
        consumer.mailbox, CONSUMER_GROUP, consumer.instance, min_idle_ms, list[Any](alive_ids)
    ))  # fmt: skip
    # XCLAIM counted one more delivery.
    counts = {entry_id: times[entry_id] + 1 for entry_id, _ in claimed}
    return await consumer.dispatch(claimed, sink, counts)


async def _dead_letter_trimmed(consumer: MailboxConsumer, entry_ids: list[str]) -> None:
    await consumer.write_dead_letters([
        dead_letter_fields(reason="trimmed", envelope=None, envelope_bytes=None, entry_id=e)
        for e in entry_ids
    ])  # fmt: skip


async def run_trimmer(consumer: MailboxConsumer, scripts: Scripts, interval: float) -> None:
    """Trim acked entries from the mailbox now and then, and drop consumers that are gone."""
    while True:
        await anyio.sleep(interval)
        try:
            await scripts.trim(keys=[consumer.mailbox], args=[CONSUMER_GROUP])
            await _forget_dead_consumers(consumer)
        except CONNECTION_ERRORS:
            continue
        except redis_errors.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise


async def _forget_dead_consumers(consumer: MailboxConsumer) -> None:
    """XGROUP DELCONSUMER for consumers with no lease and nothing pending (never before)."""
    client = consumer.client
    rows = await client.xinfo_consumers(consumer.mailbox, CONSUMER_GROUP)
    idle = [text(r["name"]) for r in rows if int(r["pending"]) == 0]
    idle = [name for name in idle if name != consumer.instance]
    if not idle:
        return
    async with client.pipeline(transaction=False) as pipe:
        for name in idle:
            pipe.exists(consumer.keys.lease(consumer.agent, _lease_name(name)))
        alive = await pipe.execute()
    for name, is_alive in zip(idle, alive, strict=True):
        if not is_alive:
            await client.xgroup_delconsumer(consumer.mailbox, CONSUMER_GROUP, name)
