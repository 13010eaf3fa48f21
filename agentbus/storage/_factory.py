"""One storage adapter per configuration and event loop, shared by everything in the process.

asyncpg pools belong to the event loop that made them, so the cache is per loop. Users count
references: ``AgentBus`` takes one when it first touches ``bus.storage`` and gives it back on
close; the adapter closes when the last user leaves (or at ``close_storage_adapters()``).
"""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass, field

from .._config import Config, load_config
from ._postgres import PgAdapter
from ._protocol import StorageAdapter
from ._sqlite import SQLiteAdapter


@dataclass
class _Entry:
    adapter: StorageAdapter
    users: int = 0
    opened: asyncio.Lock = field(default_factory=asyncio.Lock)


_cache: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Config, _Entry]] = (
    weakref.WeakKeyDictionary()
)


def build_storage_adapter(config: Config) -> StorageAdapter:
    """A new, unopened adapter for ``storage.backend`` (``dual`` arrives with migrations)."""
    backend = config.storage.backend
    if backend == "sqlite":
        return SQLiteAdapter.from_config(config)
    if backend == "postgres":
        return PgAdapter.from_config(config)
    raise NotImplementedError(
        'storage.backend "dual" is not available yet; use "sqlite" or "postgres"'
    )


async def get_storage_adapter(config: Config | None = None) -> StorageAdapter:
    """The opened adapter for ``config`` (default: ``load_config()``) on this event loop.

    The same config on the same loop gives the same adapter; callers must not close it (use
    :func:`release_storage_adapter` or :func:`close_storage_adapters`).
    """
    entry = await _entry(config or load_config())
    return entry.adapter


async def acquire_storage_adapter(config: Config) -> StorageAdapter:
    """Like :func:`get_storage_adapter`, counting the caller as a user until it releases."""
    entry = await _entry(config)
    entry.users += 1
    return entry.adapter


async def release_storage_adapter(config: Config) -> None:
    """Give back an acquired adapter; the last user's release closes it."""
    adapters = _cache.get(asyncio.get_running_loop(), {})
    entry = adapters.get(config)
    if entry is None:
        return
    entry.users -= 1
    if entry.users <= 0:
        del adapters[config]
        await entry.adapter.aclose()


async def close_storage_adapters() -> None:
    """Close every adapter this event loop opened."""
    adapters = _cache.pop(asyncio.get_running_loop(), {})
    for entry in adapters.values():
        await entry.adapter.aclose()


async def _entry(config: Config) -> _Entry:
    adapters = _cache.setdefault(asyncio.get_running_loop(), {})
    entry = adapters.get(config)
    if entry is None:
        entry = adapters[config] = _Entry(build_storage_adapter(config))
    async with entry.opened:
        if not entry.adapter.is_ready():
            await entry.adapter.open()
    return entry
