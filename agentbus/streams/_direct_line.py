"""A connection kept aside for short request/response commands on hot paths (locks).

redis-py's ``execute_command`` takes a connection from the pool under the pool's lock, checks it,
runs the command through the retry wrapper and the observability hooks, and gives the connection
back — about 25 µs of client CPU per command here, as much as the round trip's own work for a
two-command lock pair. A :class:`DirectLine` keeps one pooled connection and writes the command
and reads its reply on it directly, with the pool's own readiness check (a socket the server
closed, e.g. after a restart, is reconnected before use, as the pool would). One command is in
flight on it at a time: a caller that finds it busy goes through ``execute_command`` instead, so
concurrent callers never queue behind each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions as redis_errors
from redis.asyncio.connection import AbstractConnection

from ._scripts import LuaScript


class DirectLine:
    """``await line.execute("EVALSHA", ...)``: one command, its reply, on a kept connection."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._client = client
        self._connection: AbstractConnection | None = None
        self._busy = False
        self._closed = False

    async def execute(self, *args: Any) -> Any:
        """The reply to one command; a Redis error reply raises as redis-py raises it."""
        if self._busy or self._closed:
            return await self._client.execute_command(*args)  # type: ignore[no-untyped-call]
        self._busy = True
        try:
            connection = await self._ready_connection()
            try:
                await connection.send_packed_command(
                    connection.pack_command(*args), check_health=False
                )
                return await connection.read_response()
            except redis_errors.ResponseError:
                raise  # an error reply was read whole: the connection is still in step
            except BaseException:
                # Cancelled or broken between the write and the reply: a late reply would be
                # read as the answer to the next command, so this connection is done.
                await connection.disconnect(nowait=True)
                raise
        finally:
            self._busy = False

    async def run(self, script: LuaScript, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """``script`` by EVALSHA on this line, loading it first if Redis has forgotten it."""
        command = ("EVALSHA", script.sha, len(keys), *keys, *args)
        try:
            return await self.execute(*command)
        except redis_errors.NoScriptError:  # NOSCRIPT: it did not run, so running it is safe
            await self._client.script_load(script.script)
            return await self.execute(*command)

    async def _ready_connection(self) -> AbstractConnection:
        if self._connection is None:
            self._connection = await self._client.connection_pool.get_connection()  # type: ignore[no-untyped-call]
        connection = self._connection
        await connection.connect()  # no-op while connected
        if await connection.can_read():
            # Data or EOF before we asked: the server closed it (restart) or it is out of step.
            await connection.disconnect()
            await connection.connect()
        return connection

    async def aclose(self) -> None:
        """Give the connection back to the pool (the client may outlive this line)."""
        self._closed = True
        if self._connection is not None and not self._busy:
            connection, self._connection = self._connection, None
            await self._client.connection_pool.release(connection)
