"""Input checks shared by the PostgreSQL stores (on top of ``_canonical``): everything is
validated before a statement is sent, so a bad value is a :class:`ValidationError` naming the
field, never a driver error. Ids follow the one rule of every backend (``_rules``): ``new_id``
for a new row, ``ref_id`` for a row to look up, ``agent_ref`` for another agent."""

from __future__ import annotations

from pgvector import Vector

from ._canonical import check_vector
from ._models import MAX_URL_CHARS as MAX_URL_CHARS
from ._rules import (
    check_agent_ref,
    check_offset,
    check_optional_ref,
    check_ref,
    new_id as new_id,
)

# MAX_URL_CHARS is the limit of every backend (``_models``), re-exported for ``_pg_memory``,
# which still imports it from here; ``offset`` below likewise.


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
    """The rule of every backend (``_rules.check_offset``)."""
    return check_offset(value)


def affected(status: str) -> int:
    """Row count of an asyncpg command status ('DELETE 1', 'UPDATE 0', 'INSERT 0 1')."""
    return int(status.rsplit(" ", 1)[-1])
