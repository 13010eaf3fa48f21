"""Running handlers (``serve()``) and manual consumption (``messages()``)."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio

from .._errors import BackendError
from ._consumer import MailboxConsumer
from ._message import Message

logger = logging.getLogger("agentbus")

Handler = Callable[[Message], Awaitable[Any]]
EffectKey = Callable[[Message], str]


@dataclass(frozen=True, slots=True)
class HandlerSpec:
    type: str
    fn: Handler
    name: str
    effect_key: EffectKey | None = None


class HandlerPool:
    """``concurrency`` workers that take messages from one queue and run their handlers.

    A worker drains the queue without yielding while handlers do not suspend, so a batch of quick
    handlers costs no task switch per message; handlers that wait on I/O let the other workers
    (woken when the batch arrived) take the next messages.
    """

    def __init__(
        self, consumer: MailboxConsumer, handlers: dict[str, HandlerSpec], concurrency: int
    ) -> None:
        self._consumer = consumer
        self._handlers = handlers
        self._concurrency = concurrency
        self._queue: deque[Message] = deque()
        self._idle: list[asyncio.Future[None]] = []

    def put(self, batch: list[Message]) -> None:
        self._queue.extend(batch)
        wake = min(len(batch), len(self._idle))
        for future in self._idle[-wake:]:
            if not future.done():
                future.set_result(None)
        del self._idle[len(self._idle) - wake :]

    async def run(self) -> None:
        async with anyio.create_task_group() as tg:
            for _ in range(self._concurrency):
                tg.start_soon(self._worker)

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        queue = self._queue
        while True:
            while queue:
                message = queue.popleft()
                try:
                    await self.handle(message)
                except BackendError as exc:
                    # Settling failed (Redis went away); the entry is still pending and the
                    # reader re-reads it after reconnecting.
                    logger.warning("could not settle %r: %s", message, exc)
            idle = loop.create_future()
            self._idle.append(idle)
            await idle

    async def handle(self, message: Message) -> None:
        consumer = self._consumer
        spec = self._handlers.get(message.type)
        if spec is None:
            await consumer.dead_letter(message, reason="no-handler")
            return
        effect = None
        if spec.effect_key is not None:
            effect = consumer.keys.effect(consumer.agent, spec.effect_key(message))
            if await consumer.client.exists(effect):
                # The effect was applied by an earlier delivery that died before its ack.
                message.settled = True
                consumer.ack(message)
                return
        try:
            result = await spec.fn(message)
        except Exception as exc:
            if message.settled:
                logger.exception("handler %s raised after settling %r", spec.name, message)
            elif message.is_request:
                # The requester learns about the failure now instead of waiting for a timeout;
                # requests are not retried (the requester has a deadline of its own).
                message.settled = True
                consumer.ack(message)
                await consumer.reply(message, None, error=exc)
            else:
                logger.warning("handler %s failed on %r: %r", spec.name, message, exc)
                message.settled = True
                await consumer.retry_or_dead_letter(
                    message, error=exc, delay=None, handler=spec.name
                )
            return
        try:
            if message.is_request and not message.settled:
                await consumer.reply(message, result)
        finally:
            # The handler ran, so the message is done even if its reply could not be written
            # (the requester then times out).
            if not message.settled:
                message.settled = True
                consumer.ack(message, effect)


class MessageStream:
    """The async iterator ``bus.messages()`` returns.

    Messages are prefetched (up to the bus's prefetch limit of unsettled messages); settle each
    with ``ack()`` or ``nack()``. ``aclose()`` stops reading; unsettled messages are delivered
    again later.
    """

    def __init__(self, stop: Callable[[], None]) -> None:
        self._buffer: deque[Message] = deque()
        self._ready = asyncio.Event()
        self._closed = False
        self._stop = stop
        self._finished = asyncio.Event()  # the reading task ended (acks flushed)
        self.failure: BaseException | None = None

    def put(self, batch: list[Message]) -> None:
        self._buffer.extend(batch)
        self._ready.set()

    def finish(self, failure: BaseException | None = None) -> None:
        self.failure = failure
        self._closed = True
        self._ready.set()
        self._finished.set()

    def __aiter__(self) -> MessageStream:
        return self

    async def __anext__(self) -> Message:
        while not self._buffer:
            if self._closed:
                if self.failure is not None:
                    raise self.failure
                raise StopAsyncIteration
            self._ready.clear()
            await self._ready.wait()
        return self._buffer.popleft()

    async def aclose(self) -> None:
        """Stop reading and wait until the reader has stopped (so the bus can consume again)."""
        if not self._closed:
            self._closed = True
            self._buffer.clear()
            self._ready.set()
            self._stop()
        await self._finished.wait()

    async def __aenter__(self) -> MessageStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
