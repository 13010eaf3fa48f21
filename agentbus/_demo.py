"""What ``agentbus demo`` shows: the embedded default, end to end.

It grows with the project; for now it resolves the configuration, proves the project Redis answers
and is configured for a bus (AOF, noeviction), and creates the SQLite file.
"""

from __future__ import annotations

import json
import sqlite3

import anyio
import redis.asyncio as aioredis

from ._config import Config


def _say(text: str = "") -> None:
    print(text, flush=True)


async def _check_redis(config: Config) -> dict[str, str]:
    client = aioredis.Redis.from_url(config.storage.redis.url, socket_timeout=5)
    try:
        await client.ping()
        info = await client.info("server")
        settings = await client.config_get("appendonly")
        settings |= await client.config_get("maxmemory-policy")
        return {
            "redis_version": str(info.get("redis_version")),
            "appendonly": str(settings["appendonly"]),
            "maxmemory-policy": str(settings["maxmemory-policy"]),
        }
    finally:
        await client.aclose()


def _create_sqlite(config: Config) -> str:
    path = config.storage.sqlite.path
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path)
    try:
        mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        return str(mode)
    finally:
        connection.close()


def run_demo(config: Config) -> int:
    _say(f"agentbus demo — configuration from {config.source}")
    _say(
        json.dumps(
            {
                "backend": config.storage.backend,
                "redis": config.storage.redis.url,
                "sqlite": str(config.storage.sqlite.path),
                "namespace": config.bus.namespace,
            },
            indent=2,
        )
    )
    redis_facts = anyio.run(_check_redis, config)
    _say(
        f"redis {config.storage.redis.url} answers PING: version {redis_facts['redis_version']}, "
        f"appendonly={redis_facts['appendonly']}, "
        f"maxmemory-policy={redis_facts['maxmemory-policy']}"
    )
    if redis_facts["maxmemory-policy"] != "noeviction":
        _say("  warning: a bus needs maxmemory-policy noeviction, or Redis may drop messages")
    journal = _create_sqlite(config)
    _say(f"sqlite {config.storage.sqlite.path} ready (journal_mode={journal})")
    _say(
        "the embedded default runs: agent mailboxes, events, presence and locks on this Redis; "
        "memory, tasks and teams in this SQLite file"
    )
    return 0
