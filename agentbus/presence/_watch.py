"""``watch_presence()``: a snapshot first, then diffs — a late watcher misses nothing.

The watcher subscribes to the diff channel *before* it reads the snapshot, then drops diffs the
snapshot already contains (version <= snapshot version). Pub/sub can lose messages (a reconnect):
a gap in the versions makes the watcher yield a fresh snapshot instead of guessing. The watcher
also sweeps (at most once a second family-wide), so a dashboard alone notices dead instances.
"""

from __future__ import annotations

import anyio
import redis.asyncio as aioredis
from redis.asyncio.client import PubSub

from .._keys import Keys
from ..streams._redis import CONNECTION_ERRORS, Backoff
from ._presence import (
    SWEEP_INTERVAL,
    PresenceDiff,
    PresenceScripts,
    PresenceSnapshot,
    decode_diff,
    online,
    sweep,
)

PresenceUpdate = PresenceSnapshot | PresenceDiff


class PresenceWatch:
    """Async iterator of :class:`PresenceSnapshot` (first, and after a gap) and
    :class:`PresenceDiff` (in version order). Use ``async with`` or call ``aclose()``."""

    def __init__(self, client: aioredis.Redis, keys: Keys, *, sweep: bool = True) -> None:
        self._client = client
        self._keys = keys
        self._scripts = PresenceScripts(client)
        self._sweep = sweep
        self._pubsub: PubSub | None = None
        self._version: int | None = None  # None: the next item is a snapshot
        self._closed = False

    async def __aenter__(self) -> PresenceWatch:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __aiter__(self) -> PresenceWatch:
        return self

    async def __anext__(self) -> PresenceUpdate:
        backoff = Backoff()
        while not self._closed:
            try:
                update = await self._next()
                backoff.reset()
            except CONNECTION_ERRORS:
                await self._drop_pubsub()
                self._version = None
                await anyio.sleep(backoff.next_delay())
                continue
            if update is not None:
                return update
        raise StopAsyncIteration

    async def _next(self) -> PresenceUpdate | None:
        if self._pubsub is None:
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            self._pubsub = pubsub
            await pubsub.subscribe(self._keys.presence_diffs)
        if self._version is None:
            snap = await online(self._client, self._keys)
            self._version = snap.version
            return snap
        raw = await self._pubsub.get_message(timeout=SWEEP_INTERVAL)
        if raw is None:
            if self._sweep:
                await sweep(self._client, self._keys, self._scripts)
            return None
        if raw.get("type") != "message":
            return None
        diff = decode_diff(raw["data"])
        if diff.version <= self._version:
            return None  # already in the snapshot
        if diff.version != self._version + 1:
            self._version = None  # a diff went missing: start again from a snapshot
            return None
        self._version = diff.version
        return diff

    async def _drop_pubsub(self) -> None:
        if self._pubsub is not None:
            pubsub, self._pubsub = self._pubsub, None
            with anyio.move_on_after(2, shield=True):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def aclose(self) -> None:
        self._closed = True
        await self._drop_pubsub()


def watch_presence(client: aioredis.Redis, keys: Keys, *, sweep: bool = True) -> PresenceWatch:
    """Watch presence: ``async for update in watch_presence(client, keys)``."""
    return PresenceWatch(client, keys, sweep=sweep)
