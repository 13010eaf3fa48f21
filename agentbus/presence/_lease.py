"""The instance lease: what "alive" means for reclaim, presence and the dashboard.

Each running bus is an instance with a key ``ns:{agent}:lease:{instance}`` that expires after the
lease TTL and is refreshed every TTL/3. The same round trip keeps the agent's set of live
instances, the agent registry and the presence index up to date (a first refresh is a join).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping

import anyio
import msgspec
import redis.asyncio as aioredis
import redis.exceptions as redis_errors

from .._keys import Keys
from ..streams._redis import CONNECTION_ERRORS, Backoff, map_redis_errors
from ._presence import InstanceInfo, PresenceScripts, leave, touch_args


class RegistryEntry(msgspec.Struct, frozen=True, kw_only=True):
    """What the agent registry holds about one agent seen on the bus."""

    agent: str
    last_seen: float


_json = msgspec.json.Encoder()


class InstanceLease:
    def __init__(
        self,
        client: aioredis.Redis,
        keys: Keys,
        *,
        agent: str,
        instance: str,
        ttl: float,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        self._client = client
        self._keys = keys
        self._scripts = PresenceScripts(client)
        self.agent = agent
        self.instance = instance
        self.ttl = ttl
        now = time.time()
        self.info = InstanceInfo(
            agent=agent, instance=instance, since=now, last_seen=now, ttl=ttl,
            host=socket.gethostname(), pid=os.getpid(), metadata=dict(metadata or {}),
        )  # fmt: skip

    async def refresh(self, *, changed: bool = False) -> None:
        """Renew the lease and everything that reports it, in one round trip."""
        now = time.time()
        self.info = msgspec.structs.replace(self.info, last_seen=now)
        expiry_ms = int((now + self.ttl) * 1000)
        keys = self._keys
        script_keys, script_args = touch_args(keys, self.info, changed=changed)
        for attempt in (1, 2):
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.set(keys.lease(self.agent, self.instance), "1", px=int(self.ttl * 1000))
                pipe.zadd(keys.instances(self.agent), {self.instance: expiry_ms})
                pipe.zremrangebyscore(keys.instances(self.agent), "-inf", int(now * 1000))
                entry = RegistryEntry(agent=self.agent, last_seen=now)
                pipe.hset(keys.registry, self.agent, _json.encode(entry))
                pipe.evalsha(self._scripts.touch.sha, 3, *script_keys, *script_args)
                results = await pipe.execute(raise_on_error=False)
            if not isinstance(results[-1], redis_errors.NoScriptError) or attempt == 2:
                break
            # Redis restarted and lost its script cache: the touch did not run; load and redo.
            await self._client.script_load(self._scripts.touch.script)
        for result in results:
            if isinstance(result, Exception):
                raise result

    async def acquire(self) -> None:
        with map_redis_errors("starting the instance lease"):
            await self.refresh()

    async def update(self, metadata: Mapping[str, str]) -> None:
        """Replace the instance's metadata; watchers get an ``update`` diff."""
        self.info = msgspec.structs.replace(self.info, metadata=dict(metadata))
        with map_redis_errors("updating presence"):
            await self.refresh(changed=True)

    async def run(self) -> None:
        """Refresh every TTL/3; after a failure retry with backoff, never slower than TTL/3."""
        backoff = Backoff(cap=self.ttl / 3)
        while True:
            await anyio.sleep(self.ttl / 3)
            while True:
                try:
                    await self.refresh()
                    backoff.reset()
                    break
                except CONNECTION_ERRORS:
                    await anyio.sleep(backoff.next_delay())

    async def release(self) -> None:
        """Leave at once (a graceful close does not wait for the TTL)."""
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.delete(self._keys.lease(self.agent, self.instance))
            pipe.zrem(self._keys.instances(self.agent), self.instance)
            await pipe.execute()
        await leave(self._client, self._keys, self._scripts, self.agent, self.instance)
