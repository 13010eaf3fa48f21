"""``run_heartbeat``: a periodic job that runs at most once per window across all processes.

Windows are ``floor(redis TIME / every)`` — one clock for every process. At each boundary every
runner tries to claim the window with one Lua script (the window number only moves forward, so a
window is claimed once); the winner gets a fencing token, marks the run as running (a key with a
TTL it renews), runs ``fn`` and records the outcome. A run still going at the next boundary makes
that window a skip, so windows never pile up; a runner that dies mid-run stops renewing, its
running key expires, and the next window runs elsewhere. ``fn``'s storage writes take
``fence=run.fence`` (in the heartbeat's scope, like a lock's ``lease.fence``).
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import msgspec
import redis.asyncio as aioredis

from .._ids import validate_name
from .._keys import FAMILY, Keys
from ..storage._fence import Fence
from ..streams._redis import CONNECTION_ERRORS, Backoff, map_redis_errors
from ..streams._scripts import load_script

logger = logging.getLogger("agentbus")


class HeartbeatRun(msgspec.Struct, frozen=True, kw_only=True):
    """One run: what ``fn`` receives, and (with outcome) what the dashboard reads.

    ``family`` is True for a family-wide heartbeat (one token counter for the whole family).
    """

    name: str
    window: int
    fencing_token: int
    runner: str
    started_at: float
    finished_at: float | None = None
    duration: float | None = None
    outcome: str | None = None  # "ok", "error: <type>: <message>" or "cancelled"
    family: bool = False  # new: records written before it existed read as False

    @property
    def fence(self) -> Fence:
        """The fence for the run's storage writes, in the heartbeat's scope:
        ``update_task(task_id, ..., fence=run.fence)`` is refused (``StaleWriteError``) once a
        later run has written with its token."""
        return Fence(self.name, self.fencing_token, family=self.family)


_json = msgspec.json.Encoder()
_run_decoder = msgspec.json.Decoder(HeartbeatRun)


class HeartbeatScripts:
    def __init__(self, client: aioredis.Redis) -> None:
        self.claim = load_script(client, "heartbeat_claim", __package__)
        self.keep = load_script(client, "heartbeat_keep", __package__)
        self.finish = load_script(client, "heartbeat_finish", __package__)


def running_ttl(every: float) -> float:
    """How long a dead runner blocks the heartbeat: short enough to free the next window."""
    return min(30.0, max(0.3, every / 2))


async def redis_time(client: aioredis.Redis) -> float:
    seconds, micros = await client.time()
    return int(seconds) + int(micros) / 1_000_000


async def run_heartbeat(
    client: aioredis.Redis,
    keys: Keys,
    scripts: HeartbeatScripts,
    fn: Callable[[HeartbeatRun], Awaitable[Any]],
    *,
    every: float,
    name: str,
    scope: str,
    runner: str,
) -> None:
    """Run ``fn`` at most once per ``every`` seconds across all processes, until cancelled."""
    validate_name("heartbeat name", name)
    if not isinstance(every, (int, float)) or isinstance(every, bool) or not every > 0:
        raise ValueError(f"every must be a positive number of seconds, got {every!r}")
    hb_keys = [keys.heartbeat(scope, name), keys.running(scope, name), keys.fence(scope, name)]
    backoff = Backoff()
    last_window = -1
    while True:
        try:
            now = await redis_time(client)
            window = math.floor(now / every)
            if window > last_window:
                last_window = window
                token = int(await scripts.claim(
                    keys=hb_keys,
                    args=[window, runner, int(running_ttl(every) * 1000), int(now * 1000)],
                ))  # fmt: skip
                if token > 0:
                    run = HeartbeatRun(name=name, window=window, fencing_token=token,
                                       runner=runner, started_at=now,
                                       family=scope == FAMILY)  # fmt: skip
                    await _run_once(client, keys, scripts, fn, run, scope, every)
                now = await redis_time(client)
            backoff.reset()
        except CONNECTION_ERRORS:
            await anyio.sleep(backoff.next_delay())
            continue
        # Sleep to the next boundary (Redis's clock), plus a little jitter so runners race fairly.
        boundary = (math.floor(now / every) + 1) * every
        await anyio.sleep(max(0.0, boundary - now) + random.uniform(0, min(0.02, every / 50)))


async def _run_once(
    client: aioredis.Redis,
    keys: Keys,
    scripts: HeartbeatScripts,
    fn: Callable[[HeartbeatRun], Awaitable[Any]],
    run: HeartbeatRun,
    scope: str,
    every: float,
) -> None:
    marker = f"{run.runner}#{run.fencing_token}"
    running_key = keys.running(scope, run.name)
    ttl = running_ttl(every)
    started = time.monotonic()
    outcome = "ok"

    async def keep_running() -> None:
        while True:
            await anyio.sleep(ttl / 3)
            try:
                await scripts.keep(keys=[running_key], args=[marker, int(ttl * 1000)])
            except CONNECTION_ERRORS:
                continue

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(keep_running)
            try:
                await fn(run)
            except anyio.get_cancelled_exc_class():
                outcome = "cancelled"  # not "ok": the run did not finish
                raise
            except Exception as exc:
                outcome = f"error: {type(exc).__name__}: {exc}"[:500]
                logger.warning("heartbeat %s failed: %r", run.name, exc)
            finally:
                tg.cancel_scope.cancel()
    finally:
        duration = time.monotonic() - started
        finished = msgspec.structs.replace(
            run, finished_at=run.started_at + duration, duration=duration, outcome=outcome
        )
        with anyio.move_on_after(2, shield=True):
            try:
                await scripts.finish(
                    keys=[keys.heartbeat(scope, run.name), running_key, keys.heartbeats(scope)],
                    args=[marker, _json.encode(finished), run.name],
                )
            except CONNECTION_ERRORS as exc:
                # The run happened; only its record is lost. The running key expires by itself.
                logger.warning("could not record heartbeat run %s: %r", run.name, exc)


async def last_heartbeat(
    client: aioredis.Redis, keys: Keys, *, scope: str, name: str
) -> HeartbeatRun | None:
    """The last finished run of a heartbeat (time, runner, duration, outcome, token)."""
    with map_redis_errors("reading a heartbeat"):
        raw = await client.hget(keys.heartbeat(scope, name), "last_run")
    return None if raw is None else _run_decoder.decode(raw)


def decode_run(raw: bytes | str) -> HeartbeatRun:
    return _run_decoder.decode(raw)
