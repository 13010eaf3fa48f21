"""A received message and the ways to settle it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._envelope import Envelope, decode_data

if TYPE_CHECKING:
    from ._consumer import MailboxConsumer

_UNSET: Any = object()


class Message:
    """A message delivered to this instance.

    Settle it once: ``await msg.ack()`` after the work is done, or ``await msg.nack(delay=...)``
    to have it delivered again later (after ``maxDeliveries`` attempts it goes to the dead
    letters). Only the first settle counts. Handlers run by ``serve()`` are settled for you.
    """

    __slots__ = ("_consumer", "_data", "deliveries", "entry_id", "envelope", "settled")

    def __init__(
        self, envelope: Envelope, entry_id: str, deliveries: int, consumer: MailboxConsumer
    ) -> None:
        self.envelope = envelope
        self.entry_id = entry_id  # the stream entry id; internal, changes on retry
        self.deliveries = deliveries  # 1 on the first delivery
        self.settled = False
        self._consumer = consumer
        self._data: Any = _UNSET

    @property
    def id(self) -> str:
        """The envelope id (UUIDv7), stable through retries, dead letters and replay."""
        return self.envelope.id

    @property
    def type(self) -> str:
        return self.envelope.type

    @property
    def sender(self) -> str:
        return self.envelope.sender

    @property
    def data(self) -> Any:
        """The payload, decoded on first access."""
        if self._data is _UNSET:
            self._data = decode_data(self.envelope.data)
        return self._data

    @property
    def headers(self) -> dict[str, str]:
        return self.envelope.headers

    @property
    def correlation_id(self) -> str | None:
        return self.envelope.correlation_id

    @property
    def created_at(self) -> float:
        return self.envelope.created_at

    @property
    def is_request(self) -> bool:
        """True when the sender waits for :meth:`reply`."""
        return self.envelope.reply_to is not None

    async def ack(self) -> None:
        """Mark the message handled.

        Acks are coalesced and written within milliseconds; if the process dies before that, the
        message is delivered again (at-least-once).
        """
        if not self.settled:
            self.settled = True
            self._consumer.ack(self)

    async def nack(self, *, delay: float | None = None, error: BaseException | None = None) -> None:
        """Give the message back: it is delivered again after ``delay`` seconds (default: the
        retry backoff), or dead-lettered when it has had ``maxDeliveries`` attempts.

        Raises:
            BackendError: Redis failed; the message stays pending and is delivered again.
        """
        if not self.settled:
            self.settled = True
            await self._consumer.retry_or_dead_letter(self, error=error, delay=delay, handler=None)

    async def reply(self, data: Any) -> None:
        """Answer a request (no-op for a message nobody waits on).

        Raises:
            EncodeError, MessageTooLargeError: ``data`` cannot be sent.
        """
        await self._consumer.reply(self, data)

    def __repr__(self) -> str:
        return (
            f"Message(id={self.id!r}, type={self.type!r}, sender={self.sender!r}, "
            f"deliveries={self.deliveries})"
        )
