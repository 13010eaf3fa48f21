"""Knowledge on PostgreSQL: collections and their per-agent grants (documents and search are in
``_pg_knowledge_docs``).

The rules (migration 0004 enforces them for the app role; every method here also checks them, so
that the answer is the contract's error rather than a policy violation):

- readable: own collections, granted ones, and ``family``/``public`` ones (the library);
- ``read`` < ``write`` < ``owner`` (``_knowledge_rules``, shared with SQLite); the creator owns
  its collection for good (granting to or revoking it is a ValidationError, so a collection is
  never left without an owner); only an owner grants, revokes, lists grants, changes or deletes;
- a grant names one agent (the agent-id rule), so there are no wildcard grants, and nobody
  becomes an owner but through an owner's grant, so an orphaned collection cannot be claimed;
- a collection this agent cannot read is not found (None / ``NotFoundError``); one it can read
  but may not do this to raises ``PermissionDeniedError``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._canonical import canonical_json, check_choice, check_optional_text, check_text, now_utc
from ._errors import NotFoundError
from ._knowledge_rules import (
    COLLECTION_VISIBILITIES,
    RANK,
    check_grantee,
    creator_is_permanent,
)
from ._models import (
    MAX_NAME_CHARS,
    MAX_SUMMARY_CHARS,
    PERMISSIONS,
    CollectionVisibility,
    KnowledgeCollection,
    KnowledgeGrant,
    Permission,
)
from ._pg_checks import affected, ref_id
from ._pg_core import Scope
from ._pg_knowledge_docs import KnowledgeDocuments, require
from ._pg_rows import (
    COLLECTION_COLUMNS,
    GRANT_COLUMNS,
    collection as collection_row,
    grant as grant_row,
)
from ._rules import new_id

_GRANT = f"""
INSERT INTO knowledge_collection_grants AS kg
    (collection_id, agent_id, permission, granted_by, granted_at)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (collection_id, agent_id) DO UPDATE
    SET permission = EXCLUDED.permission, granted_by = EXCLUDED.granted_by,
        granted_at = EXCLUDED.granted_at
RETURNING {GRANT_COLUMNS}
"""

# Collections this agent may use with at least permission $2 (1 read, 2 write, 3 owner); $3:
# library collections (read through their visibility only) count as read. Explicit arms beside
# the policy's (the granted ids computed once, as an InitPlan), by name then id in byte order
# (never a text collation).
_LIST = """
SELECT kc.id, kc.agent_id AS owner, kc.name, kc.description, kc.visibility, kc.metadata,
       kc.created_at, kc.held AS permission,
       (SELECT count(*) FROM knowledge_documents kd WHERE kd.collection_id = kc.id)
           AS document_count
FROM (
    SELECT kc.*, CASE WHEN kc.agent_id = $1 THEN 'owner' ELSE kg.permission END AS held
    FROM knowledge_collections kc
    LEFT JOIN knowledge_collection_grants kg ON kg.collection_id = kc.id AND kg.agent_id = $1
    WHERE kc.agent_id = $1 OR kc.visibility IN ('family', 'public')
       OR kc.id = ANY ((SELECT agentbus_granted_collections())::text[])
) kc
WHERE CASE kc.held WHEN 'owner' THEN 3 WHEN 'write' THEN 2 WHEN 'read' THEN 1
                   ELSE CASE WHEN $3 THEN 1 ELSE 0 END END >= $2
ORDER BY kc.name COLLATE "C", kc.id COLLATE "C"
"""


class PgKnowledge(KnowledgeDocuments):
    """:class:`~agentbus.storage.KnowledgeStore` for one agent (from ``PgAdapter.for_agent``)."""

    def __init__(self, scope: Scope) -> None:
        self._scope = scope
        self._agent = scope.agent
        self._dim = scope.core.embedding_dim

    async def create_collection(
        self, name: str, *, description: str | None = None,
        visibility: CollectionVisibility = "private", metadata: Mapping[str, Any] | None = None,
        id: str | None = None,
    ) -> KnowledgeCollection:  # fmt: skip
        """A collection this agent owns; ``family``/``public`` ones join the shared library.

        Raises: ValidationError (bad value, an id already taken).
        """
        values = (
            new_id(id), self._agent,
            check_text("name", name, max_chars=MAX_NAME_CHARS),
            check_optional_text("description", description, max_chars=MAX_SUMMARY_CHARS),
            check_choice("visibility", visibility, COLLECTION_VISIBILITIES),
            canonical_json(metadata), now_utc(),
        )  # fmt: skip
        async with self._scope.tx("creating a collection") as conn:
            row = await conn.fetchrow(
                "INSERT INTO knowledge_collections AS kc (id, agent_id, name, description,"
                " visibility, metadata, created_at, updated_at)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $7)"
                # The permission helper's snapshot predates the new row: the creator owns it.
                " RETURNING kc.id, kc.agent_id AS owner, kc.name, kc.description, kc.visibility,"
                " kc.metadata, kc.created_at, 'owner' AS permission, 0 AS document_count",
                *values,
            )
        assert row is not None
        return collection_row(row)

    async def get_collection(self, collection_id: str) -> KnowledgeCollection | None:
        """None when it does not exist or this agent may not read it."""
        async with self._scope.tx("reading a collection") as conn:
            row = await conn.fetchrow(
                f"SELECT {COLLECTION_COLUMNS} FROM knowledge_collections kc WHERE kc.id = $1",
                ref_id(collection_id, "collection_id"),
            )
        return None if row is None else collection_row(row)

    async def list_collections(
        self, *, permission: Permission = "read", include_library: bool = True
    ) -> list[KnowledgeCollection]:
        """Collections this agent may ``read`` (own, granted, and with ``include_library`` the
        family/public ones), or ``write`` / ``owner``; by name then id."""
        needed = RANK[check_choice("permission", permission, PERMISSIONS)]
        async with self._scope.tx("listing collections") as conn:
            rows = await conn.fetch(_LIST, self._agent, needed, bool(include_library))
        return [collection_row(row) for row in rows]

    async def delete_collection(self, collection_id: str) -> None:
        """Delete a collection with its documents, chunks and grants (owners only).

        Raises: NotFoundError, PermissionDeniedError.
        """
        collection_id = ref_id(collection_id, "collection_id")
        async with self._scope.tx("deleting a collection") as conn:
            await require(conn, self._agent, collection_id, "owner", "deleting it")
            status = await conn.execute(
                "DELETE FROM knowledge_collections kc WHERE kc.id = $1", collection_id
            )
        if affected(status) == 0:  # deleted (or its grant revoked) meanwhile
            raise NotFoundError(f"collection {collection_id} not found")

    async def grant(
        self, collection_id: str, agent_id: str, permission: Permission
    ) -> KnowledgeGrant:
        """Give ``agent_id`` ``permission`` on the collection (replacing its grant, if any).

        Raises: NotFoundError, PermissionDeniedError (not an owner), ValidationError (an
        invalid agent id such as ``*``, an unknown permission, the collection's creator).
        """
        collection_id = ref_id(collection_id, "collection_id")
        grantee = check_grantee(agent_id)
        permission = check_choice("permission", permission, PERMISSIONS)
        async with self._scope.tx("granting a permission") as conn:
            _, owner = await require(conn, self._agent, collection_id, "owner", "granting")
            if grantee == owner:
                raise creator_is_permanent(collection_id, owner)
            row = await conn.fetchrow(
                _GRANT, collection_id, grantee, permission, self._agent, now_utc()
            )
        assert row is not None
        return grant_row(row)

    async def revoke(self, collection_id: str, agent_id: str) -> bool:
        """Remove ``agent_id``'s grant: True if it had one (owners only).

        Raises: NotFoundError, PermissionDeniedError, ValidationError (an invalid agent id, the
        collection's creator, who owns it for good).
        """
        collection_id = ref_id(collection_id, "collection_id")
        grantee = check_grantee(agent_id)
        async with self._scope.tx("revoking a permission") as conn:
            _, owner = await require(conn, self._agent, collection_id, "owner", "revoking")
            if grantee == owner:
                raise creator_is_permanent(collection_id, owner)
            status = await conn.execute(
                "DELETE FROM knowledge_collection_grants kg"
                " WHERE kg.collection_id = $1 AND kg.agent_id = $2",
                collection_id, grantee,
            )  # fmt: skip
        return affected(status) > 0

    async def list_grants(self, collection_id: str) -> list[KnowledgeGrant]:
        """The collection's grants by agent id (owners only; the creator has none).

        Raises: NotFoundError, PermissionDeniedError.
        """
        collection_id = ref_id(collection_id, "collection_id")
        async with self._scope.tx("listing grants") as conn:
            await require(conn, self._agent, collection_id, "owner", "listing its grants")
            rows = await conn.fetch(
                f"SELECT {GRANT_COLUMNS} FROM knowledge_collection_grants kg"
                ' WHERE kg.collection_id = $1 ORDER BY kg.agent_id COLLATE "C"',
                collection_id,
            )
        return [grant_row(row) for row in rows]
