"""Teams and the family registry on PostgreSQL.

A team is seen by its creator and its members (of a disbanded team too: the record stays) and
changed (members added, re-roled or removed; disbanded) by its creator or its lead only; any
member may leave it (``remove_member`` of itself). Another agent that sees the team gets
PermissionDeniedError, one that does not see it NotFoundError. A disbanded team's membership is
frozen (ValidationError), leaving included. Team membership is what grants ``team`` visibility to
memory items and tasks, checked by the SECURITY DEFINER helpers of migration 0002; a disbanded
team grants none. The registry (``agents``) is family-wide: every agent may read and update it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ._canonical import canonical_json, check_choice, check_text, now_utc
from ._errors import NotFoundError, PermissionDeniedError, ValidationError
from ._models import (
    AGENT_STATUSES,
    MAX_NAME_CHARS,
    TEAM_ROLES,
    AgentRecord,
    Team,
    TeamMember,
    TeamRole,
)
from ._pg_checks import agent_ref, new_id, ref_id
from ._pg_core import Conn, Scope
from ._pg_rows import AGENT_COLUMNS, agent as agent_row, team as team_row

_TEAM = "SELECT t.id, t.agent_id, t.name, t.lead, t.status, t.metadata, t.created_at FROM teams t"
_MEMBERS = (
    "SELECT m.team_id, m.agent_id, m.role, m.joined_at FROM team_members m"
    " WHERE m.team_id = ANY ($1) ORDER BY m.seq"
)


class PgTeams:
    """:class:`~agentbus.storage.TeamStore` for one agent (from ``PgAdapter.for_agent``)."""

    def __init__(self, scope: Scope) -> None:
        self._scope = scope
        self._agent = scope.agent

    async def create_team(
        self, name: str, *, lead: str | None = None, members: Sequence[str] = (),
        metadata: Mapping[str, Any] | None = None, id: str | None = None,
    ) -> Team:  # fmt: skip
        """The lead (default: this agent) is the first member, with role ``lead``."""
        name = check_text("name", name, max_chars=MAX_NAME_CHARS)
        lead = self._agent if lead is None else agent_ref(lead, "lead")
        if isinstance(members, str):
            raise ValidationError("members must be a sequence of agent ids, not one string")
        roster = [lead]
        for member in members:
            checked = agent_ref(member, "member")
            if checked not in roster:
                roster.append(checked)
        team_id, now = new_id(id), now_utc()
        async with self._scope.tx("creating a team") as conn:
            await conn.execute(
                "INSERT INTO teams (id, agent_id, name, lead, status, metadata, created_at,"
                " updated_at) VALUES ($1, $2, $3, $4, 'active', $5, $6, $6)",
                team_id, self._agent, name, lead, canonical_json(metadata), now,
            )  # fmt: skip
            await conn.execute(
                "INSERT INTO team_members (team_id, agent_id, role, joined_at)"
                " SELECT $1, u.a, CASE WHEN u.n = 1 THEN 'lead' ELSE 'member' END, $2"
                " FROM unnest($3::text[]) WITH ORDINALITY AS u(a, n) ORDER BY u.n",
                team_id, now, roster,
            )  # fmt: skip
            return await _fetch_team(conn, team_id)

    async def get_team(self, team_id: str) -> Team | None:
        async with self._scope.tx("reading a team") as conn:
            try:
                return await _fetch_team(conn, ref_id(team_id, "team_id"))
            except NotFoundError:
                return None

    async def list_teams(self, *, include_disbanded: bool = False) -> list[Team]:
        """Teams this agent is a member of, newest first."""
        async with self._scope.tx("listing teams") as conn:
            rows = await conn.fetch(
                f"{_TEAM} WHERE EXISTS (SELECT 1 FROM team_members m"
                " WHERE m.team_id = t.id AND m.agent_id = $1)"
                " AND ($2 OR t.status = 'active') ORDER BY t.created_at DESC, t.id DESC",
                self._agent, bool(include_disbanded),
            )  # fmt: skip
            members = await conn.fetch(_MEMBERS, [row["id"] for row in rows])
        return [team_row(row, [m for m in members if m["team_id"] == row["id"]]) for row in rows]

    async def add_member(self, team_id: str, agent_id: str, *, role: TeamRole = "member") -> Team:
        """Add (or re-role) a member; role ``lead`` makes it the team's lead.

        Raises: NotFoundError (team invisible), PermissionDeniedError (this agent neither its
        creator nor its lead), ValidationError (disbanded team).
        """
        member = agent_ref(agent_id, "agent_id")
        role = check_choice("role", role, TEAM_ROLES)
        async with self._scope.tx("adding a team member") as conn:
            team = await self._managed(conn, team_id)
            await conn.execute(
                "INSERT INTO team_members (team_id, agent_id, role, joined_at)"
                " VALUES ($1, $2, 'member', $3) ON CONFLICT (team_id, agent_id) DO NOTHING",
                team["id"], member, now_utc(),
            )  # fmt: skip
            if role == "lead":
                await _make_lead(conn, team, member)
            return await _fetch_team(conn, team["id"])

    async def update_member(self, team_id: str, agent_id: str, *, role: TeamRole) -> Team:
        """Change a member's role; ``lead`` hands the lead over (the old lead stays a member).

        Raises: NotFoundError (team invisible, no such member), PermissionDeniedError,
        ValidationError (demoting the only lead, disbanded team).
        """
        member = agent_ref(agent_id, "agent_id")
        role = check_choice("role", role, TEAM_ROLES)
        async with self._scope.tx("updating a team member") as conn:
            team = await self._managed(conn, team_id)
            await _require_member(conn, team["id"], member)
            if role == "lead":
                await _make_lead(conn, team, member)
            elif member == team["lead"]:
                raise ValidationError(
                    f"{member!r} leads team {team['id']}; make another member lead instead"
                )
            return await _fetch_team(conn, team["id"])

    async def remove_member(self, team_id: str, agent_id: str) -> Team:
        """Remove a member (a member may also remove itself: leave). The lead cannot be removed
        before the lead is handed over. Returns the team as it was, without the member.

        Raises: NotFoundError, PermissionDeniedError (removing another member without being
        the creator or the lead), ValidationError (the lead, disbanded team).
        """
        member = agent_ref(agent_id, "agent_id")
        async with self._scope.tx("removing a team member") as conn:
            if member == self._agent:  # leaving needs no manager
                team = await _team(conn, ref_id(team_id, "team_id"))
                if team["status"] == "disbanded":
                    raise ValidationError(f"team {team_id} is disbanded; its membership is kept")
            else:
                team = await self._managed(conn, team_id)
            before = await _fetch_team(conn, team["id"])
            if member == before.lead:
                raise ValidationError(
                    f"{member!r} leads team {before.id}; hand the lead to another member first"
                )
            await _require_member(conn, before.id, member)
            await conn.execute(
                "DELETE FROM team_members WHERE team_id = $1 AND agent_id = $2", before.id, member
            )
        return _without(before, member)

    async def disband_team(self, team_id: str) -> Team:
        """Status ``disbanded`` (idempotent): members are kept for the record, the team grants
        no ``team`` visibility any more and ``team_members()`` of it is empty.

        Raises: NotFoundError, PermissionDeniedError (neither the creator nor the lead).
        """
        async with self._scope.tx("disbanding a team") as conn:
            team = await self._managed(conn, team_id, allow_disbanded=True)
            await conn.execute(
                "UPDATE teams SET status = 'disbanded', updated_at = $2"
                " WHERE id = $1 AND status <> 'disbanded'",
                team["id"], now_utc(),
            )  # fmt: skip
            return await _fetch_team(conn, team["id"])

    async def team_members(self, team_id: str) -> list[TeamMember]:
        """Active members in join order ([] for a disbanded team). Raises: NotFoundError."""
        async with self._scope.tx("reading team members") as conn:
            team = await _fetch_team(conn, ref_id(team_id, "team_id"))
        return [] if team.status == "disbanded" else team.members

    async def _managed(self, conn: Conn, team_id: str, *, allow_disbanded: bool = False) -> Any:
        """The team, locked, when this agent may change it: NotFoundError when it cannot see
        it, PermissionDeniedError when it sees it but is neither its creator nor its lead."""
        seen = await _team(conn, ref_id(team_id, "team_id"))
        # FOR UPDATE applies the update policy as well: only the creator or the lead gets the
        # row (None too when the lead was handed over in between).
        team = None
        if self._agent in (seen["agent_id"], seen["lead"]):
            team = await conn.fetchrow(f"{_TEAM} WHERE t.id = $1 FOR UPDATE", seen["id"])
        if team is None or self._agent not in (team["agent_id"], team["lead"]):
            raise PermissionDeniedError(
                f"team {team_id} can be changed by its creator or its lead only, not by agent "
                f"{self._agent!r}"
            )
        if team["status"] == "disbanded" and not allow_disbanded:
            raise ValidationError(f"team {team_id} is disbanded")
        return team


async def _team(conn: Conn, team_id: str) -> Any:
    """The team row, if this agent can see it (the select policy). Raises: NotFoundError."""
    row = await conn.fetchrow(f"{_TEAM} WHERE t.id = $1", team_id)
    if row is None:
        raise NotFoundError(f"team {team_id} not found")
    return row


async def _fetch_team(conn: Conn, team_id: str) -> Team:
    row = await conn.fetchrow(f"{_TEAM} WHERE t.id = $1", team_id)
    if row is None:
        raise NotFoundError(f"team {team_id} not found")
    return team_row(row, await conn.fetch(_MEMBERS, [team_id]))


async def _require_member(conn: Conn, team_id: str, member: str) -> None:
    if not await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM team_members WHERE team_id = $1 AND agent_id = $2)",
        team_id, member,
    ):  # fmt: skip
        raise NotFoundError(f"{member!r} is not a member of team {team_id}")


async def _make_lead(conn: Conn, team: Any, member: str) -> None:
    await conn.execute(
        "UPDATE team_members SET role = CASE WHEN agent_id = $2 THEN 'lead' ELSE 'member' END"
        " WHERE team_id = $1 AND (agent_id = $2 OR role = 'lead')",
        team["id"], member,
    )  # fmt: skip
    await conn.execute(
        "UPDATE teams SET lead = $2, updated_at = $3 WHERE id = $1", team["id"], member, now_utc()
    )


def _without(team: Team, member: str) -> Team:
    return Team(
        id=team.id, name=team.name, lead=team.lead, status=team.status,
        members=[m for m in team.members if m.agent_id != member],
        metadata=team.metadata, created_at=team.created_at,
    )  # fmt: skip


class PgAgents:
    """:class:`~agentbus.storage.AgentStore`: the family registry (not agent-scoped)."""

    def __init__(self, scope: Scope) -> None:
        self._scope = scope

    async def upsert_agent(
        self, agent_id: str, *, name: str | None = None, role: str | None = None,
        status: str = "active", config: Mapping[str, Any] | None = None,
    ) -> AgentRecord:  # fmt: skip
        """Register or update an agent; None leaves a field as it is (name defaults to the id)."""
        values = (
            agent_ref(agent_id, "agent_id"),
            None if name is None else check_text("name", name, max_chars=MAX_NAME_CHARS),
            None if role is None else check_text("role", role, max_chars=MAX_NAME_CHARS),
            check_choice("status", status, AGENT_STATUSES),
            None if config is None else canonical_json(config), now_utc(),
        )  # fmt: skip
        async with self._scope.tx("registering an agent") as conn:
            row = await conn.fetchrow(
                "INSERT INTO agents AS a (id, name, role, status, config, created_at, updated_at)"
                " VALUES ($1, coalesce($2, $1), $3, $4, coalesce($5::jsonb, '{}'), $6, $6)"
                " ON CONFLICT (id) DO UPDATE SET name = coalesce($2, a.name),"
                " role = coalesce($3, a.role), status = $4,"
                " config = coalesce($5::jsonb, a.config), updated_at = $6"
                f" RETURNING {AGENT_COLUMNS}",
                *values,
            )
        assert row is not None
        return agent_row(row)

    async def get_agent(self, agent_id: str) -> AgentRecord | None:
        async with self._scope.tx("reading an agent") as conn:
            row = await conn.fetchrow(
                f"SELECT {AGENT_COLUMNS} FROM agents a WHERE a.id = $1",
                ref_id(agent_id, "agent_id"),
            )
        return None if row is None else agent_row(row)

    async def list_agents(self) -> list[AgentRecord]:
        """Every registered agent, newest first."""
        async with self._scope.tx("listing agents") as conn:
            rows = await conn.fetch(
                f"SELECT {AGENT_COLUMNS} FROM agents a ORDER BY a.created_at DESC, a.id DESC"
            )
        return [agent_row(row) for row in rows]

    async def set_agent_status(self, agent_id: str, status: str) -> AgentRecord:
        """Raises: NotFoundError for an unregistered agent."""
        async with self._scope.tx("setting an agent's status") as conn:
            row = await conn.fetchrow(
                "UPDATE agents AS a SET status = $2, updated_at = $3 WHERE a.id = $1"
                f" RETURNING {AGENT_COLUMNS}",
                ref_id(agent_id, "agent_id"), check_choice("status", status, AGENT_STATUSES),
                now_utc(),
            )  # fmt: skip
        if row is None:
            raise NotFoundError(f"agent {agent_id} is not registered")
        return agent_row(row)
