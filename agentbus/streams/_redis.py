"""The bus's Redis client: how it is configured, how its errors are translated, how loops back off.

- No blind retries: redis-py retries failed commands by default, and a retried XADD whose first
  attempt reached the server appends the message twice. The bus's client retries nothing; the
  loops that only read (consumer, replies, leases) reconnect by themselves with backoff, and a
  ``send()`` that fails raises :class:`BackendUnavailableError` (retry it with the same
  ``idempotency_key``).
- Socket timeouts are longer than any ``BLOCK`` the bus issues, so a quiet mailbox is not an error.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions as redis_errors
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from .._errors import BackendError, BackendTimeoutError, BackendUnavailableError

BLOCK_MS = 2_000
"""The longest BLOCK of any bus loop; sockets wait longer than this."""

SOCKET_TIMEOUT = BLOCK_MS / 1000 + 8.0

CONNECTION_ERRORS = (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError)
"""What a lost connection or a restarting server looks like to redis-py."""


def make_client(url: str) -> aioredis.Redis:
    """A client configured as DESIGN §3 asks: no command retries, timeouts beyond any BLOCK."""
    return aioredis.Redis.from_url(
        url,
        retry=Retry(NoBackoff(), 0),
        socket_timeout=SOCKET_TIMEOUT,
        socket_connect_timeout=5.0,
        socket_keepalive=True,
        health_check_interval=0,
        **_no_maint_notifications(),
    )


def _no_maint_notifications() -> dict[str, Any]:
    """Turn off redis-py's maintenance notifications (a Redis Enterprise feature; "auto" by
    default in redis-py 8): while they are on, the pool skips its check for connections the server
    closed, so after a Redis restart the first command on every pooled connection failed."""
    try:
        from redis.maint_notifications import MaintNotificationsConfig
    except ImportError:  # older redis-py: no notifications, and the pool checks connections
        return {}
    return {"maint_notifications_config": MaintNotificationsConfig(enabled=False)}


def backend_error(exc: BaseException, action: str) -> BackendError:
    """The agentbus error for a redis-py (or socket) exception raised while doing ``action``."""
    if isinstance(exc, redis_errors.TimeoutError):
        return BackendTimeoutError(f"Redis did not answer in time while {action}: {exc}")
    if isinstance(exc, (redis_errors.ConnectionError, OSError)):
        return BackendUnavailableError(
            f"cannot reach Redis while {action}: {exc}; is it running? "
            "(scripts/setup-redis.sh starts the project Redis)"
        )
    if isinstance(exc, redis_errors.OutOfMemoryError):
        return BackendError(
            f"Redis is out of memory while {action} (maxmemory with noeviction refuses writes "
            "rather than dropping messages): drain or purge mailboxes, or raise maxmemory"
        )
    return BackendError(f"Redis failed while {action}: {exc}")


@contextmanager
def map_redis_errors(action: str) -> Iterator[None]:
    """Translate redis-py's exceptions into agentbus's, keeping the original as ``__cause__``.

    Hot paths catch ``redis.exceptions.RedisError`` themselves and raise :func:`backend_error`.
    """
    try:
        yield
    except (redis_errors.RedisError, OSError) as exc:
        raise backend_error(exc, action) from exc


class Backoff:
    """Exponential backoff with full jitter for reconnecting loops (AWS architecture blog)."""

    def __init__(self, *, base: float = 0.05, cap: float = 2.0) -> None:
        self._base = base
        self._cap = cap
        self._attempt = 0

    def next_delay(self) -> float:
        delay = min(self._cap, self._base * 2**self._attempt)
        self._attempt = min(self._attempt + 1, 30)
        return random.uniform(delay / 2, delay)

    def reset(self) -> None:
        self._attempt = 0
