"""A connection of its own for short request/response commands on hot paths (locks).

redis-py's ``execute_command`` takes a connection from the pool under the pool's lock, checks it,
runs the command through the retry wrapper and the observability hooks, gives the connection
back, and — with a socket timeout set, as the bus sets one — sends through ``asyncio.wait_for``,
which wraps the write in a task of its own and costs two more turns of the event loop. For a
lock pair (two short round trips) that is a large share of the cost. A :class:`DirectLine` keeps
one connection, made like the pool's but without a socket timeout, writes the command and reads
its reply on it directly, and bounds the whole exchange with one ``asyncio.timeout`` of the
client's socket timeout instead. Before each use it runs the pool's own readiness check (a
socket the server closed, e.g. after a restart, is reconnected first). One command is in flight
on it at a time: a caller that finds it busy goes through ``execute_command``, so concurrent
callers never queue behind each other.
"""

from __future__ import annotations

import asyncio
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
        self._timeout: float | None = client.connection_pool.connection_kwargs.get("socket_timeout")
        self._connection: AbstractConnection | None = None
        self._busy = False
        self._closed = False

    async def execute(self, *args: Any) -> Any:
        """The reply to one command; a Redis error reply raises as redis-py raises it.

        Raises:
            redis.exceptions.TimeoutError: no reply within the client's socket timeout.
        """
        if self._busy or self._closed:
            return await self._client.execute_command(*args)  # type: ignore[no-untyped-call]
        self._busy = True
        try:
            connection = self._connection
            try:
                async with asyncio.timeout(self._timeout):
                    if connection is None:
                        connection = self._connection = self._new_connection()
                    # (connect() is a no-op while connected)
                    await connection.connect()  # type: ignore[no-untyped-call]
                    if await connection.can_read():
                        # Data or EOF before we asked: the server closed it (a restart) or it
                        # is out of step; start afresh, as the pool does.
                        await connection.disconnect()
                        await connection.connect()  # type: ignore[no-untyped-call]
                    await connection.send_packed_command(
                        connection.pack_command(*args), check_health=False
                    )
                    return await connection.read_response()
            except redis_errors.ResponseError:
                raise  # an error reply was read whole: the connection is still in step
            except BaseException as exc:
                # Cancelled, timed out or broken between the write and the reply: a late reply
                # would be read as the answer to the next command, so this connection is done.
                if connection is not None:
                    await connection.disconnect(nowait=True)
                if isinstance(exc, TimeoutError):
                    raise redis_errors.TimeoutError(
                        f"no reply from Redis within {self._timeout} s"
                    ) from exc
                raise
        finally:
            self._busy = False

    def _new_connection(self) -> AbstractConnection:
        """A connection made as the pool makes one, minus the socket timeout (see above)."""
        pool = self._client.connection_pool
        connection: AbstractConnection = pool.connection_class(
            **{**pool.connection_kwargs, "socket_timeout": None}
        )
        return connection

    async def run(self, script: LuaScript, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """``script`` by EVALSHA on this line, loading it first if Redis has forgotten it."""
        command = ("EVALSHA", script.sha, len(keys), *keys, *args)
        try:
            return await self.execute(*command)
        except redis_errors.NoScriptError:  # NOSCRIPT: it did not run, so running it is safe
            await self._client.script_load(script.script)
            return await self.execute(*command)

    async def aclose(self) -> None:
        """Close the kept connection; later calls go through the client's pool."""
        self._closed = True
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.disconnect(nowait=self._busy)
