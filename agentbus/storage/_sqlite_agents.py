"""SQLite agent registry: the family's agents (id, name, role, status, config JSON).

The registry is family-wide (no per-agent scoping): every agent may read it, and
``upsert_agent`` creates or updates a record. On update, ``name``/``role``/``config`` given as
None keep their stored values; ``status`` is always written. A new record's name defaults to
its id. ``list_agents`` is newest first.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from typing import Any

from ._canonical import canonical_json, check_choice, check_optional_text, now_utc
from ._errors import NotFoundError
from ._models import AGENT_STATUSES, MAX_NAME_CHARS, AgentRecord
from ._rules import check_agent_ref, check_ref
from ._sqlite_codec import AGENT_COLUMNS, agent_from_row, ts
from ._sqlite_db import Database


class SQLiteAgentStore:
    """The agent registry in SQLite."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def upsert_agent(
        self, agent_id: str, *, name: str | None = None, role: str | None = None,
        status: str = "active", config: Mapping[str, Any] | None = None,
    ) -> AgentRecord:  # fmt: skip
        """Create or update an agent's record.

        Raises: ValidationError (an agent id breaking the rule, unknown status, bad
        name/role/config).
        """
        check_agent_ref("agent_id", agent_id)
        check_optional_text("name", name, max_chars=MAX_NAME_CHARS)
        check_optional_text("role", role, max_chars=MAX_NAME_CHARS)
        status = check_choice("status", status, AGENT_STATUSES)
        config_json = None if config is None else canonical_json(config)

        def write(conn: sqlite3.Connection) -> AgentRecord:
            now = ts(now_utc())
            conn.execute(
                "INSERT INTO agents (id, name, role, status, config, created_at, updated_at)"
                " VALUES (?, coalesce(?, ?), ?, ?, coalesce(?, '{}'), ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET name = coalesce(?, name),"
                " role = coalesce(?, role), status = excluded.status,"
                " config = coalesce(?, config), updated_at = excluded.updated_at",
                (agent_id, name, agent_id, role, status, config_json, now, now, name, role,
                 config_json),
            )  # fmt: skip
            return self._fetch(conn, agent_id)

        return await self._db.write(write)

    @staticmethod
    def _fetch(conn: sqlite3.Connection, agent_id: str) -> AgentRecord:
        row = conn.execute(f"SELECT {AGENT_COLUMNS} FROM agents WHERE id = ?", (agent_id,))
        found = row.fetchone()
        if found is None:
            raise NotFoundError(f"agent {agent_id} not found")
        return agent_from_row(found)

    async def get_agent(self, agent_id: str) -> AgentRecord | None:
        check_ref("agent_id", agent_id)

        def read(conn: sqlite3.Connection) -> AgentRecord | None:
            row = conn.execute(f"SELECT {AGENT_COLUMNS} FROM agents WHERE id = ?", (agent_id,))
            found = row.fetchone()
            return None if found is None else agent_from_row(found)

        return await self._db.read(read)

    async def list_agents(self) -> list[AgentRecord]:
        def read(conn: sqlite3.Connection) -> list[AgentRecord]:
            rows = conn.execute(
                f"SELECT {AGENT_COLUMNS} FROM agents ORDER BY created_at DESC, id DESC"
            )
            return [agent_from_row(row) for row in rows]

        return await self._db.read(read)

    async def set_agent_status(self, agent_id: str, status: str) -> AgentRecord:
        """Raises: NotFoundError (no such agent), ValidationError (unknown status)."""
        check_ref("agent_id", agent_id)
        status = check_choice("status", status, AGENT_STATUSES)

        def write(conn: sqlite3.Connection) -> AgentRecord:
            conn.execute(
                "UPDATE agents SET status = ?, updated_at = ? WHERE id = ?",
                (status, ts(now_utc()), agent_id),
            )
            return self._fetch(conn, agent_id)

        return await self._db.write(write)
