"""Lua scripts, kept as files beside this module and registered once per client.

Each script touches the keys of one agent only (one hash slot), so the bus works on Redis Cluster.
"""

from __future__ import annotations

from importlib import resources

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

SCRIPT_NAMES = ("send_idempotent", "send_batch", "reply", "promote_due", "trim")


def script_source(name: str, package: str = __package__) -> str:
    """The text of ``lua/{name}.lua`` beside the modules of ``package``."""
    return resources.files(package).joinpath("lua", f"{name}.lua").read_text("utf-8")


def load_script(client: aioredis.Redis, name: str, package: str = __package__) -> AsyncScript:
    """Register a script file with a client (EVALSHA, loaded again when Redis forgot it)."""
    return client.register_script(script_source(name, package))


class Scripts:
    """The bus's scripts bound to one client (EVALSHA, loading the script when Redis lost it)."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.send_idempotent: AsyncScript = client.register_script(script_source("send_idempotent"))
        self.send_batch: AsyncScript = client.register_script(script_source("send_batch"))
        self.reply: AsyncScript = client.register_script(script_source("reply"))
        self.promote_due: AsyncScript = client.register_script(script_source("promote_due"))
        self.trim: AsyncScript = client.register_script(script_source("trim"))

    def all(self) -> tuple[AsyncScript, ...]:
        return (self.send_idempotent, self.send_batch, self.reply, self.promote_due, self.trim)
