"""Reading one agent's mailbox: the read loop, acks, retries and dead letters.

All instances of an agent share the consumer group ``workers`` of its mailbox; each instance reads
as the consumer named by its instance id. Delivery is at-least-once: an entry is acked only after
its handler succeeded (or after it was moved to the delayed set or the dead letters).

The read loop is a small state machine::

    PENDING --(own pending list read to the end)--> NEW --(connection lost)--> backoff --> PENDING

On start and after every reconnect it first re-reads its own pending entries (``XREADGROUP ... 0``),
skipping those still in this process's hands, then blocks for new ones (``>``). Entries that
cannot be handled at all are dead-lettered by the loop itself: deleted (``trimmed``), not an
envelope (``decode``), past their ``ttl`` (``expired``), or delivered ``maxDeliveries`` times
without being settled (``max-deliveries``).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.lowlevel
import msgspec
import redis.asyncio as aioredis
import redis.exceptions as redis_errors

from .._errors import DecodeError
from .._keys import CONSUMER_GROUP, Keys
from ._dead_letters import dead_letter_fields
from ._envelope import decode_envelope, encode_envelope, now
from ._message import Message
from ._narrow import Entry, pending_rows, read_entries
from ._redis import BLOCK_MS, CONNECTION_ERRORS, Backoff, map_redis_errors
from ._sender import Sender

Sink = Callable[[list[Message]], None]

logger = logging.getLogger("agentbus")


@dataclass(frozen=True, kw_only=True, slots=True)
class ConsumerSettings:
    max_deliveries: int
    lease_ttl: float
    dedup_ttl: float
    batch_size: int = 100
    prefetch: int = 200  # most messages read but not yet settled, per instance
    retry_base: float = 0.5  # first retry delay; doubles per attempt, with jitter
    retry_cap: float = 60.0
    reply_ttl: float = 60.0  # a reply stream nobody reads expires after this


def retry_delay(attempts: int, base: float, cap: float) -> float:
    """Exponential backoff with jitter: base * 2^(attempts-1), capped, 50-100 %."""
    delay = min(cap, base * 2 ** max(0, attempts - 1))
    return random.uniform(delay / 2, delay)


class MailboxConsumer:
    """One instance's consumption of its agent's mailbox."""

    def __init__(
        self,
        client: aioredis.Redis,
        keys: Keys,
        sender: Sender,
        *,
        agent: str,
        instance: str,
        settings: ConsumerSettings,
    ) -> None:
        self.client = client
        self.keys = keys
        self.sender = sender
        self.agent = agent
        self.instance = instance
        self.settings = settings
        self.mailbox = keys.mailbox(agent)
        self.dead_letter_stream = keys.dead_letters(agent)
        self.delayed = keys.delayed(agent)
        # Entries this process holds: dispatched and not yet settled in Redis. A re-read of the
        # pending list after a reconnect must not hand them out a second time.
        self.in_flight: set[str] = set()
        self._outstanding = 0  # dispatched, not yet settled locally (flow control)
        self._room = asyncio.Event()
        self._ack_ids: list[str] = []
        self._effect_keys: list[str] = []
        self._ack_wake = asyncio.Event()
        self.retry_scheduled = asyncio.Event()  # wakes the delayed-set mover early
        self._group_ready = False

    # ---- the read loop -------------------------------------------------------------------

    async def run_reader(self, sink: Sink) -> None:
        """Read the mailbox forever, handing batches of messages to ``sink``."""
        backoff = Backoff()
        cursor: str | None = "0"  # None = read new entries; else re-read own pending after it
        while True:
            try:
                await self._wait_for_room()
                if not self._group_ready:
                    await self.ensure_group()
                count = min(self.settings.batch_size, self._free_slots())
                if cursor is None:
                    reply = await self.client.xreadgroup(
                        CONSUMER_GROUP, self.instance, {self.mailbox: ">"},
                        count=count, block=BLOCK_MS,
                    )  # fmt: skip
                    entries = read_entries(reply)
                    if await self.dispatch(entries, sink, None):
                        # Let the handlers start (and a request's reply go out) before this
                        # loop spends time issuing its next read.
                        await anyio.lowlevel.checkpoint()
                else:
                    # Entries held before the read count too: one acked while the reply was on
                    # its way has left in_flight but is in the reply.
                    held = set(self.in_flight)
                    reply = await self.client.xreadgroup(
                        CONSUMER_GROUP, self.instance, {self.mailbox: cursor}, count=count
                    )
                    entries = read_entries(reply)
                    if not entries:
                        cursor = None
                        continue
                    cursor = entries[-1][0]
                    held |= self.in_flight
                    fresh = [e for e in entries if e[0] not in held]
                    await self.dispatch(fresh, sink, await self._delivery_counts(fresh))
                backoff.reset()
            except redis_errors.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                # The group vanished (Redis lost its data, or someone deleted the stream).
                self._group_ready = False
                cursor = "0"
            except CONNECTION_ERRORS:
                await anyio.sleep(backoff.next_delay())
                self._group_ready = False
                cursor = "0"

    async def ensure_group(self) -> None:
        """Create the consumer group (from the stream's start: a mailbox keeps what was sent
        before its agent first started)."""
        try:
            await self.client.xgroup_create(self.mailbox, CONSUMER_GROUP, id="0", mkstream=True)
        except redis_errors.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    async def _delivery_counts(self, entries: list[Entry]) -> dict[str, int]:
        """How often each re-read pending entry was delivered (XREADGROUP does not say)."""
        if not entries:
            return {}
        rows = pending_rows(await self.client.xpending_range(
            self.mailbox, CONSUMER_GROUP, entries[0][0], entries[-1][0], len(entries) + 10,
            consumername=self.instance,
        ))  # fmt: skip
        return {row.entry_id: row.times_delivered for row in rows}

    async def dispatch(
        self, entries: Iterable[Entry], sink: Sink, counts: dict[str, int] | None
    ) -> int:
        """Turn entries into messages for ``sink``; dead-letter those that cannot be handled.

        ``counts`` holds each entry's delivery count when it is not a first delivery (re-read
        pending entries, entries claimed from a dead instance). Returns how many went to sink.
        """
        batch: list[Message] = []
        dead: list[dict[str, Any]] = []
        current = now()
        max_deliveries = self.settings.max_deliveries
        for entry_id, fields in entries:
            if not fields:
                dead.append(dead_letter_fields(
                    reason="trimmed", envelope=None, envelope_bytes=None, entry_id=entry_id
                ))  # fmt: skip
                continue
            try:
                envelope = decode_envelope(fields[b"env"])
            except (KeyError, DecodeError) as exc:
                dead.append(dead_letter_fields(
                    reason="decode", envelope=None, envelope_bytes=None, raw_fields=fields,
                    error=exc, entry_id=entry_id,
                ))  # fmt: skip
                continue
            delivered = 1 if counts is None else counts.get(entry_id, 2)
            deliveries = envelope.deliveries + delivered
            if envelope.expires_at is not None and envelope.expires_at < current:
                reason = "expired"
            elif deliveries > max_deliveries:
                reason = "max-deliveries"
            else:
                batch.append(Message(envelope, entry_id, deliveries, self))
                continue
            dead.append(dead_letter_fields(
                reason=reason, envelope=envelope, envelope_bytes=fields[b"env"],
                attempts=deliveries - 1, entry_id=entry_id,
            ))  # fmt: skip
        if dead:
            await self.write_dead_letters(dead)
        if batch:
            self.in_flight.update(m.entry_id for m in batch)
            self._outstanding += len(batch)
            sink(batch)
        return len(batch)

    def _free_slots(self) -> int:
        return max(0, self.settings.prefetch - self._outstanding)

    async def _wait_for_room(self) -> None:
        while self._free_slots() == 0:
            self._room.clear()
            await self._room.wait()

    def _settled_locally(self) -> None:
        self._outstanding -= 1
        if self._outstanding <= self.settings.prefetch - self.settings.batch_size:
            self._room.set()

    # ---- settling ------------------------------------------------------------------------

    def ack(self, message: Message, effect_key: str | None = None) -> None:
        """Queue an ack (and the effect key that records the handler's effect) for the acker."""
        self._ack_ids.append(message.entry_id)
        if effect_key is not None:
            self._effect_keys.append(effect_key)
        self._ack_wake.set()
        self._settled_locally()

    def has_buffered_acks(self) -> bool:
        return bool(self._ack_ids or self._effect_keys)

    async def run_acker(self) -> None:
        """Write queued acks, coalesced: one XACK for everything queued meanwhile.

        Effect keys go first in the same pipeline, so an ack is never written without them.
        XACK is idempotent, so a failed flush is simply retried after a backoff.
        """
        backoff = Backoff()
        while True:
            await self._ack_wake.wait()
            self._ack_wake.clear()
            try:
                await self.flush_acks()
                backoff.reset()
            except CONNECTION_ERRORS:
                self._ack_wake.set()
                await anyio.sleep(backoff.next_delay())
            except redis_errors.ResponseError as exc:
                if "NOGROUP" in str(exc):
                    # The group is gone (Redis lost its data): there is nothing left to ack;
                    # the reader recreates the group and reads the stream again.
                    self.in_flight.difference_update(self._ack_ids)
                    self._ack_ids, self._effect_keys = [], []
                    continue
                # E.g. out of memory under noeviction: keep the acks and try again later.
                logger.warning("could not write acks, retrying: %s", exc)
                self._ack_wake.set()
                await anyio.sleep(backoff.next_delay())

    async def flush_acks(self) -> None:
        ids, effects = self._ack_ids, self._effect_keys
        if not ids and not effects:
            return
        self._ack_ids, self._effect_keys = [], []
        try:
            if not effects:
                await self.client.xack(self.mailbox, CONSUMER_GROUP, *ids)
            else:
                async with self.client.pipeline(transaction=False) as pipe:
                    ttl_ms = int(self.settings.dedup_ttl * 1000)
                    for key in effects:
                        pipe.set(key, "1", px=ttl_ms)
                    if ids:
                        pipe.xack(self.mailbox, CONSUMER_GROUP, *ids)
                    await pipe.execute()
        except BaseException:
            self._ack_ids[:0], self._effect_keys[:0] = ids, effects
            raise
        self.in_flight.difference_update(ids)

    async def retry_or_dead_letter(
        self,
        message: Message,
        *,
        error: BaseException | None,
        delay: float | None,
        handler: str | None,
    ) -> None:
        """Schedule another delivery through the delayed set, or dead-letter after the last.

        Raises:
            BackendError: Redis failed; the entry stays pending and is delivered again later.
        """
        attempts = message.deliveries
        if attempts >= self.settings.max_deliveries:
            fields = dead_letter_fields(
                reason="error", envelope=message.envelope,
                envelope_bytes=encode_envelope(message.envelope), error=error, handler=handler,
                attempts=attempts, entry_id=message.entry_id,
            )  # fmt: skip
            await self._settle_with(
                message, lambda pipe: pipe.xadd(self.dead_letter_stream, fields)
            )
            return
        if delay is None:
            delay = retry_delay(attempts, self.settings.retry_base, self.settings.retry_cap)
        retried = msgspec.structs.replace(message.envelope, deliveries=attempts)
        # promote_due.lua splits the member at its first two newlines.
        member = f"{retried.type}\n{retried.sender}\n".encode() + encode_envelope(retried)
        due_ms = int((now() + max(0.0, delay)) * 1000)
        await self._settle_with(message, lambda pipe: pipe.zadd(self.delayed, {member: due_ms}))
        self.retry_scheduled.set()

    async def dead_letter(
        self, message: Message, *, reason: str, error: BaseException | None = None,
        handler: str | None = None,
    ) -> None:  # fmt: skip
        fields = dead_letter_fields(
            reason=reason, envelope=message.envelope,
            envelope_bytes=encode_envelope(message.envelope), error=error, handler=handler,
            attempts=message.deliveries, entry_id=message.entry_id,
        )  # fmt: skip
        message.settled = True
        await self._settle_with(message, lambda pipe: pipe.xadd(self.dead_letter_stream, fields))

    async def _settle_with(self, message: Message, write: Callable[[Any], Any]) -> None:
        """Write something (a dead letter, a retry) and XACK the entry in one MULTI."""
        try:
            with map_redis_errors("settling a message"):
                async with self.client.pipeline(transaction=True) as pipe:
                    write(pipe)
                    pipe.xack(self.mailbox, CONSUMER_GROUP, message.entry_id)
                    await pipe.execute()
        finally:
            # Settled locally either way: if the write failed, the entry is still pending in
            # Redis and comes back through the pending re-read after the reconnect.
            self.in_flight.discard(message.entry_id)
            self._settled_locally()

    async def write_dead_letters(self, dead: list[dict[Any, Any]]) -> None:
        async with self.client.pipeline(transaction=True) as pipe:
            for fields in dead:
                pipe.xadd(self.dead_letter_stream, fields)
            pipe.xack(self.mailbox, CONSUMER_GROUP, *(f["entry_id"] for f in dead))
            await pipe.execute()

    # ---- replies -------------------------------------------------------------------------

    async def reply(
        self, message: Message, data: Any, *, error: BaseException | None = None
    ) -> None:
        """Answer a request on the requesting instance's reply stream."""
        envelope = message.envelope
        if envelope.reply_to is None:
            return
        await self.sender.reply(envelope, data, error=error, ttl=self.settings.reply_ttl)
