"""Rules shared by every backend, computed in Python so that backends cannot drift apart:
Reciprocal Rank Fusion, lesson confidence steps, metadata merges, task status transitions,
offsets, tags and fences (and their scope), and the id checks of every store.

Ids, one rule for every store and backend: an id to look up (``check_ref``) that is not text,
empty, longer than ``MAX_ID_CHARS`` or holding NUL is a ValidationError naming the field; a
well-formed id of a row the agent cannot see is "not found" (``get_*`` -> None, mutations ->
NotFoundError), exactly like an id nobody stored. A caller's id for a new row (``new_id``) is a
UUID in canonical lower-case text. Another agent named by a call (assignee, member, lead) follows
the agent-id rule (``check_agent_ref``). Tasks are also found by a short id (``short_task_ref``).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from .._errors import InvalidAgentIdError
from .._ids import uuid7, validate_agent_id
from .._keys import FAMILY
from ._canonical import check_text
from ._errors import StaleWriteError, ValidationError
from ._fence import Fence
from ._models import DONE_STATUSES, MAX_ID_CHARS, MAX_NAME_CHARS, RRF_K, SearchMode, TaskStatus


def fuse_rrf(
    keyword_ids: Sequence[str], vector_ids: Sequence[str], *, limit: int, k: int = RRF_K
) -> list[tuple[str, float, int | None, int | None]]:
    """Reciprocal Rank Fusion: score(id) = sum over lists of 1 / (k + rank); ties by id.

    Returns ``(id, score, keyword_rank, vector_rank)`` for the best ``limit`` ids (ranks are
    1-based; None when the id is not in that list).
    """
    keyword_rank = {item: rank for rank, item in enumerate(keyword_ids, start=1)}
    vector_rank = {item: rank for rank, item in enumerate(vector_ids, start=1)}
    fused = []
    for item in keyword_rank.keys() | vector_rank.keys():
        kw, vec = keyword_rank.get(item), vector_rank.get(item)
        fused.append((item, rrf_score(kw, vec, k=k), kw, vec))
    fused.sort(key=lambda row: (-row[1], row[0]))
    return fused[:limit]


def effective_mode(mode: SearchMode, *, has_vector: bool) -> SearchMode:
    """The search a ``mode`` call really runs: hybrid without a query vector is a keyword search,
    with keyword hits and keyword scores, on every backend and domain."""
    return "keyword" if mode == "hybrid" and not has_vector else mode


def rrf_score(keyword_rank: int | None, vector_rank: int | None, *, k: int = RRF_K) -> float:
    """One id's Reciprocal Rank Fusion score from its 1-based rank in each list (None: absent).
    PostgreSQL fuses in SQL and only its ranks come back: the score is computed here, so both
    backends give the same floats."""
    return (1 / (k + keyword_rank) if keyword_rank else 0.0) + (
        1 / (k + vector_rank) if vector_rank else 0.0
    )


def step_confidence(confidence: float, step: float) -> float:
    """Reinforce (step > 0) or decay (step < 0), bounded to 0..1, rounded so that backends with
    different float paths store the same value."""
    return round(min(1.0, max(0.0, confidence + step)), 6)


def merge_metadata(current: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """Shallow merge: keys in ``patch`` replace, keys set to None are removed."""
    merged = dict(current)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def status_stamps(
    old: TaskStatus, new: TaskStatus, now: datetime, started_at: datetime | None,
    completed_at: datetime | None,
) -> tuple[datetime | None, datetime | None]:  # fmt: skip
    """``started_at`` is set the first time a task goes in_progress; ``completed_at`` when it
    reaches a done status, and cleared when it is reopened."""
    if new == "in_progress" and started_at is None:
        started_at = now
    if new in DONE_STATUSES and old not in DONE_STATUSES:
        completed_at = now
    elif new not in DONE_STATUSES:
        completed_at = None
    return started_at, completed_at


def check_limit(limit: int, *, maximum: int = 1000) -> int:
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= maximum:
        raise ValidationError(f"limit must be an integer from 1 to {maximum}, got {limit!r}")
    return limit


def check_offset(offset: object) -> int:
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise ValidationError(f"offset must be a non-negative integer, got {offset!r}")
    return offset


def check_tags(tags: object) -> list[str]:
    """Task tags: a sequence of texts (not one string), each at most ``MAX_NAME_CHARS``;
    a repeated tag is kept once, where it first appears."""
    if isinstance(tags, (str, bytes)) or not isinstance(tags, Sequence):
        raise ValidationError(f"tags must be a sequence of strings, got {type(tags).__name__}")
    checked = [check_text("tag", tag, max_chars=MAX_NAME_CHARS) for tag in tags]
    return list(dict.fromkeys(checked))


def check_fence(fence: object) -> Fence:
    """``fence=``: a :class:`Fence` (its scope given by ``family``), or a ``(name, token)`` pair
    (a tuple or list; the acting agent's scope, like ``Fence(name, token)``). The name is at most
    ``MAX_NAME_CHARS`` and the token an integer from 0 to 2**63 - 1 (``_fence.MAX_FENCING_TOKEN``).

    Raises: ValidationError (anything else, a three-item tuple or a bare token included).
    """
    if isinstance(fence, Fence):
        return fence
    if not isinstance(fence, (tuple, list)) or len(fence) != 2:
        raise ValidationError(
            "fence must be a Fence(name, token, family=...) — e.g. lease.fence — or a "
            f"(name, token) pair, got {fence!r}"
        )
    return Fence(fence[0], fence[1])


def fence_scope(fence: Fence, agent: str) -> str:
    """Whose newest token ``fence`` is compared with: the family's (:data:`FAMILY`, which no
    agent id can spell) or the acting agent's."""
    return FAMILY if fence.family else agent


def stale_write(fence: Fence, agent: str) -> StaleWriteError:
    """The error for a write whose token is older than the newest one seen in its scope."""
    by = "by any agent of the family" if fence.family else f"by agent {agent!r}"
    return StaleWriteError(
        f"fencing token {fence.token} for {fence.name!r} is older than one already used {by}; "
        "this holder lost the lock to a newer one, so its write was refused"
    )


def check_ref(field: str, value: object) -> str:
    """An id that names a row to look up: text, not empty, at most ``MAX_ID_CHARS``, no NUL.
    Anything else is a ValidationError naming the field on every backend (a well-formed id that
    names no visible row is "not found", as usual).
    """
    return check_text(field, value, max_chars=MAX_ID_CHARS)


def check_optional_ref(field: str, value: object) -> str | None:
    return None if value is None else check_ref(field, value)


def check_given_id(value: object, field: str = "id") -> str:
    """A caller-supplied id for a new row (backfill, migration): a UUID in canonical lower-case
    text, so that every backend can hold the row under the same id.

    Raises: ValidationError naming the field.
    """
    try:
        if isinstance(value, str) and str(uuid.UUID(value)) == value:
            return value
    except ValueError:
        pass
    raise ValidationError(f"{field} must be a UUID in lower-case text (e.g. agentbus.uuid7())")


def new_id(value: object = None, field: str = "id") -> str:
    """The id of a new row: a fresh UUIDv7, or the caller's (``check_given_id``)."""
    return uuid7() if value is None else check_given_id(value, field)


def check_agent_ref(field: str, value: object) -> str:
    """Another agent's id (assignee, team member, lead…), by the agent-id rule.

    Raises: ValidationError naming the field.
    """
    try:
        return validate_agent_id(value)
    except InvalidAgentIdError as exc:
        raise ValidationError(f"{field}: {exc}") from exc


_SHORT_TASK_ID = re.compile(r"[0-9a-fA-F]{8}")


def short_task_ref(ref: str) -> str | None:
    """The short task id (the last 8 hex digits of the id, lower case) that a checked task
    reference names, or None when it cannot be one."""
    return ref.lower() if _SHORT_TASK_ID.fullmatch(ref) else None
