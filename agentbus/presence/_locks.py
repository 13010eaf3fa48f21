"""Heartbeat locks: one holder at a time, renewed while held, fenced, and safe when lost.

``SET NX PX`` with a random token; only the holder extends or releases (Lua compare-and-*). Every
acquisition gets a fencing token from a per-lock counter (``INCR``, kept in the AOF, so it keeps
increasing across a graceful Redis restart). While the body runs, a task renews the lock every
TTL/3. When renewal cannot be confirmed before ``TTL - safety margin`` the body is cancelled and
the ``async with`` raises :class:`LockLostError` — before another holder can get the lock.

A write that must not come from a stale holder carries the fencing token; :func:`fenced_write`
refuses a token older than one already seen for that name.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import anyio
import msgspec
import redis.asyncio as aioredis
from anyio.abc import TaskGroup

from .._errors import LockLostError, LockNotAcquiredError, StaleFencingTokenError
from .._ids import validate_name
from .._keys import Keys
from ..streams._redis import CONNECTION_ERRORS, map_redis_errors
from ..streams._scripts import load_script

_json = msgspec.json.Encoder()


class LockScripts:
    def __init__(self, client: aioredis.Redis) -> None:
        self.acquire = load_script(client, "lock_acquire", __package__)
        self.extend = load_script(client, "lock_extend", __package__)
        self.release = load_script(client, "lock_release", __package__)
        self.fenced_write = load_script(client, "fenced_write", __package__)


def validate_ttl(ttl: float) -> float:
    if not isinstance(ttl, (int, float)) or isinstance(ttl, bool) or not ttl > 0:
        raise ValueError(f"ttl must be a positive number of seconds, got {ttl!r}")
    if ttl < 0.1:
        raise ValueError(f"ttl {ttl!r} is too short to renew in time; use at least 0.1 s")
    return float(ttl)


def safety_margin(ttl: float) -> float:
    """How long before the TTL runs out an unconfirmed holder stops (clock drift, scheduling)."""
    return min(1.0, ttl / 4)


class LockLease:
    """A held lock: ``fencing_token`` strictly increases with every acquisition of the name."""

    def __init__(self, name: str, token: str, fencing_token: int, ttl: float) -> None:
        self.name = name
        self.token = token
        self.fencing_token = fencing_token
        self.ttl = ttl
        self.lost = False

    def __repr__(self) -> str:
        return f"LockLease(name={self.name!r}, fencing_token={self.fencing_token})"


class Lock:
    """``async with Lock(...) as lease``: hold a named lock for the body.

    Raises:
        LockNotAcquiredError: not acquired (``blocking=False``, or not within ``timeout``).
        LockLostError: renewal could not be confirmed in time; the body was cancelled.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        keys: Keys,
        scripts: LockScripts,
        *,
        scope: str,
        name: str,
        ttl: float,
        holder: str,
        blocking: bool = True,
        timeout: float | None = None,
    ) -> None:
        self._client = client
        self._scripts = scripts
        self.name = validate_name("lock name", name)
        self.ttl = validate_ttl(ttl)
        if timeout is not None and timeout < 0:
            raise ValueError(f"timeout must be 0 or more seconds, got {timeout!r}")
        self._blocking = blocking
        self._timeout = timeout
        self._holder = holder
        self._keys = [keys.lock(scope, name), keys.fence(scope, name), keys.locks(scope)]
        self._lease: LockLease | None = None
        self._tg: TaskGroup | None = None
        self._body = anyio.CancelScope()

    async def acquire(self) -> LockLease:
        """Take the lock (waiting as configured); the lease is not renewed by this call."""
        token = os.urandom(16).hex()
        deadline = None if self._timeout is None else time.monotonic() + self._timeout
        ttl_ms = int(self.ttl * 1000)
        while True:
            with map_redis_errors(f"acquiring lock {self.name!r}"):
                fence, wait_ms = await self._scripts.acquire(
                    keys=self._keys,
                    args=[token, ttl_ms, self.name, self._holder, int(time.time() * 1000)],
                )
            if int(fence) > 0:
                self._lease = LockLease(self.name, token, int(fence), self.ttl)
                return self._lease
            now = time.monotonic()
            if not self._blocking or (deadline is not None and now >= deadline):
                raise LockNotAcquiredError(
                    f"lock {self.name!r} is held by another holder"
                    + ("" if not self._blocking else f" (waited {self._timeout} s)")
                )
            # Poll again soon, or when the holder's lease would have run out.
            pause = min(max(int(wait_ms), 1) / 1000, 0.05)
            if deadline is not None:
                pause = min(pause, max(0.0, deadline - now))
            await anyio.sleep(pause)

    async def release(self) -> bool:
        """Release if still held by this holder; True when it was."""
        if self._lease is None:
            return False
        lease, self._lease = self._lease, None
        with map_redis_errors(f"releasing lock {self.name!r}"):
            released = await self._scripts.release(
                keys=[self._keys[0], self._keys[2]], args=[lease.token, self.name]
            )
        return bool(released)

    async def extend(self) -> bool:
        """Renew the TTL if still the holder; False when the lock was lost."""
        if self._lease is None:
            return False
        extended = await self._scripts.extend(
            keys=[self._keys[0], self._keys[2]],
            args=[self._lease.token, int(self.ttl * 1000), self.name, int(time.time() * 1000)],
        )
        return bool(extended)

    async def _keep(self, lease: LockLease, confirmed_at: float) -> None:
        """Renew every TTL/3; cancel the body when renewal is unconfirmed at TTL - margin."""
        deadline = confirmed_at + self.ttl - safety_margin(self.ttl)
        next_renewal = confirmed_at + self.ttl / 3
        while True:
            await anyio.sleep(max(0.0, next_renewal - time.monotonic()))
            sent_at = time.monotonic()
            extended = False
            with anyio.move_on_after(max(0.0, deadline - sent_at)):
                while True:
                    try:
                        extended = await self.extend()
                        break
                    except CONNECTION_ERRORS:
                        await anyio.sleep(min(0.1, self.ttl / 20))
            if not extended:
                lease.lost = True
                self._body.cancel()
                return
            deadline = sent_at + self.ttl - safety_margin(self.ttl)
            next_renewal = sent_at + self.ttl / 3

    async def __aenter__(self) -> LockLease:
        lease = await self.acquire()
        confirmed_at = time.monotonic()
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self._keep, lease, confirmed_at)
        self._body.__enter__()
        return lease

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        lease = self._lease
        swallowed = self._body.__exit__(exc_type, exc, tb)
        assert self._tg is not None
        self._tg.cancel_scope.cancel()
        await self._tg.__aexit__(None, None, None)
        with anyio.move_on_after(2, shield=True):
            try:
                await self.release()
            except Exception:  # best effort: the lock expires by itself
                pass
        if lease is not None and lease.lost:
            raise LockLostError(
                f"lock {self.name!r} (fencing token {lease.fencing_token}) could not be renewed "
                f"before its TTL of {self.ttl} s ran out; the body was cancelled"
            ) from exc
        return bool(swallowed)


async def fenced_write(
    client: aioredis.Redis,
    keys: Keys,
    scripts: LockScripts,
    *,
    scope: str,
    name: str,
    token: int,
    data: Mapping[str, Any],
) -> None:
    """Write ``data`` under ``name`` unless a newer fencing token was already seen there.

    Raises:
        StaleFencingTokenError: ``token`` is older than the newest token seen for ``name``.
    """
    validate_name("fenced name", name)
    args: list[Any] = [int(token)]
    for field, value in data.items():
        validate_name("field", field)
        args += [field, _json.encode(value)]
    with map_redis_errors(f"fenced write to {name!r}"):
        written, seen = await scripts.fenced_write(keys=[keys.fenced(scope, name)], args=args)
    if not int(written):
        raise StaleFencingTokenError(
            f"write to {name!r} refused: fencing token {token} is older than {int(seen)}, which "
            "was already seen (this holder lost its lock to a newer one)"
        )


async def read_fenced(
    client: aioredis.Redis, keys: Keys, *, scope: str, name: str
) -> tuple[int, dict[str, Any]]:
    """The newest fencing token seen for ``name`` and the data written with it."""
    with map_redis_errors(f"reading fenced {name!r}"):
        raw = await client.hgetall(keys.fenced(scope, name))
    data: dict[str, Any] = {}
    token = 0
    for key, value in raw.items():
        field = key.decode() if isinstance(key, bytes) else str(key)
        if field == "~token":
            token = int(value)
        else:
            data[field] = msgspec.json.decode(value)
    return token, data
