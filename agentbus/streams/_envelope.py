"""The envelope: what one message is on the wire.

A stream entry has three fields: ``type`` and ``sender`` in plain text (so ``redis-cli XRANGE`` is
readable) and ``env``, the msgpack-encoded :class:`Envelope`. The payload travels as pre-encoded
msgpack (:class:`msgspec.Raw`): it is encoded once at ``send()`` (which is where its size is
checked) and decoded only when a handler reads ``msg.data``.

Evolution: fields are never reordered or retyped; new fields are appended with defaults
(``array_like`` encoding keeps entries small and decodes old entries into new code).
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from .._errors import DecodeError, EncodeError, MessageTooLargeError

ENVELOPE_VERSION = 1


class Envelope(msgspec.Struct, frozen=True, kw_only=True, array_like=True, omit_defaults=True):
    """One message. ``id`` is a UUIDv7, stable through retries, dead letters and replay."""

    v: int = ENVELOPE_VERSION
    id: str
    type: str
    sender: str
    recipient: str
    data: msgspec.Raw = msgspec.Raw(b"\xc0")  # msgpack nil
    created_at: float = 0.0
    expires_at: float | None = None
    correlation_id: str | None = None
    reply_to: str | None = None  # the reply stream key of a request
    deliveries: int = 0  # failed attempts before this entry was (re)queued
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    idempotency_key: str | None = None


_encoder = msgspec.msgpack.Encoder()
_envelope_decoder = msgspec.msgpack.Decoder(Envelope)
_any_decoder = msgspec.msgpack.Decoder()


def encode_data(data: Any, max_bytes: int) -> msgspec.Raw:
    """Encode a payload once, refusing what msgspec cannot encode or what is too large.

    Raises:
        EncodeError: the data holds a type msgspec cannot encode.
        MessageTooLargeError: the encoded payload is over ``max_bytes``.
    """
    try:
        packed = _encoder.encode(data)
    except (TypeError, msgspec.EncodeError, OverflowError) as exc:
        raise EncodeError(
            f"cannot encode message data: {exc}; use dicts, lists, str, int, float, bool, None, "
            "bytes, datetimes, UUIDs, dataclasses or msgspec Structs"
        ) from exc
    if len(packed) > max_bytes:
        raise MessageTooLargeError(
            f"message data is {len(packed)} bytes encoded, over bus.maxPayloadBytes={max_bytes}; "
            "store large blobs in storage and send a reference"
        )
    return msgspec.Raw(packed)


def encode_envelope(envelope: Envelope) -> bytes:
    return _encoder.encode(envelope)


def decode_envelope(packed: bytes) -> Envelope:
    """Raises: DecodeError: ``packed`` is not a valid envelope."""
    try:
        return _envelope_decoder.decode(packed)
    except msgspec.DecodeError as exc:
        raise DecodeError(f"not a valid agentbus envelope: {exc}") from exc


def decode_data(raw: msgspec.Raw) -> Any:
    return _any_decoder.decode(raw)


def entry_fields(envelope: Envelope) -> dict[str, bytes | str]:
    """The stream entry of an envelope."""
    return {"type": envelope.type, "sender": envelope.sender, "env": encode_envelope(envelope)}


def now() -> float:
    return time.time()
