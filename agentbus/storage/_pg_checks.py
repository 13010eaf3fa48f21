"""Input checks shared by the PostgreSQL stores (on top of ``_canonical``): everything is
validated before a statement is sent, so a bad value is a :class:`ValidationError` naming the
field, never a driver error."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pgvector import Vector

from .._errors import InvalidAgentIdError
from .._ids import uuid7, validate_agent_id
from ._canonical import check_text, check_vector
from ._errors import ValidationError

MAX_ID_CHARS = 64
MAX_NAME_CHARS = 500
MAX_URL_CHARS = 4096


def new_id(value: object = None, field: str = "id") -> str:
    """A caller's id (migration, backfill) checked, or a fresh UUIDv7."""
    if value is None:
        return uuid7()
    return check_text(field, value, max_chars=MAX_ID_CHARS)


def ref_id(value: object, field: str) -> str:
    """An id that refers to a row: text, not empty, no NUL."""
    return check_text(field, value, max_chars=MAX_ID_CHARS)


def optional_ref(value: object, field: str) -> str | None:
    return None if value is None else ref_id(value, field)


def agent_ref(value: object, field: str) -> str:
    """Another agent's id (assignee, team member…), by the agent-id rule."""
    try:
        return validate_agent_id(value)
    except InvalidAgentIdError as exc:
        raise ValidationError(f"{field}: {exc}") from exc


def vector(value: object, dim: int) -> Vector:
    """pgvector's wire type for a checked float32 embedding (DimensionMismatchError, NaN)."""
    return Vector(check_vector(value, dim))


def offset(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValidationError(f"offset must be a non-negative integer, got {value!r}")
    return value


def tags(values: Sequence[str] | Any) -> list[str]:
    if isinstance(values, str):
        raise ValidationError("tags must be a sequence of strings, not one string")
    out: list[str] = []
    for value in values:
        tag = check_text("tag", value, max_chars=MAX_NAME_CHARS)
        if tag not in out:
            out.append(tag)
    return out


def affected(status: str) -> int:
    """Row count of an asyncpg command status ('DELETE 1', 'UPDATE 0', 'INSERT 0 1')."""
    return int(status.rsplit(" ", 1)[-1])
