"""The knowledge rules both backends apply in Python, in one place so that they cannot drift:
who a grant may name, what a permission implies, how the creator keeps its collection, and what
a document's embeddings must look like.

- ``read`` < ``write`` < ``owner`` (:data:`RANK`): write implies read; owners grant, revoke, list
  the grants and delete the collection; writers (and owners) ingest and delete documents.
- The creator owns its collection for good: no grant can be made for it and it cannot be revoked
  (:func:`creator_is_permanent`), so a collection never loses its last owner and cannot be
  claimed. Owners granted later are ordinary grants: they can be revoked.
- A grant names one agent (the agent-id rule, with a letter or digit): no wildcards.
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Number
from typing import get_args

import numpy as np
import numpy.typing as npt

from ._canonical import check_vector
from ._errors import ValidationError
from ._models import CollectionVisibility, Permission
from ._rules import check_agent_ref

RANK: dict[Permission, int] = {"read": 1, "write": 2, "owner": 3}
COLLECTION_VISIBILITIES: tuple[CollectionVisibility, ...] = get_args(CollectionVisibility)


def check_grantee(agent_id: object) -> str:
    """One agent by the agent-id rule, and not one that reads like a pattern: ``_`` and ``.``
    are legal in agent ids but wildcards of LIKE / regular expressions on their own.

    Raises: ValidationError.
    """
    grantee = check_agent_ref("agent_id", agent_id)
    if not any(c.isalnum() for c in grantee):
        raise ValidationError(
            f"{grantee!r} is not an agent: a grant names one agent (no wildcards); to share with "
            'every agent, create the collection with visibility "family" or "public"'
        )
    return grantee


def creator_is_permanent(collection_id: str, creator: str) -> ValidationError:
    """The error for granting to, downgrading or revoking a collection's creator."""
    return ValidationError(
        f"agent {creator!r} created knowledge collection {collection_id} and owns it for good: "
        "its permission cannot be granted, changed or revoked (owners granted later can be)"
    )


def check_embeddings(
    embeddings: Sequence[Sequence[float]] | None, chunks: int, dim: int
) -> list[npt.NDArray[np.float32]] | None:
    """One float32 vector per chunk of ``chunk_text(content)``, in order (None: no vectors).

    Raises: ValidationError (not a list of vectors, another count, NaN), DimensionMismatchError.
    """
    if embeddings is None:
        return None
    if isinstance(embeddings, (str, bytes)) or not hasattr(embeddings, "__len__"):
        raise ValidationError("embeddings must be a list of vectors, one per chunk")
    if len(embeddings) and isinstance(embeddings[0], Number):
        raise ValidationError(
            f"embeddings must be a list of vectors, one per chunk (this document has {chunks} "
            "chunk(s)); got a single vector: wrap it in a list"
        )
    if len(embeddings) != chunks:
        raise ValidationError(
            f"embeddings has {len(embeddings)} vector(s) but the document has {chunks} "
            "chunk(s): embed each text of chunk_text(content), in order"
        )
    return [check_vector(vector, dim) for vector in embeddings]
