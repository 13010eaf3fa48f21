"""Writing messages: envelopes, idempotency, and automatic pipelining of concurrent sends.

Concurrent ``send()`` calls are coalesced (as ioredis does): when no write is in flight a send
goes out at once; while one is, later sends queue and the flusher writes them together in one
pipeline. A producer
that awaits each send in turn still pays one round trip per message; ``send_many`` writes a
whole batch in one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
import redis.asyncio as aioredis
import redis.exceptions as redis_errors

from .._errors import BusClosedError, EncodeError, MessageTooLargeError
from .._ids import uuid7, validate_agent_id, validate_name
from .._keys import Keys
from ._envelope import Envelope, encode_data, encode_envelope, now
from ._redis import map_redis_errors
from ._scripts import Scripts

ERROR_TYPE_HEADER = "x-error-type"
ERROR_MESSAGE_HEADER = "x-error-message"

# One queued write: the redis-py command arguments, whether it is an EVALSHA of the idempotent
# send script, and the future its caller awaits.
_Queued = tuple[tuple[Any, ...], asyncio.Future[Any]]


_BATCH_CHUNK = 256  # messages per send_batch.lua call: bounds how long one call holds Redis


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message ready to write: its envelope, its encoding, and where it goes."""

    envelope: Envelope
    mailbox: str
    packed: bytes
    dedup_key: str | None  # set when the message has an idempotency key
    dedup_ttl_ms: int

    def command(self, scripts: Scripts) -> tuple[Any, ...]:
        """The command that appends this one message."""
        envelope = self.envelope
        if self.dedup_key is None:
            return ("XADD", self.mailbox, "*", "type", envelope.type, "sender", envelope.sender,
                    "env", self.packed)  # fmt: skip
        args = (envelope.id, self.dedup_ttl_ms, envelope.type, envelope.sender, self.packed)
        return ("EVALSHA", scripts.send_idempotent.sha, 2, self.dedup_key, self.mailbox, *args)


class Sender:
    """Builds envelopes for one sender agent and writes them."""

    def __init__(
        self,
        client: aioredis.Redis,
        keys: Keys,
        scripts: Scripts,
        *,
        sender: str,
        max_payload_bytes: int,
        dedup_ttl: float,
    ) -> None:
        self._client = client
        self._keys = keys
        self._scripts = scripts
        self._sender = sender
        self._max_payload_bytes = max_payload_bytes
        self._dedup_ttl_ms = int(dedup_ttl * 1000)
        self._queue: list[_Queued] = []
        self._in_flight = 0
        self._wake = asyncio.Event()
        self._mailboxes: dict[str, str] = {}  # validated recipients and their mailbox keys
        self._valid_types: set[str] = set()

    def build(
        self,
        to: str,
        type: str,
        data: Any,
        *,
        idempotency_key: str | None = None,
        headers: Mapping[str, str] | None = None,
        ttl: float | None = None,
        correlation_id: str | None = None,
        reply_to: str | None = None,
    ) -> Outgoing:
        """Validate and encode one message (raises before anything is written)."""
        # Recipients and types repeat; validating each once keeps regexes off the hot path.
        if to not in self._mailboxes:
            validate_agent_id(to)
        if type not in self._valid_types:
            _remember(self._valid_types, validate_name("message type", type))
        if ttl is not None and not ttl > 0:
            raise ValueError(f"ttl must be a positive number of seconds, got {ttl!r}")
        if idempotency_key is not None:
            validate_name("idempotency key", idempotency_key)
        created = now()
        envelope = Envelope(
            id=uuid7(),
            type=type,
            sender=self._sender,
            recipient=to,
            data=encode_data(data, self._max_payload_bytes),
            created_at=created,
            expires_at=None if ttl is None else created + ttl,
            correlation_id=correlation_id,
            reply_to=reply_to,
            headers=dict(headers) if headers else {},
            idempotency_key=idempotency_key,
        )
        mailbox = self._mailboxes.get(to)
        if mailbox is None:
            if len(self._mailboxes) > 10_000:  # bounded: producers may address many agents
                self._mailboxes.clear()
            mailbox = self._mailboxes[to] = self._keys.mailbox(to)
        dedup = None if idempotency_key is None else self._keys.dedup(to, idempotency_key)
        return Outgoing(envelope, mailbox, encode_envelope(envelope), dedup, self._dedup_ttl_ms)

    async def reply(
        self, request: Envelope, data: Any, *, error: BaseException | None, ttl: float
    ) -> None:
        """Write the answer to ``request`` into the requesting instance's reply stream.

        The stream is named from the request's sender and instance id (never taken verbatim
        from the envelope), so a forged envelope cannot make a handler write elsewhere.
        """
        if request.reply_to is None:
            return
        headers: dict[str, str] = {}
        payload = msgspec.Raw(b"\xc0")
        if error is None:
            try:
                payload = encode_data(data, self._max_payload_bytes)
            except (EncodeError, MessageTooLargeError) as exc:
                error = exc
        if error is not None:
            headers = {ERROR_TYPE_HEADER: type(error).__name__,
                       ERROR_MESSAGE_HEADER: str(error)[:2000]}  # fmt: skip
        envelope = Envelope(
            id=uuid7(), type="reply", sender=self._sender, recipient=request.sender,
            data=payload, created_at=now(), correlation_id=request.id, headers=headers,
        )  # fmt: skip
        key = self._keys.reply(request.sender, validate_agent_id(request.reply_to))
        await self._execute([("EVALSHA", self._scripts.reply.sha, 1, key, "reply", self._sender,
                               encode_envelope(envelope), int(ttl * 1000))])  # fmt: skip

    async def write(self, outgoing: Outgoing) -> str:
        """Write one message, coalescing with concurrent writes; returns its envelope id.

        If cancelled, the message may or may not have been written: retry with the same
        ``idempotency_key`` to be sure it is written once.
        """
        if self._in_flight or self._queue:
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self._queue.append((outgoing.command(self._scripts), future))
            self._wake.set()
            result = await future
        else:
            result = (await self._execute([outgoing.command(self._scripts)]))[0]
        return _envelope_id(outgoing, result)

    async def write_many(self, batch: Iterable[Outgoing]) -> list[str]:
        """Write a batch in one round trip; returns the envelope ids in order.

        Messages without an idempotency key are appended by one script call per mailbox (and
        per 256 messages), so a batch costs one request and a few replies, not one per message.
        """
        items = list(batch)
        if not items:
            return []
        keyed = [item for item in items if item.dedup_key is not None]
        commands = [item.command(self._scripts) for item in keyed]
        by_mailbox: dict[str, list[Outgoing]] = {}
        for item in items:
            if item.dedup_key is None:
                by_mailbox.setdefault(item.mailbox, []).append(item)
        batch_sha = self._scripts.send_batch.sha
        for mailbox, group in by_mailbox.items():
            for start in range(0, len(group), _BATCH_CHUNK):
                args: list[Any] = [self._sender]
                for item in group[start : start + _BATCH_CHUNK]:
                    args += (item.envelope.type, item.packed)
                commands.append(("EVALSHA", batch_sha, 1, mailbox, *args))
        results = await self._execute(commands)
        first_ids = {
            id(item): _envelope_id(item, r)
            for item, r in zip(keyed, results[: len(keyed)], strict=True)
        }
        return [first_ids.get(id(item), item.envelope.id) for item in items]

    async def run(self) -> None:
        """The flusher: writes everything queued since the last flush in one pipeline.

        Runs in the bus's task group; sends queued when it stops fail with ``BusClosedError``.
        """
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                queued, self._queue = self._queue, []
                if queued:
                    await self._flush(queued)
        finally:
            queued, self._queue = self._queue, []
            for _, future in queued:
                if not future.done():
                    future.set_exception(BusClosedError("the bus closed before the send"))

    async def _flush(self, queued: list[_Queued]) -> None:
        try:
            results = await self._execute([command for command, _ in queued])
        except Exception as exc:  # every waiting sender gets the failure
            for _, future in queued:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(queued, results, strict=True):
            if not future.done():
                future.set_result(result)

    async def _execute(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        self._in_flight += 1
        try:
            with map_redis_errors("sending a message"):
                results = await self._pipeline(commands)
                missing = [
                    i for i, r in enumerate(results) if isinstance(r, redis_errors.NoScriptError)
                ]
                if missing:
                    # Redis restarted or flushed its script cache. Those EVALSHAs did not run
                    # (the rest of the pipeline did), so loading the scripts and sending just
                    # them again cannot duplicate anything.
                    for script in self._scripts.all():
                        await self._client.script_load(script.script)
                    retried = await self._pipeline([commands[i] for i in missing])
                    for i, result in zip(missing, retried, strict=True):
                        results[i] = result
                for result in results:
                    if isinstance(result, Exception):
                        raise result
                return results
        finally:
            self._in_flight -= 1

    async def _pipeline(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        if len(commands) == 1:
            try:
                return [await self._client.execute_command(*commands[0])]  # type: ignore[no-untyped-call]
            except redis_errors.ResponseError as exc:
                return [exc]
        async with self._client.pipeline(transaction=False) as pipe:
            for command in commands:
                pipe.execute_command(*command)
            return list(await pipe.execute(raise_on_error=False))


def _remember(valid: set[str], name: str) -> None:
    if len(valid) > 10_000:  # bounded: a producer may address many agents over time
        valid.clear()
    valid.add(name)


def _envelope_id(outgoing: Outgoing, result: Any) -> str:
    if outgoing.envelope.idempotency_key is None:
        return outgoing.envelope.id
    # The idempotent script answers with the id of the first message sent under this key.
    return result.decode() if isinstance(result, bytes) else str(result)
