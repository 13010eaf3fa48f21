"""Pub/sub events: best-effort notifications (anything that must arrive goes through a mailbox).

Topics are dotted names (``task.updated``); subscriptions take glob patterns (``task.*``). An
event is a msgpack :class:`Event` on channel ``ns:events:{topic}``. A subscription survives a
Redis restart: it reconnects with backoff and subscribes again (events published while it was
disconnected are not seen: pub/sub keeps nothing).
"""

from __future__ import annotations

import time
from typing import Any

import anyio
import msgspec
import redis.asyncio as aioredis
from redis.asyncio.client import PubSub

from .._errors import DecodeError
from .._ids import validate_name
from .._keys import Keys
from ._envelope import encode_data
from ._redis import CONNECTION_ERRORS, Backoff, map_redis_errors


class Event(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """One published event."""

    v: int = 1
    topic: str
    sender: str
    time: float
    data: msgspec.Raw = msgspec.Raw(b"\xc0")

    def decoded(self) -> Any:
        return msgspec.msgpack.decode(self.data)


class ReceivedEvent(msgspec.Struct, frozen=True, kw_only=True):
    """What a subscriber gets: the topic, who published it, when, and the decoded data."""

    topic: str
    sender: str
    time: float
    data: Any


_event_decoder = msgspec.msgpack.Decoder(Event)


def validate_pattern(pattern: str) -> str:
    if not isinstance(pattern, str) or not pattern or len(pattern) > 128 or " " in pattern:
        raise ValueError(f"invalid topic pattern {pattern!r}: 1-128 characters without spaces")
    return pattern


async def publish(
    client: aioredis.Redis, keys: Keys, sender: str, topic: str, data: Any, max_bytes: int
) -> int:
    """Publish; returns how many subscribers received it (0 is not an error)."""
    validate_name("topic", topic)
    event = Event(topic=topic, sender=sender, time=time.time(), data=encode_data(data, max_bytes))
    with map_redis_errors("publishing an event"):
        receivers: int = await client.publish(keys.events(topic), msgspec.msgpack.encode(event))
    return receivers


class Subscription:
    """An async iterator of :class:`ReceivedEvent` for some topic patterns.

    Use as ``async with bus.subscribe("task.*") as events: async for event in events: ...``.
    """

    def __init__(self, client: aioredis.Redis, keys: Keys, patterns: tuple[str, ...]) -> None:
        if not patterns:
            raise ValueError("subscribe() needs at least one topic pattern, e.g. 'task.*'")
        self._client = client
        self._prefix = keys.events_prefix
        self._channels = [keys.events(validate_pattern(p)) for p in patterns]
        self._pubsub: PubSub | None = None
        self._closed = False
        self.reconnects = 0
        self.undecodable = 0

    async def __aenter__(self) -> Subscription:
        with map_redis_errors("subscribing"):
            await self._connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def _connect(self) -> None:
        pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.psubscribe(*self._channels)
        except BaseException:
            await pubsub.aclose()  # type: ignore[no-untyped-call]
            raise
        self._pubsub = pubsub

    async def _reconnect(self) -> None:
        backoff = Backoff()
        if self._pubsub is not None:
            with anyio.move_on_after(2, shield=True):
                await self._pubsub.aclose()  # type: ignore[no-untyped-call]
            self._pubsub = None
        while not self._closed:
            try:
                await self._connect()
                self.reconnects += 1
                return
            except CONNECTION_ERRORS:
                await anyio.sleep(backoff.next_delay())

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> ReceivedEvent:
        while not self._closed:
            if self._pubsub is None:
                await self._reconnect()
                continue
            try:
                raw = await self._pubsub.get_message(timeout=1.0)
            except CONNECTION_ERRORS:
                await self._reconnect()
                continue
            if raw is None or raw.get("type") != "pmessage":
                continue
            try:
                event = _event_decoder.decode(raw["data"])
                return ReceivedEvent(
                    topic=event.topic, sender=event.sender, time=event.time, data=event.decoded()
                )
            except (msgspec.DecodeError, DecodeError):
                self.undecodable += 1  # somebody PUBLISHed by hand; skip it
        raise StopAsyncIteration

    async def aclose(self) -> None:
        self._closed = True
        if self._pubsub is not None:
            pubsub, self._pubsub = self._pubsub, None
            with anyio.move_on_after(2, shield=True):
                await pubsub.aclose()  # type: ignore[no-untyped-call]
