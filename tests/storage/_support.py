"""Helpers for the storage contract suite: vectors with known similarities, id checks, waiting."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta

import numpy as np
import numpy.typing as npt

from agentbus.storage._models import MAX_ID_CHARS

EMBEDDING_DIM = 384
"""The contract suite's vector dimension (all-MiniLM-L6-v2, the shared corpus's model)."""

MALFORMED_IDS: tuple[object, ...] = ("", "   ", "x" * (MAX_ID_CHARS + 1), "a\x00b", 42)
"""Ids that name no row on any backend: every call refuses them with ValidationError (a
well-formed id naming no visible row is "not found" instead)."""

_A_UUID7 = uuid.UUID("0190a4c2-7b3e-7abc-8def-0123456789ab")
NOT_LOWER_CASE_UUIDS: tuple[str, ...] = (
    "abc", "0123abcd", "backfilled-row-1", str(_A_UUID7).upper(), "{" + str(_A_UUID7) + "}",
    _A_UUID7.hex, f"urn:uuid:{_A_UUID7}",
)  # fmt: skip
"""Ids a caller may not give a new row: a new row's id is a UUID in canonical lower-case text."""

FloatArray = npt.NDArray[np.float32]


def unit(seed: int, dim: int = EMBEDDING_DIM) -> FloatArray:
    """A deterministic random unit vector."""
    vector = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return (vector / np.linalg.norm(vector)).astype(np.float32)


def with_cosine(query: FloatArray, cosine: float, seed: int) -> FloatArray:
    """A unit vector whose cosine similarity to the unit vector ``query`` is ``cosine``."""
    other = unit(seed, query.shape[0]).astype(np.float64)
    q = query.astype(np.float64)
    other -= other.dot(q) * q
    other /= np.linalg.norm(other)
    vector = cosine * q + np.sqrt(1 - cosine**2) * other
    return vector.astype(np.float32)


def cosine(a: Sequence[float] | FloatArray, b: Sequence[float] | FloatArray) -> float:
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(x.dot(y) / (np.linalg.norm(x) * np.linalg.norm(y)))


def as_list(vector: FloatArray) -> list[float]:
    return [float(value) for value in vector]


def is_uuid7(value: str) -> bool:
    """Canonical lower-case UUID text of version 7 with the RFC 9562 variant."""
    try:
        parsed = uuid.UUID(value)
    except (ValueError, TypeError):
        return False
    return str(parsed) == value and parsed.version == 7 and parsed.variant == uuid.RFC_4122


def is_utc(value: datetime | None) -> bool:
    return value is not None and value.tzinfo is not None and value.utcoffset() == timedelta(0)


def future(days: float) -> datetime:
    """A timezone-aware instant ``days`` from now, with microseconds."""
    return (datetime.now(UTC) + timedelta(days=days)).replace(microsecond=123456)


def with_suffix(task_id: str, suffix: str) -> str:
    """``task_id`` with its last 8 hex digits replaced (still a valid UUIDv7: they are random)."""
    return task_id[:-8] + suffix


async def not_refused(
    error: type[BaseException], calls: dict[str, Callable[[], Awaitable[object]]]
) -> list[str]:
    """Run each call; return a line for every call that did not raise ``error`` (so one failing
    assertion lists all of them)."""
    problems = []
    for name, call in calls.items():
        try:
            await call()
        except error:
            continue
        except Exception as exc:
            problems.append(f"{name}: raised {type(exc).__name__}: {exc}")
        else:
            problems.append(f"{name}: accepted")
    return problems


async def outcome(call: Callable[[], Awaitable[object]]) -> object:
    """The call's result, or the name of the exception it raised (to compare two calls)."""
    try:
        return await call()
    except Exception as exc:
        return type(exc).__name__
