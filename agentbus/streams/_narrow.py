"""Narrowing redis-py's loose reply types, once, at the edge.

redis-py types most replies as unions of everything RESP can carry; these functions turn them
into the few shapes the bus uses, so ``dict[bytes, bytes]`` and friends never travel inward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Fields = dict[bytes, bytes]
Entry = tuple[str, Fields | None]
"""A stream entry: its id and its fields (None when the entry was deleted)."""


@dataclass(frozen=True, slots=True)
class PendingRow:
    entry_id: str
    consumer: str
    idle_ms: int
    times_delivered: int


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def entries(raw: Any) -> list[Entry]:
    """XRANGE / XCLAIM / one stream of XREAD: ``[(id, fields or None), ...]``."""
    return [(text(entry_id), dict(fields) if fields else None) for entry_id, fields in raw or ()]


def read_entries(raw: Any) -> list[Entry]:
    """XREAD / XREADGROUP on one stream (RESP2: ``[[stream, entries]]``)."""
    if not raw:
        return []
    return entries(raw[0][1])


def pending_rows(raw: Any) -> list[PendingRow]:
    """XPENDING with a range."""
    return [
        PendingRow(
            entry_id=text(row["message_id"]),
            consumer=text(row["consumer"]),
            idle_ms=int(row["time_since_delivered"]),
            times_delivered=int(row["times_delivered"]),
        )
        for row in raw or ()
    ]


def pending_consumers(raw: Any) -> dict[str, int]:
    """XPENDING summary: consumer name -> pending count."""
    return {text(row["name"]): int(row["pending"]) for row in (raw or {}).get("consumers") or ()}
