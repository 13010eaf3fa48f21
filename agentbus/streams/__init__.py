"""Mailboxes on Redis Streams, request/reply, dead letters and pub/sub events."""

from ._dead_letters import DeadLetter as DeadLetter
from ._envelope import Envelope as Envelope
from ._events import ReceivedEvent as ReceivedEvent, Subscription as Subscription
from ._handlers import MessageStream as MessageStream
from ._mailbox_admin import (
    MailboxStats as MailboxStats,
    list_dead_letters as list_dead_letters,
    mailbox_stats as mailbox_stats,
    purge_dead_letters as purge_dead_letters,
    replay_dead_letter as replay_dead_letter,
)
from ._message import Message as Message

__all__ = [
    "DeadLetter",
    "Envelope",
    "MailboxStats",
    "Message",
    "MessageStream",
    "ReceivedEvent",
    "Subscription",
    "list_dead_letters",
    "mailbox_stats",
    "purge_dead_letters",
    "replay_dead_letter",
]
