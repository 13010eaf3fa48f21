"""The dead-letter stream: messages the bus gave up on, with why, ready to replay.

Reasons: ``error`` (the handler kept failing), ``no-handler``, ``decode`` (the entry is not an
envelope, e.g. written by hand with redis-cli), ``expired`` (its ``ttl`` ran out), ``trimmed`` (a
pending entry was deleted from the stream by someone else), ``max-deliveries`` (delivered that
often without being settled, e.g. it crashed its consumers).
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .._errors import DecodeError
from ._envelope import Envelope, decode_envelope

REASONS = ("error", "no-handler", "decode", "expired", "trimmed", "max-deliveries")


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One dead letter as read back from the stream.

    ``entry_id`` is the dead letter's own id in the dead-letter stream; ``mailbox_entry_id`` is
    the id the message had in the mailbox (all a ``trimmed`` dead letter can tell about it).
    """

    entry_id: str
    reason: str
    envelope_id: str | None
    type: str | None
    sender: str | None
    error_type: str | None
    error_message: str | None
    traceback: str | None
    handler: str | None
    attempts: int
    dead_at: float
    envelope: Envelope | None
    raw_fields: dict[str, bytes]
    mailbox_entry_id: str | None = None


def traceback_summary(error: BaseException, limit: int = 6) -> str:
    """The last frames of the traceback: enough to find the bug, small enough to store."""
    frames = traceback.extract_tb(error.__traceback__)[-limit:]
    return "".join(traceback.format_list(frames)).strip()


def dead_letter_fields(  # the XADD fields of one dead letter
    *,
    reason: str,
    envelope: Envelope | None,
    envelope_bytes: bytes | None,
    raw_fields: Mapping[bytes, bytes] | None = None,
    error: BaseException | None = None,
    handler: str | None = None,
    attempts: int = 0,
    entry_id: str = "",
) -> dict[str, Any]:
    fields: dict[Any, Any] = {
        "reason": reason,
        "dead_at": repr(time.time()),
        "attempts": attempts,
        "entry_id": entry_id,
    }
    if envelope is not None:
        fields |= {"envelope_id": envelope.id, "type": envelope.type, "sender": envelope.sender}
    if envelope_bytes is not None:
        fields["env"] = envelope_bytes
    if raw_fields is not None and envelope_bytes is None:
        # Keep whatever was there (prefixed) so an undecodable entry can still be inspected.
        for key, value in raw_fields.items():
            fields[b"raw:" + key] = value
    if error is not None:
        fields |= {
            "error_type": type(error).__name__,
            "error_message": str(error)[:2000],
            "traceback": traceback_summary(error),
        }
    if handler is not None:
        fields["handler"] = handler
    return fields


def parse_dead_letter(entry_id: bytes | str, fields: Mapping[bytes, bytes]) -> DeadLetter:
    def text(key: str) -> str | None:
        value = fields.get(key.encode())
        return None if value is None else value.decode("utf-8", "replace")

    envelope = None
    packed = fields.get(b"env")
    if packed is not None:
        try:
            envelope = decode_envelope(packed)
        except DecodeError:
            envelope = None
    raw = {k[4:].decode("utf-8", "replace"): v for k, v in fields.items() if k.startswith(b"raw:")}
    return DeadLetter(
        entry_id=entry_id.decode() if isinstance(entry_id, bytes) else entry_id,
        reason=text("reason") or "unknown",
        envelope_id=text("envelope_id"),
        type=text("type"),
        sender=text("sender"),
        error_type=text("error_type"),
        error_message=text("error_message"),
        traceback=text("traceback"),
        handler=text("handler"),
        attempts=int(text("attempts") or 0),
        dead_at=float(text("dead_at") or 0.0),
        envelope=envelope,
        raw_fields=raw,
        mailbox_entry_id=text("entry_id") or None,
    )
