"""Agent ids, instance ids and other names that end up inside Redis keys.

An agent id is 1-64 characters of lower-case letters, digits, ``-``, ``_`` and ``.``. The rule keeps
ids safe inside a key's hash tag (no braces), a URL path and a PostgreSQL setting, and it leaves no
room for two spellings of one agent.
"""

from __future__ import annotations

import os
import re
import time
from functools import lru_cache

from ._errors import InvalidAgentIdError, InvalidNameError

AGENT_ID_RULE = "1-64 characters of lower-case letters a-z, digits 0-9, '-', '_' and '.'"
_AGENT_ID = re.compile(r"[a-z0-9._-]{1,64}")

NAME_RULE = "1-128 printable characters without whitespace, braces or '*?[]'"
_NAME = re.compile(r"[^\s{}*?\[\]]{1,128}")


def validate_agent_id(agent_id: object) -> str:
    """Return ``agent_id`` if it follows the rule.

    Raises:
        InvalidAgentIdError: naming the rule and the offending value.
    """
    if not isinstance(agent_id, str) or not _is_agent_id(agent_id):
        raise InvalidAgentIdError(f"invalid agent id {agent_id!r}: an agent id is {AGENT_ID_RULE}")
    return agent_id


@lru_cache(maxsize=8192)
def _is_agent_id(value: str) -> bool:
    # Key names are built on every command; the same few ids are checked over and over.
    return _AGENT_ID.fullmatch(value) is not None


def is_valid_agent_id(value: str) -> bool:
    return _is_agent_id(value)


def validate_name(kind: str, name: object) -> str:
    """Return ``name`` (of a lock, message type, topic...) if it follows :data:`NAME_RULE`.

    Raises:
        InvalidNameError: naming the kind, the rule and the offending value.
    """
    if not isinstance(name, str) or not _is_name(name):
        raise InvalidNameError(f"invalid {kind} {name!r}: a {kind} is {NAME_RULE}")
    return name


@lru_cache(maxsize=8192)
def _is_name(value: str) -> bool:
    return _NAME.fullmatch(value) is not None


def uuid7() -> str:
    """A time-ordered UUIDv7 (RFC 9562) as text.

    48 bits of Unix milliseconds, then random bits, so ids sort by creation time and two
    backends can hold the same row under the same id. Python 3.11 has no ``uuid.uuid7``; the
    layout is ten lines.
    """
    raw = bytearray((time.time_ns() // 1_000_000).to_bytes(6, "big") + os.urandom(10))
    raw[6] = 0x70 | (raw[6] & 0x0F)  # version 7
    raw[8] = 0x80 | (raw[8] & 0x3F)  # RFC 9562 variant
    text = raw.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def new_instance_id() -> str:
    """A short random instance id; valid inside keys like an agent id."""
    return os.urandom(6).hex()
