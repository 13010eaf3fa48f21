"""Heartbeat locks: one holder at a time, renewed while held, fenced, and safe when lost.

``SET NX PX`` with a random token; only the holder extends or releases (Lua compare-and-*). Every
acquisition gets a fencing token from a per-lock counter (``INCR``, kept in the AOF, so it keeps
increasing across a graceful Redis restart). While the body runs, the bus's :class:`LockKeeper`
renews the lock every TTL/3. When renewal cannot be confirmed before ``TTL - safety margin`` the
body is cancelled and the ``async with`` raises :class:`LockLostError` — before another holder can
get the lock.

A write that must not come from a stale holder carries the fencing token; :func:`fenced_write`
refuses a token older than one already seen for that name, and storage writes take
``fence=lease.fence`` (a :class:`~agentbus.storage.Fence` in the lock's scope: the family's for a
family-wide lock, whose tokens come from one counter, else the agent's).
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

import anyio
import msgspec
import redis.asyncio as aioredis
import redis.exceptions as redis_errors

from .._errors import LockLostError, LockNotAcquiredError, StaleFencingTokenError
from .._ids import validate_name
from .._keys import FAMILY, Keys
from ..storage._fence import Fence
from ..streams._direct_line import DirectLine
from ..streams._redis import CONNECTION_ERRORS, backend_error, map_redis_errors
from ..streams._scripts import load_script

_json = msgspec.json.Encoder()


class LockScripts:
    """The lock scripts of one bus, run on a :class:`DirectLine` (a lock pair is two short
    round trips, so the client's per-command work is a large share of its cost)."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._line = DirectLine(client)
        self._acquire = load_script(client, "lock_acquire", __package__)
        self._extend = load_script(client, "lock_extend", __package__)
        self._release = load_script(client, "lock_release", __package__)
        self._fenced_write = load_script(client, "fenced_write", __package__)

    async def acquire(self, keys: Sequence[str], args: Sequence[Any]) -> Any:
        return await self._line.run(self._acquire, keys, args)

    async def extend(self, keys: Sequence[str], args: Sequence[Any]) -> Any:
        return await self._line.run(self._extend, keys, args)

    async def release(self, keys: Sequence[str], args: Sequence[Any]) -> Any:
        return await self._line.run(self._release, keys, args)

    async def fenced_write(self, keys: Sequence[str], args: Sequence[Any]) -> Any:
        return await self._line.run(self._fenced_write, keys, args)

    async def aclose(self) -> None:
        await self._line.aclose()


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
    """A held lock: ``fencing_token`` strictly increases with every acquisition of the name.

    ``family`` is True for a family-wide lock (one token counter for the whole family), False
    for a lock scoped to one agent (a counter of that agent's own).
    """

    def __init__(
        self, name: str, token: str, fencing_token: int, ttl: float, *, family: bool = False
    ) -> None:
        self.name = name
        self.token = token
        self.fencing_token = fencing_token
        self.ttl = ttl
        self.family = family
        self.lost = False

    @property
    def fence(self) -> Fence:
        """The fence for storage writes made under this lock, in the lock's scope:
        ``await bus.storage.tasks.update_task(task_id, ..., fence=lease.fence)`` is refused
        (``StaleWriteError``) once a newer holder has written with its token — any agent's
        holder for a family-wide lock, this agent's for its own."""
        return Fence(self.name, self.fencing_token, family=self.family)

    def __repr__(self) -> str:
        family = ", family=True" if self.family else ""
        return f"LockLease(name={self.name!r}, fencing_token={self.fencing_token}{family})"


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
        keeper: LockKeeper,
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
        self._keys = [keys.lock(scope, name), keys.locks(scope)]
        self._family = scope == FAMILY  # whose token counter: the family's or the agent's
        self._keeper = keeper
        self._lease: LockLease | None = None
        self._body: anyio.CancelScope | None = None  # the body's scope, made on entry
        self._sent_at = 0.0  # monotonic time the successful acquire was sent
        self._deadline = 0.0  # cancel the body if no renewal is confirmed by then
        self._next_renewal = 0.0
        self._renewal: anyio.CancelScope | None = None  # of the renewal in flight
        self._acquired_ms = 0

    async def acquire(self) -> LockLease:
        """Take the lock (waiting as configured); the lease is not renewed by this call."""
        token = os.urandom(16).hex()
        deadline = None if self._timeout is None else time.monotonic() + self._timeout
        ttl_ms = int(self.ttl * 1000)
        while True:
            self._sent_at = time.monotonic()  # the TTL runs from no earlier than this
            self._acquired_ms = int(time.time() * 1000)
            entry = self._entry(self._acquired_ms, ttl_ms)
            try:
                fence, wait_ms = await self._scripts.acquire(
                    keys=self._keys, args=[token, ttl_ms, self.name, entry]
                )
            except redis_errors.RedisError as exc:
                raise backend_error(exc, f"acquiring lock {self.name!r}") from exc
            if int(fence) > 0:
                self._lease = LockLease(self.name, token, int(fence), self.ttl, family=self._family)
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
        try:
            released = await self._scripts.release(keys=[self._keys[0]], args=[lease.token])
        except redis_errors.RedisError as exc:
            raise backend_error(exc, f"releasing lock {self.name!r}") from exc
        return bool(released)

    async def _release_quietly(self) -> None:
        try:
            await self.release()
        except Exception:  # best effort: the lock expires by itself
            pass

    async def extend(self) -> bool:
        """Renew the TTL if still the holder; False when the lock was lost."""
        if self._lease is None:
            return False
        ttl_ms = int(self.ttl * 1000)
        extended = await self._scripts.extend(
            keys=[self._keys[0]],
            args=[self._lease.token, ttl_ms, self._entry(self._acquired_ms, ttl_ms)],
        )
        return bool(extended)

    def _entry(self, acquired_ms: int, ttl_ms: int) -> bytes:
        """What the dashboard shows about the holder; stored after the token in the lock."""
        expires_ms = int(time.time() * 1000) + ttl_ms
        return _json.encode(
            {"holder": self._holder, "acquired_at": acquired_ms, "expires_at": expires_ms}
        )

    def renewal_due(self) -> float:
        """When the keeper should renew next (monotonic seconds)."""
        return self._next_renewal

    async def renew(self, scope: anyio.CancelScope) -> None:
        """One renewal, run by the keeper; cancels the body when unconfirmed at TTL - margin.

        ``scope`` is cancelled when the body ends first.
        """
        with scope:
            sent_at = time.monotonic()
            extended = False
            with anyio.move_on_after(max(0.0, self._deadline - sent_at)):
                while True:
                    try:
                        extended = await self.extend()
                        break
                    except (*CONNECTION_ERRORS, redis_errors.RedisError):
                        await anyio.sleep(min(0.1, self.ttl / 20))  # unconfirmed: try again
            if not extended:
                self.lose()
                return
            self._deadline = sent_at + self.ttl - safety_margin(self.ttl)
            self._next_renewal = sent_at + self.ttl / 3
        self._renewal = None
        if not scope.cancel_called:
            self._keeper.due(self._next_renewal)

    def lose(self) -> None:
        """The lock can no longer be kept: mark the lease lost and cancel the body."""
        if self._lease is not None:
            self._lease.lost = True
        if self._body is not None:
            self._body.cancel()
        self._keeper.discard(self)

    async def __aenter__(self) -> LockLease:
        lease = await self.acquire()
        self._deadline = self._sent_at + self.ttl - safety_margin(self.ttl)
        self._next_renewal = self._sent_at + self.ttl / 3
        self._body = anyio.CancelScope()
        self._body.__enter__()
        self._keeper.add(self)
        return lease

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        lease = self._lease
        assert self._body is not None
        swallowed = self._body.__exit__(exc_type, exc, tb)
        self._keeper.discard(self)
        if self._renewal is not None:
            self._renewal.cancel()
        lost = lease is not None and lease.lost  # decided before any await: only the body counts
        if exc_type is not None and issubclass(exc_type, asyncio.CancelledError):
            # Being cancelled: release anyway, shielded and bounded.
            with anyio.move_on_after(2, shield=True):
                await self._release_quietly()
        else:
            await self._release_quietly()
        if lease is not None and lost:
            raise LockLostError(
                f"lock {self.name!r} (fencing token {lease.fencing_token}) could not be renewed "
                f"before its TTL of {self.ttl} s ran out; the body was cancelled"
            ) from exc
        return bool(swallowed)


class LockKeeper:
    """Renews every lock one bus holds, from one task in the bus's task group.

    Entering a lock registers it and leaving unregisters it — no task per lock, so a short body
    costs its two round trips and little else. The keeper sleeps until the earliest renewal is
    due and runs each due renewal in a task of its own, so a slow renewal never delays another
    lock's deadline. When the keeper stops (the bus closes), every body it kept is cancelled:
    nothing renews those locks any more.
    """

    IDLE = 1.0
    """Seconds the keeper sleeps when nothing is due sooner."""

    def __init__(self) -> None:
        self._held: set[Lock] = set()
        self._wake: anyio.Event | None = None
        self._wake_at = math.inf  # when the sleeping keeper wakes by itself
        self._stopped = False

    def add(self, lock: Lock) -> None:
        if self._stopped:
            lock.lose()
            return
        self._held.add(lock)
        self.due(lock.renewal_due())

    def discard(self, lock: Lock) -> None:
        self._held.discard(lock)

    def due(self, at: float) -> None:
        """A renewal is due ``at``: wake the keeper if it would sleep past that."""
        if at < self._wake_at and self._wake is not None:
            self._wake.set()

    async def run(self) -> None:
        try:
            async with anyio.create_task_group() as tg:
                while True:
                    now = time.monotonic()
                    wake_at = now + self.IDLE
                    for lock in list(self._held):
                        if lock._renewal is not None:
                            continue  # being renewed; it reports its next renewal when done
                        if lock.renewal_due() <= now:
                            lock._renewal = anyio.CancelScope()
                            tg.start_soon(lock.renew, lock._renewal)
                        else:
                            wake_at = min(wake_at, lock.renewal_due())
                    self._wake, self._wake_at = anyio.Event(), wake_at
                    with anyio.move_on_after(wake_at - now):
                        await self._wake.wait()
        finally:
            self._stopped = True
            self._wake, self._wake_at = None, math.inf
            for lock in list(self._held):
                lock.lose()


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
