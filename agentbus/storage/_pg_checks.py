"""Input checks shared by the PostgreSQL stores (on top of ``_canonical``): everything is
validated before a statement is sent, so a bad value is a :class:`ValidationError` naming the
field, never a driver error. Ids follow the one rule of every backend (``_rules``): ``new_id``
for a new row, ``ref_id`` for a row to look up, ``agent_ref`` for another agent."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pgvector import Vector

from ._canonical import check_text, check_vector
from ._errors import ValidationError
from ._rules import check_agent_ref, check_optional_ref, check_ref, new_id as new_id

MAX_NAME_CHARS = 500
MAX_URL_CHARS = 4096


def ref_id(value: object, field: str) -> str:
    """An id that refers to a row, by the rule of every backend (``_rules.check_ref``)."""
    return check_ref(field, value)


def optional_ref(value: object, field: str) -> str | None:
    return check_optional_ref(field, value)


def agent_ref(value: object, field: str) -> str:
    """Another agent's id (assignee, team member…), by the agent-id rule."""
    return check_agent_ref(field, value)


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
