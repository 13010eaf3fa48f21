"""Who may do what with a knowledge collection on SQLite: the grant rules as SQL and checks.

The creator of a collection (``knowledge_collections.owner``) owns it for good; other agents
hold what their grant row says (``read`` < ``write`` < ``owner``). ``family``/``public``
collections are readable by every agent without a grant (the shared library; ``permission``
None). A collection the agent cannot read does not exist for it (``NotFoundError``); one it can
read but lacks the permission for raises ``PermissionDeniedError``. The SQL here uses the named
parameter ``:me`` for the acting agent.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any, cast

from ._canonical import parse_json
from ._errors import NotFoundError, PermissionDeniedError
from ._knowledge_rules import RANK
from ._models import (
    CollectionVisibility,
    KnowledgeCollection,
    KnowledgeGrant,
    Permission,
)
from ._sqlite_codec import parse_ts
from ._sqlite_db import Scoped

LIBRARY = "('family', 'public')"

PERMITTED_SQL = (
    "SELECT id FROM knowledge_collections WHERE owner = :me"
    f" UNION SELECT id FROM knowledge_collections WHERE visibility IN {LIBRARY}"
    " UNION SELECT collection_id FROM knowledge_collection_grants WHERE agent_id = :me"
)
"""The ids of every collection ``:me`` may read (one indexed arm per way of reading)."""

HELD = "(CASE WHEN k.owner = :me THEN 'owner' ELSE g.permission END)"
"""``:me``'s permission on collection ``k`` (NULL: none; the library is still readable)."""

COLLECTION_FROM = (
    "knowledge_collections k LEFT JOIN knowledge_collection_grants g"
    " ON g.collection_id = k.id AND g.agent_id = :me"
)
READABLE = f"({HELD} IS NOT NULL OR k.visibility IN {LIBRARY})"
COLLECTION_COLUMNS = (
    "k.id, k.owner, k.name, k.description, k.visibility, k.metadata,"
    f" (SELECT count(*) FROM knowledge_documents d WHERE d.collection_id = k.id), {HELD},"
    " k.created_at"
)
GRANT_COLUMNS = "collection_id, agent_id, permission, granted_by, granted_at"


def collection_from_row(row: Sequence[Any]) -> KnowledgeCollection:
    return KnowledgeCollection(
        id=row[0],
        owner=row[1],
        name=row[2],
        description=row[3],
        visibility=cast(CollectionVisibility, row[4]),
        metadata=parse_json(row[5]),
        document_count=row[6],
        permission=cast(Permission | None, row[7]),
        created_at=parse_ts(row[8]),
    )


def grant_from_row(row: Sequence[Any]) -> KnowledgeGrant:
    return KnowledgeGrant(
        collection_id=row[0],
        agent_id=row[1],
        permission=cast(Permission, row[2]),
        granted_by=row[3],
        granted_at=parse_ts(row[4]),
    )


class AccessOps(Scoped):
    """Permission checks shared by the collection, document and search parts."""

    def _collection(self, conn: sqlite3.Connection, collection_id: str) -> KnowledgeCollection:
        """The collection as this agent sees it.

        Raises: NotFoundError (no such collection, or not readable by this agent).
        """
        row = conn.execute(
            f"SELECT {COLLECTION_COLUMNS} FROM {COLLECTION_FROM} WHERE k.id = :id AND {READABLE}",
            {"me": self._agent, "id": collection_id},
        ).fetchone()
        if row is None:
            raise NotFoundError(f"knowledge collection {collection_id} not found")
        return collection_from_row(row)

    def _require(
        self, conn: sqlite3.Connection, collection_id: str, need: Permission
    ) -> tuple[Permission | None, str]:
        """This agent's permission on the collection (at least ``need``) and its creator.

        Raises: NotFoundError (not readable), PermissionDeniedError (readable, not enough).
        """
        row = conn.execute(
            f"SELECT k.visibility, {HELD}, k.owner FROM {COLLECTION_FROM} WHERE k.id = :id",
            {"me": self._agent, "id": collection_id},
        ).fetchone()
        if row is None or (row[1] is None and row[0] not in ("family", "public")):
            raise NotFoundError(f"knowledge collection {collection_id} not found")
        have = cast(Permission | None, row[1])
        if need != "read" and (have is None or RANK[have] < RANK[need]):
            has = f"has {have} permission" if have else "reads it as part of the shared library"
            raise PermissionDeniedError(
                f"agent {self._agent!r} {has} on knowledge collection {collection_id}; this "
                f"needs {need} permission (ask an owner of the collection to grant it)"
            )
        return have, str(row[2])

    def _document_collection(self, conn: sqlite3.Connection, document_id: str) -> str:
        """The collection of a document this agent can read.

        Raises: NotFoundError (no such document, or its collection is not readable).
        """
        row = conn.execute(
            "SELECT collection_id FROM knowledge_documents"
            f" WHERE id = :id AND collection_id IN ({PERMITTED_SQL})",
            {"me": self._agent, "id": document_id},
        ).fetchone()
        if row is None:
            raise NotFoundError(f"knowledge document {document_id} not found")
        return str(row[0])
