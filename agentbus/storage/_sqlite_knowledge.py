"""SQLite knowledge store: collections and their grants (documents and search live beside it).

Rules (``_knowledge_rules``, shared with PostgreSQL; ``_sqlite_knowledge_acl`` checks them):

- The creator of a collection owns it for good (``owner``; it holds no grant row, and granting
  to or revoking it is a ValidationError), so a collection is never left without an owner.
- Only an owner (the creator, or an agent granted ``owner``) grants, changes a grant, revokes,
  lists the grants, or deletes the collection. ``write`` implies ``read``. A grant names one
  agent: no wildcards, nor ids that read like patterns (``_``, ``.``).
- Nobody can claim a collection: every grant comes from an owner, and an agent without
  ``owner`` cannot raise its own permission.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from typing import Any

from ._canonical import canonical_json, check_choice, check_optional_text, check_text, now_utc
from ._errors import NotFoundError
from ._knowledge_rules import COLLECTION_VISIBILITIES, check_grantee, creator_is_permanent
from ._models import (
    MAX_NAME_CHARS,
    MAX_SUMMARY_CHARS,
    PERMISSIONS,
    CollectionVisibility,
    KnowledgeCollection,
    KnowledgeGrant,
    Permission,
)
from ._rules import check_ref, new_id
from ._sqlite_codec import ts
from ._sqlite_knowledge_acl import (
    COLLECTION_COLUMNS,
    COLLECTION_FROM,
    GRANT_COLUMNS,
    HELD,
    LIBRARY,
    AccessOps,
    collection_from_row,
    grant_from_row,
)
from ._sqlite_knowledge_docs import DocumentOps
from ._sqlite_knowledge_search import KnowledgeSearchOps


class CollectionOps(AccessOps):
    async def create_collection(
        self, name: str, *, description: str | None = None,
        visibility: CollectionVisibility = "private", metadata: Mapping[str, Any] | None = None,
        id: str | None = None,
    ) -> KnowledgeCollection:  # fmt: skip
        """Create a collection owned by this agent.

        Raises: ValidationError (name, visibility, metadata, id taken).
        """
        collection = (
            new_id(id),
            self._agent,
            check_text("name", name, max_chars=MAX_NAME_CHARS),
            check_optional_text("description", description, max_chars=MAX_SUMMARY_CHARS),
            check_choice("visibility", visibility, COLLECTION_VISIBILITIES),
            canonical_json(metadata),
            ts(now_utc()),
        )

        def write(conn: sqlite3.Connection) -> KnowledgeCollection:
            conn.execute(
                "INSERT INTO knowledge_collections (id, owner, name, description, visibility,"
                " metadata, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                collection,
            )
            return self._collection(conn, collection[0])

        return await self._db.write(write)

    async def get_collection(self, collection_id: str) -> KnowledgeCollection | None:
        """The collection, or None when this agent cannot read it.

        Raises: ValidationError (a malformed id).
        """
        check_ref("collection_id", collection_id)

        def read(conn: sqlite3.Connection) -> KnowledgeCollection | None:
            try:
                return self._collection(conn, collection_id)
            except NotFoundError:
                return None

        return await self._db.read(read)

    async def list_collections(
        self, *, permission: Permission = "read", include_library: bool = True
    ) -> list[KnowledgeCollection]:
        """Collections this agent may ``read`` (or ``write``/``owner``), by name then id.

        ``include_library`` adds the ``family``/``public`` collections it holds no grant on
        (they are readable, so only when ``permission`` is ``read``).
        """
        check_choice("permission", permission, PERMISSIONS)
        allowed = PERMISSIONS[PERMISSIONS.index(permission) :]
        where = f"{HELD} IN ({', '.join(repr(p) for p in allowed)})"
        if permission == "read" and include_library:
            where = f"({where} OR k.visibility IN {LIBRARY})"

        def read(conn: sqlite3.Connection) -> list[KnowledgeCollection]:
            rows = conn.execute(
                f"SELECT {COLLECTION_COLUMNS} FROM {COLLECTION_FROM} WHERE {where}"
                " ORDER BY k.name, k.id",
                {"me": self._agent},
            )
            return [collection_from_row(row) for row in rows]

        return await self._db.read(read)

    async def delete_collection(self, collection_id: str) -> None:
        """Delete the collection with its documents, chunks and grants (owner only).

        Raises: NotFoundError (not readable), PermissionDeniedError (not an owner).
        """
        check_ref("collection_id", collection_id)

        def write(conn: sqlite3.Connection) -> None:
            self._require(conn, collection_id, "owner")
            conn.execute("DELETE FROM knowledge_collections WHERE id = ?", (collection_id,))

        await self._db.write(write)

    # -- grants -------------------------------------------------------------------------------

    async def grant(
        self, collection_id: str, agent_id: str, permission: Permission
    ) -> KnowledgeGrant:
        """Give ``agent_id`` exactly ``permission`` (replacing its grant); owners only.

        Raises: NotFoundError, PermissionDeniedError (not an owner), ValidationError (a
        wildcard or invalid agent id, an unknown permission, the collection's creator).
        """
        check_ref("collection_id", collection_id)
        grantee = check_grantee(agent_id)
        permission = check_choice("permission", permission, PERMISSIONS)

        def write(conn: sqlite3.Connection) -> KnowledgeGrant:
            _, creator = self._require(conn, collection_id, "owner")
            if grantee == creator:
                raise creator_is_permanent(collection_id, creator)
            row = conn.execute(
                f"INSERT INTO knowledge_collection_grants ({GRANT_COLUMNS})"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (collection_id, agent_id) DO UPDATE SET"
                " permission = excluded.permission, granted_by = excluded.granted_by,"
                f" granted_at = excluded.granted_at RETURNING {GRANT_COLUMNS}",
                (collection_id, grantee, permission, self._agent, ts(now_utc())),
            ).fetchone()
            return grant_from_row(row)

        return await self._db.write(write)

    async def revoke(self, collection_id: str, agent_id: str) -> bool:
        """Remove ``agent_id``'s grant (owners only); False when it had none.

        Raises: NotFoundError, PermissionDeniedError, ValidationError (an invalid agent id, the
        collection's creator, who owns it for good).
        """
        check_ref("collection_id", collection_id)
        grantee = check_grantee(agent_id)

        def write(conn: sqlite3.Connection) -> bool:
            _, creator = self._require(conn, collection_id, "owner")
            if grantee == creator:
                raise creator_is_permanent(collection_id, creator)
            cursor = conn.execute(
                "DELETE FROM knowledge_collection_grants WHERE collection_id = ? AND agent_id = ?",
                (collection_id, grantee),
            )
            return cursor.rowcount > 0

        return await self._db.write(write)

    async def list_grants(self, collection_id: str) -> list[KnowledgeGrant]:
        """The collection's grants by agent id (owners only; the creator has none).

        Raises: NotFoundError (not readable), PermissionDeniedError (readable, not an owner),
        ValidationError (a malformed id).
        """
        check_ref("collection_id", collection_id)

        def read(conn: sqlite3.Connection) -> list[KnowledgeGrant]:
            self._require(conn, collection_id, "owner")
            rows = conn.execute(
                f"SELECT {GRANT_COLUMNS} FROM knowledge_collection_grants"
                " WHERE collection_id = ? ORDER BY agent_id",
                (collection_id,),
            )
            return [grant_from_row(row) for row in rows]

        return await self._db.read(read)


class SQLiteKnowledgeStore(CollectionOps, DocumentOps, KnowledgeSearchOps):
    """One agent's view of the shared knowledge in SQLite (see the module docstrings)."""
