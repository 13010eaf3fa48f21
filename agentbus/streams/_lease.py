"""The instance lease: what "alive" means for reclaim, presence and the dashboard.

Each running bus is an instance with a key ``ns:{agent}:lease:{instance}`` that expires after the
lease TTL and is refreshed every TTL/3; the agent registry and the agent's instance table are
updated with it in the same round trip.
"""

from __future__ import annotations

import os
import socket
import time

import anyio
import msgspec
import redis.asyncio as aioredis

from .._keys import Keys
from ._redis import CONNECTION_ERRORS, Backoff, map_redis_errors


class InstanceInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What the instance table holds about one running instance."""

    instance: str
    agent: str
    since: float
    host: str
    pid: int
    metadata: dict[str, str] = msgspec.field(default_factory=dict)


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
        metadata: dict[str, str] | None = None,
    ) -> None:
        self._client = client
        self._keys = keys
        self.agent = agent
        self.instance = instance
        self.ttl = ttl
        self.info = InstanceInfo(
            instance=instance, agent=agent, since=time.time(), host=socket.gethostname(),
            pid=os.getpid(), metadata=dict(metadata or {}),
        )  # fmt: skip
        self.refreshed_at = 0.0

    async def refresh(self) -> None:
        """Set the lease and the registry entries in one round trip."""
        seen = time.time()
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.set(self._keys.lease(self.agent, self.instance), "1", px=int(self.ttl * 1000))
            pipe.hset(self._keys.instances(self.agent), self.instance, _json.encode(self.info))
            entry = RegistryEntry(agent=self.agent, last_seen=seen)
            pipe.hset(self._keys.registry, self.agent, _json.encode(entry))
            await pipe.execute()
        self.refreshed_at = seen

    async def acquire(self) -> None:
        with map_redis_errors("starting the instance lease"):
            await self.refresh()

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
            pipe.hdel(self._keys.instances(self.agent), self.instance)
            await pipe.execute()
