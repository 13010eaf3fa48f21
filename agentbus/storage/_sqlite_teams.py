"""SQLite teams: membership, one lead, disbanding.

A team is visible to its creator and to its members (past members of a disbanded team
included: the members are kept for the record). Only its creator or its lead may change it (add,
re-role or remove members; disband); any member may leave it (``remove_member`` of itself).
Another agent that sees the team gets PermissionDeniedError, one that does not see it
NotFoundError. A team has exactly one lead, who is a member with role ``lead``: making another
member lead (``add_member``/``update_member`` with ``role="lead"``) hands the role over and the
previous lead stays as a ``member``; the lead cannot be demoted or removed directly (hand the
role over first). ``disband_team`` sets status ``disbanded``: members stay listed in
``get_team`` but ``team_members()`` is empty, ``team`` rows of the team are no longer visible
through it, and membership can no longer change (leaving included). Ids follow the rule of
every backend (``_rules``): a malformed team or agent id is a ValidationError, a team this agent
cannot see is "not found".
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any, cast

import msgspec

from ._canonical import canonical_json, check_choice, check_text, now_utc, parse_json
from ._errors import NotFoundError, PermissionDeniedError, ValidationError
from ._models import MAX_NAME_CHARS, TEAM_ROLES, Team, TeamMember, TeamRole, TeamStatus
from ._rules import check_agent_ref, check_ref, new_id
from ._sqlite_codec import member_from_row, one, parse_ts, ts
from ._sqlite_db import Scoped

_VISIBLE = (
    " (t.created_by = ? OR EXISTS (SELECT 1 FROM team_members tm"
    " WHERE tm.team_id = t.id AND tm.agent_id = ?))"
)
_MEMBERS = "SELECT agent_id, role, joined_at FROM team_members WHERE team_id = ?"


class SQLiteTeamStore(Scoped):
    """One agent's view of the teams in SQLite."""

    def _team(self, conn: sqlite3.Connection, team_id: str) -> Team | None:
        row = conn.execute(
            "SELECT t.id, t.name, t.lead, t.status, t.metadata, t.created_at FROM teams t"
            f" WHERE t.id = ? AND{_VISIBLE}",
            (team_id, self._agent, self._agent),
        ).fetchone()
        if row is None:
            return None
        members = conn.execute(f"{_MEMBERS} ORDER BY joined_at, member_key", (team_id,))
        return Team(
            id=row[0],
            name=row[1],
            lead=row[2],
            status=cast(TeamStatus, row[3]),
            members=[member_from_row(member) for member in members],
            metadata=parse_json(row[4]),
            created_at=parse_ts(row[5]),
        )

    def _managed(
        self, conn: sqlite3.Connection, team_id: str, *, allow_disbanded: bool = False
    ) -> Team:
        """The team, when this agent may change it. Raises: NotFoundError (not visible),
        PermissionDeniedError (neither its creator nor its lead), ValidationError (disbanded,
        unless ``allow_disbanded``)."""
        team = self._team_or_fail(conn, team_id)
        creator = one(conn, "SELECT created_by FROM teams WHERE id = ?", (team_id,))
        if self._agent not in (creator, team.lead):
            raise PermissionDeniedError(
                f"team {team_id} can be changed by its creator or its lead only, not by agent "
                f"{self._agent!r}"
            )
        if not allow_disbanded:
            self._require_active(team)
        return team

    @staticmethod
    def _require_active(team: Team) -> None:
        if team.status != "active":
            raise ValidationError(f"team {team.id} is disbanded; its membership cannot change")

    async def create_team(
        self, name: str, *, lead: str | None = None, members: Sequence[str] = (),
        metadata: Mapping[str, Any] | None = None, id: str | None = None,
    ) -> Team:  # fmt: skip
        """The lead (default: this agent) is a member with role ``lead``; ``members`` join after
        it, in order (duplicates ignored).

        Raises: ValidationError.
        """
        team_id = new_id(id)
        check_text("name", name, max_chars=MAX_NAME_CHARS)
        lead = self._agent if lead is None else check_agent_ref("lead", lead)
        if isinstance(members, str):
            raise ValidationError("members must be a sequence of agent ids, not one string")
        others = [check_agent_ref("member", member) for member in members]
        meta = canonical_json(metadata)

        def write(conn: sqlite3.Connection) -> Team:
            now = ts(now_utc())
            conn.execute(
                "INSERT INTO teams (id, name, lead, status, metadata, created_by, created_at)"
                " VALUES (?, ?, ?, 'active', ?, ?, ?)",
                (team_id, name, lead, meta, self._agent, now),
            )
            roster = [(lead, "lead")] + [(agent, "member") for agent in others if agent != lead]
            conn.executemany(
                "INSERT INTO team_members (team_id, agent_id, role, joined_at)"
                " VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [(team_id, agent, role, now) for agent, role in roster],
            )
            return self._team_or_fail(conn, team_id)

        return await self._db.write(write)

    def _team_or_fail(self, conn: sqlite3.Connection, team_id: str) -> Team:
        team = self._team(conn, team_id)
        if team is None:
            raise NotFoundError(f"team {team_id} not found")
        return team

    async def get_team(self, team_id: str) -> Team | None:
        """The team with every member in join order (None when not visible)."""
        check_ref("team_id", team_id)
        return await self._db.read(lambda conn: self._team(conn, team_id))

    async def list_teams(self, *, include_disbanded: bool = False) -> list[Team]:
        """Teams this agent is a member of, newest first."""

        def read(conn: sqlite3.Connection) -> list[Team]:
            status = "" if include_disbanded else " AND t.status = 'active'"
            rows = conn.execute(
                "SELECT t.id FROM teams t JOIN team_members tm ON tm.team_id = t.id"
                f" WHERE tm.agent_id = ?{status} ORDER BY t.created_at DESC, t.id DESC",
                (self._agent,),
            ).fetchall()
            return [self._team_or_fail(conn, row[0]) for row in rows]

        return await self._db.read(read)

    async def add_member(self, team_id: str, agent_id: str, *, role: TeamRole = "member") -> Team:
        """Add a member (an existing member keeps its place; ``role="lead"`` hands the lead
        over). Raises: NotFoundError, PermissionDeniedError, ValidationError (disbanded team,
        unknown role)."""
        check_ref("team_id", team_id)
        check_agent_ref("agent_id", agent_id)
        role = check_choice("role", role, TEAM_ROLES)

        def write(conn: sqlite3.Connection) -> Team:
            self._managed(conn, team_id)
            conn.execute(
                "INSERT INTO team_members (team_id, agent_id, role, joined_at)"
                " VALUES (?, ?, 'member', ?) ON CONFLICT DO NOTHING",
                (team_id, agent_id, ts(now_utc())),
            )
            if role == "lead":
                self._hand_lead(conn, team_id, agent_id)
            return self._team_or_fail(conn, team_id)

        return await self._db.write(write)

    async def update_member(self, team_id: str, agent_id: str, *, role: TeamRole) -> Team:
        """Change a member's role. Raises: NotFoundError (team or member),
        PermissionDeniedError, ValidationError (demoting the lead, disbanded team)."""
        check_ref("team_id", team_id)
        check_agent_ref("agent_id", agent_id)
        role = check_choice("role", role, TEAM_ROLES)

        def write(conn: sqlite3.Connection) -> Team:
            team = self._managed(conn, team_id)
            self._require_member(team, agent_id)
            if role == "lead":
                self._hand_lead(conn, team_id, agent_id)
            elif team.lead == agent_id:
                raise ValidationError(
                    f"{agent_id} leads team {team_id}; make another member lead instead"
                )
            return self._team_or_fail(conn, team_id)

        return await self._db.write(write)

    async def remove_member(self, team_id: str, agent_id: str) -> Team:
        """Remove a member, or leave (``agent_id`` this agent: needs no creator or lead).
        Returns the team as it was, without the member (one that left may not see it any more).

        Raises: NotFoundError (team or member), PermissionDeniedError (removing another member
        without being the creator or the lead), ValidationError (the lead, disbanded team).
        """
        check_ref("team_id", team_id)
        check_agent_ref("agent_id", agent_id)

        def write(conn: sqlite3.Connection) -> Team:
            if agent_id == self._agent:
                team = self._team_or_fail(conn, team_id)
                self._require_active(team)
            else:
                team = self._managed(conn, team_id)
            self._require_member(team, agent_id)
            if team.lead == agent_id:
                raise ValidationError(
                    f"{agent_id} leads team {team_id}; make another member lead first, "
                    "or disband the team"
                )
            conn.execute(
                "DELETE FROM team_members WHERE team_id = ? AND agent_id = ?", (team_id, agent_id)
            )
            members = [member for member in team.members if member.agent_id != agent_id]
            return msgspec.structs.replace(team, members=members)

        return await self._db.write(write)

    async def disband_team(self, team_id: str) -> Team:
        """Status ``disbanded`` (idempotent); see the module docstring for the effect.

        Raises: NotFoundError, PermissionDeniedError (neither the creator nor the lead).
        """
        check_ref("team_id", team_id)

        def write(conn: sqlite3.Connection) -> Team:
            self._managed(conn, team_id, allow_disbanded=True)
            conn.execute(
                "UPDATE teams SET status = 'disbanded', disbanded_at = ?"
                " WHERE id = ? AND status = 'active'",
                (ts(now_utc()), team_id),
            )
            return self._team_or_fail(conn, team_id)

        return await self._db.write(write)

    async def team_members(self, team_id: str) -> list[TeamMember]:
        """Active members in join order ([] for a disbanded team).

        Raises: NotFoundError when the team is not visible to this agent.
        """
        check_ref("team_id", team_id)

        def read(conn: sqlite3.Connection) -> list[TeamMember]:
            team = self._team(conn, team_id)
            if team is None:
                raise NotFoundError(f"team {team_id} not found")
            return team.members if team.status == "active" else []

        return await self._db.read(read)

    @staticmethod
    def _require_member(team: Team, agent_id: str) -> None:
        if all(member.agent_id != agent_id for member in team.members):
            raise NotFoundError(f"{agent_id} is not a member of team {team.id}")

    @staticmethod
    def _hand_lead(conn: sqlite3.Connection, team_id: str, agent_id: str) -> None:
        conn.execute(
            "UPDATE team_members SET role = CASE agent_id WHEN ? THEN 'lead' ELSE 'member' END"
            " WHERE team_id = ? AND (role = 'lead' OR agent_id = ?)",
            (agent_id, team_id, agent_id),
        )
        conn.execute("UPDATE teams SET lead = ? WHERE id = ?", (agent_id, team_id))
