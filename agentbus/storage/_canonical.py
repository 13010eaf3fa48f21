"""Canonical forms every backend stores, so two backends hold byte-identical rows.

- Text: NUL is refused (PostgreSQL cannot store it; SQLite would, and the two would diverge);
  empty summaries/titles are refused; lengths are bounded.
- Timestamps: timezone-aware, converted to UTC, microsecond precision (PostgreSQL's resolution).
- JSON: canonical encoding with sorted keys; duplicate keys in JSON text are refused.
- Vectors: float32, exactly ``embeddingDim`` values, all finite.
- Content hash: sha256 of the summary with whitespace collapsed, for de-duplication.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import msgspec
import numpy as np
import numpy.typing as npt

from ._errors import DimensionMismatchError, ValidationError

T = TypeVar("T", bound=str)

_canonical_json = msgspec.json.Encoder(order="sorted")


def check_text(field: str, value: object, *, max_chars: int, allow_empty: bool = False) -> str:
    """Raises: ValidationError naming the field (not text, empty, too long, or holding NUL)."""
    if not isinstance(value, str):
        raise ValidationError(f"{field} must be text, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise ValidationError(f"{field} must not be empty")
    if len(value) > max_chars:
        raise ValidationError(f"{field} is {len(value)} characters; the limit is {max_chars}")
    if "\x00" in value:
        raise ValidationError(f"{field} contains a NUL character, which storage refuses")
    return value


def check_optional_text(field: str, value: object, *, max_chars: int) -> str | None:
    return None if value is None else check_text(field, value, max_chars=max_chars)


def check_choice(field: str, value: object, choices: Sequence[T]) -> T:
    """Raises: ValidationError listing the allowed values."""
    for choice in choices:
        if value == choice:
            return choice
    raise ValidationError(f"{field} {value!r} is unknown; use one of {', '.join(choices)}")


def utc(value: datetime) -> datetime:
    """A timezone-aware datetime in UTC with microsecond precision.

    Raises: ValidationError for naive datetimes (their zone would be a guess).
    """
    if not isinstance(value, datetime):
        raise ValidationError(f"expected a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValidationError("timestamps must be timezone-aware (e.g. datetime.now(UTC))")
    return value.astimezone(UTC)


def optional_utc(value: datetime | None) -> datetime | None:
    return None if value is None else utc(value)


def now_utc() -> datetime:
    return datetime.now(UTC)


def canonical_json(value: Mapping[str, Any] | None) -> str:
    """Sorted-key compact JSON text of a mapping (``{}`` for None).

    Raises: ValidationError when the value is not JSON (NaN, sets, objects, NUL in text).
    """
    if value is None:
        return "{}"
    if not isinstance(value, Mapping):
        raise ValidationError(f"metadata must be a mapping, got {type(value).__name__}")
    try:
        # msgspec would write NaN/Infinity as null and sets, datetimes, UUIDs, bytes, Decimals as
        # arrays/strings (metadata that does not read back as written), so check explicitly.
        _check_plain_json(value)
        text = _canonical_json.encode(value).decode()
    except (TypeError, msgspec.EncodeError) as exc:
        raise ValidationError(f"metadata is not JSON-encodable: {exc}") from exc
    if "\\u0000" in text:
        raise ValidationError("metadata contains a NUL character, which storage refuses")
    return text


def _check_plain_json(value: Any) -> None:
    """Only JSON values: str, int, finite float, bool, None, str-keyed mappings, lists/tuples."""
    if value is None or isinstance(value, (str, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValidationError("metadata holds NaN or infinity, which JSON cannot represent")
    elif isinstance(value, Mapping):
        for item in value.values():
            _check_plain_json(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _check_plain_json(item)
    else:
        raise ValidationError(
            f"metadata holds a {type(value).__name__}, which is not JSON "
            "(use str, int, float, bool, None, dict or list)"
        )


def parse_json(text: str | bytes) -> dict[str, Any]:
    """Parse stored JSON, refusing duplicate keys."""

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in pairs:
            if key in result:
                raise ValidationError(f"JSON key {key!r} appears twice")
            result[key] = value
        return result

    parsed = json.loads(text, object_pairs_hook=no_duplicates)
    if not isinstance(parsed, dict):
        raise ValidationError("expected a JSON object")
    return parsed


def check_vector(value: object, dim: int) -> npt.NDArray[np.float32]:
    """A float32 vector of ``dim`` finite values.

    Raises: DimensionMismatchError (expected and got), ValidationError (NaN/inf, not numbers).
    """
    try:
        array = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"embedding must be a sequence of numbers: {exc}") from exc
    if array.ndim != 1 or array.shape[0] != dim:
        got = array.shape[0] if array.ndim == 1 else f"shape {array.shape}"
        raise DimensionMismatchError(
            f"embedding has {got} dimensions; this store expects {dim} (storage.embeddingDim)"
        )
    if not np.isfinite(array).all():
        raise ValidationError("embedding holds NaN or infinity")
    return array


def content_hash(summary: str) -> str:
    """sha256 of the summary with runs of whitespace collapsed (the de-duplication key)."""
    return hashlib.sha256(" ".join(summary.split()).encode()).hexdigest()


def short_id(task_id: str) -> str:
    """Humans' handle for a task: the id's last 8 hex digits (random bits, unlike its prefix)."""
    return task_id.replace("-", "")[-8:]


def check_unit(field: str, value: object) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 1:
        raise ValidationError(f"{field} must be a number from 0 to 1, got {value!r}")
    return float(value)


def chunk_text(content: str, *, size: int = 1200, overlap: int = 150) -> list[str]:
    """Split a document into chunks for search (the documented rule, the same on every backend).

    Text up to ``size`` characters is one chunk. Longer text is cut into windows of at most
    ``size`` characters that end at the last paragraph break, else sentence end, else space in
    the window's second half (a hard cut when there is none); the next window starts ``overlap``
    characters before the previous end, so a sentence cut in two is still found whole.
    """
    text = content.strip()
    if len(text) <= size:
        return [text]
    chunks: list[str] = []
    start = 0
    while start < len(text):
        end = min(len(text), start + size)
        if end < len(text):
            window = text[start:end]
            for separator in ("\n\n", ". ", " "):
                cut = window.rfind(separator, size // 2)
                if cut != -1:
                    end = start + cut + len(separator)
                    break
        chunk = text[start:end].strip()
        if chunk:
            chunks.append(chunk)
        if end >= len(text):
            break
        start = max(end - overlap, start + 1)
    return chunks
