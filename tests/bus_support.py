"""Helpers shared by the functional bus tests: configuration and waiting on deadlines."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio

from agentbus import Config, load_config
from agentbus.testing import RedisServer

T = TypeVar("T")

POLL = 0.02
"""How often a condition is re-checked while waiting on a deadline."""


def bus_config(server: RedisServer, namespace: str, **bus: Any) -> Config:
    """A config for ``server`` and ``namespace`` with a 2 s lease; ``bus`` overrides more keys."""
    return load_config(
        redis_url=server.url, overrides={"bus": {"namespace": namespace, "leaseTtl": 2, **bus}}
    )


async def wait_until(
    check: Callable[[], Awaitable[T]], *, timeout: float = 5.0, what: str = "condition"
) -> T:
    """Re-run ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: T = await check()
    while not last:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}; last: {last!r}")
        await anyio.sleep(POLL)
        last = await check()
    return last


async def wait_for_value(
    get: Callable[[], Awaitable[T]], expected: T, *, timeout: float = 5.0, what: str = "value"
) -> None:
    """Re-read ``get()`` until it equals ``expected``; fail with the last value seen."""
    seen: list[T] = []

    async def check() -> bool:
        seen[:] = [await get()]
        return seen[0] == expected

    try:
        await wait_until(check, timeout=timeout, what=what)
    except AssertionError:
        raise AssertionError(f"{what}: expected {expected!r}, last seen {seen[0]!r}") from None
