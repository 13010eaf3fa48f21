"""Request/reply: each instance reads its own reply stream and matches answers to requests.

The reply stream belongs to one instance (``ns:{agent}:reply:{instance}``), so a sibling instance
of the same agent never sees, or steals, another's replies. Replies nobody waits for any more
(the request timed out) are dropped. The stream expires when unused and is deleted on close.
"""

from __future__ import annotations

import asyncio
from typing import Any

import anyio
import anyio.lowlevel
import redis.asyncio as aioredis

from .._errors import DecodeError
from ._envelope import Envelope, decode_envelope
from ._narrow import read_entries
from ._redis import BLOCK_MS, CONNECTION_ERRORS, Backoff

_TRIM_EVERY = 256  # replies read between trims of the stream


class ReplyListener:
    def __init__(self, client: aioredis.Redis, stream: str) -> None:
        self._client = client
        self.stream = stream
        self._waiting: dict[str, asyncio.Future[Envelope]] = {}
        self._last_id = "0-0"
        self.dropped = 0  # late or unknown replies

    def expect(self, correlation_id: str) -> asyncio.Future[Envelope]:
        future: asyncio.Future[Envelope] = asyncio.get_running_loop().create_future()
        self._waiting[correlation_id] = future
        return future

    def forget(self, correlation_id: str) -> None:
        self._waiting.pop(correlation_id, None)

    async def run(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        backoff = Backoff()
        read_since_trim = 0
        task_status.started()
        while True:
            try:
                reply = await self._client.xread({self.stream: self._last_id}, block=BLOCK_MS)
                backoff.reset()
            except CONNECTION_ERRORS:
                await anyio.sleep(backoff.next_delay())
                continue
            if not reply:
                continue
            for entry_id, fields in read_entries(reply):
                self._last_id = entry_id
                read_since_trim += 1
                self._resolve(fields)
            # The requesters run before this loop issues its next read: latency first.
            await anyio.lowlevel.checkpoint()
            if read_since_trim >= _TRIM_EVERY:
                read_since_trim = 0
                try:
                    await self._client.xtrim(self.stream, minid=self._last_id)
                except CONNECTION_ERRORS:
                    pass  # the next trim catches up

    def _resolve(self, fields: dict[bytes, bytes] | None) -> None:
        try:
            envelope = decode_envelope((fields or {})[b"env"])
        except (KeyError, DecodeError):
            self.dropped += 1
            return
        future = self._waiting.pop(envelope.correlation_id or "", None)
        if future is None or future.done():
            self.dropped += 1
        else:
            future.set_result(envelope)
