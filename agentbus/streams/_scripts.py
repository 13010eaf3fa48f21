"""Lua scripts, kept as files beside the modules that use them, run with EVALSHA.

Each script touches the keys of one agent only (one hash slot), so the bus works on Redis Cluster.
:class:`LuaScript` is a thin EVALSHA call (redis-py's ``Script`` wrapper costs a noticeable share of
a round trip on hot paths such as locks); when Redis answers NOSCRIPT (it restarted or flushed its
script cache) the script did not run, so loading it and calling again cannot run it twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from functools import cache
from importlib import resources
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions as redis_errors

SCRIPT_NAMES = ("send_idempotent", "send_batch", "reply", "promote_due", "trim")


@cache
def script_source(name: str, package: str = __package__) -> str:
    """The text of ``lua/{name}.lua`` beside the modules of ``package``."""
    return resources.files(package).joinpath("lua", f"{name}.lua").read_text("utf-8")


class LuaScript:
    """One script bound to a client: ``await script(keys=[...], args=[...])``."""

    __slots__ = ("client", "script", "sha")

    def __init__(self, client: aioredis.Redis, source: str) -> None:
        self.client = client
        self.script = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(
        self,
        keys: Sequence[Any] = (),
        args: Iterable[Any] = (),
        client: aioredis.Redis | None = None,
    ) -> Any:
        target = self.client if client is None else client
        try:
            return await target.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)  # type: ignore[no-untyped-call]
        except redis_errors.NoScriptError:
            await target.script_load(self.script)
            return await target.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)  # type: ignore[no-untyped-call]


def load_script(client: aioredis.Redis, name: str, package: str = __package__) -> LuaScript:
    """The script in ``lua/{name}.lua`` of ``package``, bound to ``client``."""
    return LuaScript(client, script_source(name, package))


class Scripts:
    """The bus's stream scripts bound to one client."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.send_idempotent = load_script(client, "send_idempotent")
        self.send_batch = load_script(client, "send_batch")
        self.reply = load_script(client, "reply")
        self.promote_due = load_script(client, "promote_due")
        self.trim = load_script(client, "trim")

    def all(self) -> tuple[LuaScript, ...]:
        return (self.send_idempotent, self.send_batch, self.reply, self.promote_due, self.trim)
