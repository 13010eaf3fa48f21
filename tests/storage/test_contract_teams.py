"""Teams (lead, members in join order, disband) and the agents registry, plus adapter views."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from agentbus import InvalidAgentIdError, uuid7
from agentbus.storage._errors import NotFoundError, PermissionDeniedError, ValidationError

from ._support import (
    MALFORMED_IDS,
    NOT_LOWER_CASE_UUIDS,
    as_list,
    is_utc,
    is_uuid7,
    not_refused,
    unit,
)

pytestmark = pytest.mark.anyio

View = Callable[..., Any]


def members(team: Any) -> list[tuple[str, str]]:
    return [(m.agent_id, m.role) for m in team.members]


# --- teams -----------------------------------------------------------------------------------


async def test_create_team_makes_the_creator_its_lead(view: View) -> None:
    """A new team is active, led by its creator, who is its only member with role lead."""
    me = view()
    team = await me.teams.create_team("harbor crew", metadata={"b": 1, "a": 2})
    assert is_uuid7(team.id)
    assert (team.name, team.lead, team.status) == ("harbor crew", me.agent_id, "active")
    assert members(team) == [(me.agent_id, "lead")]
    assert team.metadata == {"a": 2, "b": 1}
    assert is_utc(team.created_at)
    assert is_utc(team.members[0].joined_at)
    assert await me.teams.get_team(team.id) == team


async def test_create_team_with_members_and_another_lead(view: View) -> None:
    """create_team(lead=..., members=[...]) makes the lead a member with role lead and every
    listed agent a member."""
    me, lead, b, c = view("me"), view("lead"), view("b"), view("c")
    team = await me.teams.create_team(
        "violin section", lead=lead.agent_id, members=[b.agent_id, c.agent_id]
    )
    assert team.lead == lead.agent_id
    roles = dict(members(team))
    assert roles[lead.agent_id] == "lead"
    assert (roles[b.agent_id], roles[c.agent_id]) == ("member", "member")
    assert [m for m in members(team) if m[1] == "lead"] == [(lead.agent_id, "lead")]


async def test_members_are_kept_in_join_order(view: View) -> None:
    """get_team and team_members list members in the order they joined (not by id)."""
    me = view("m")
    late = [view(label).agent_id for label in ("zulu", "alpha", "mike")]
    team = await me.teams.create_team("ordered crew")
    for agent in late:
        team = await me.teams.add_member(team.id, agent)
    expected = [me.agent_id, *late]
    assert [m.agent_id for m in team.members] == expected
    assert [m.agent_id for m in (await me.teams.get_team(team.id)).members] == expected
    assert [m.agent_id for m in await me.teams.team_members(team.id)] == expected
    joined = [m.joined_at for m in team.members]
    assert joined == sorted(joined)


async def test_add_update_remove_member(view: View) -> None:
    """add_member adds with role member by default, update_member changes a member's role,
    remove_member removes the agent from the active members."""
    me, b, c = view("me"), view("b"), view("c")
    team = await me.teams.create_team("glacier crew")
    team = await me.teams.add_member(team.id, b.agent_id)
    team = await me.teams.add_member(team.id, c.agent_id)
    assert members(team) == [(me.agent_id, "lead"), (b.agent_id, "member"), (c.agent_id, "member")]
    team = await me.teams.update_member(team.id, b.agent_id, role="lead")
    assert dict(members(team))[b.agent_id] == "lead"
    team = await me.teams.remove_member(team.id, c.agent_id)
    assert [m.agent_id for m in team.members] == [me.agent_id, b.agent_id]
    assert [m.agent_id for m in await me.teams.team_members(team.id)] == [me.agent_id, b.agent_id]
    assert [m.agent_id for m in (await me.teams.get_team(team.id)).members] == [
        me.agent_id, b.agent_id,
    ]  # fmt: skip


async def test_list_teams_lists_the_agents_teams(view: View) -> None:
    """list_teams lists the teams the agent belongs to, disbanded ones only on request."""
    me, other = view("me"), view("other")
    mine = await me.teams.create_team("mine")
    joined = await other.teams.create_team("joined", members=[me.agent_id])
    not_mine = await other.teams.create_team("not mine")
    gone = await me.teams.create_team("gone")
    await me.teams.disband_team(gone.id)
    listed = {t.id for t in await me.teams.list_teams()}
    assert listed == {mine.id, joined.id}
    assert not_mine.id not in listed
    with_disbanded = {t.id for t in await me.teams.list_teams(include_disbanded=True)}
    assert with_disbanded == {mine.id, joined.id, gone.id}


async def test_removed_member_no_longer_lists_the_team(view: View) -> None:
    """After remove_member the team is no longer among the former member's teams."""
    me, b = view("me"), view("b")
    team = await me.teams.create_team("leaving", members=[b.agent_id])
    assert [t.id for t in await b.teams.list_teams()] == [team.id]
    await me.teams.remove_member(team.id, b.agent_id)
    assert await b.teams.list_teams() == []


async def test_disband_keeps_members_for_the_record(view: View) -> None:
    """A disbanded team has status disbanded and keeps its member list, but team_members() of it
    is empty (nothing to broadcast to)."""
    me, b = view("me"), view("b")
    team = await me.teams.create_team("disbanding", members=[b.agent_id])
    disbanded = await me.teams.disband_team(team.id)
    assert disbanded.status == "disbanded"
    assert {m.agent_id for m in disbanded.members} == {me.agent_id, b.agent_id}
    assert await me.teams.team_members(team.id) == []
    got = await me.teams.get_team(team.id)
    assert got is not None
    assert got.status == "disbanded"
    assert {m.agent_id for m in got.members} == {me.agent_id, b.agent_id}


async def test_unknown_team_is_not_found(view: View) -> None:
    """get_team of an unknown id is None; member changes on it raise NotFoundError."""
    me = view()
    missing = uuid7()
    assert await me.teams.get_team(missing) is None
    with pytest.raises(NotFoundError):
        await me.teams.add_member(missing, "someone")
    with pytest.raises(NotFoundError):
        await me.teams.update_member(missing, "someone", role="lead")
    with pytest.raises(NotFoundError):
        await me.teams.remove_member(missing, "someone")
    with pytest.raises(NotFoundError):
        await me.teams.disband_team(missing)


async def test_a_malformed_team_id_is_refused_by_every_call(view: View) -> None:
    """Rule (every backend): a team id that is not text, empty, longer than MAX_ID_CHARS or
    holding NUL is a ValidationError — get_team too (never None for it) — and the team that
    exists is unchanged."""
    me, b = view("me"), view("b")
    team = await me.teams.create_team("malformed crew")
    teams = me.teams
    for bad in MALFORMED_IDS:
        calls = {
            "get_team": lambda bad=bad: teams.get_team(bad),
            "add_member": lambda bad=bad: teams.add_member(bad, b.agent_id),
            "update_member": lambda bad=bad: teams.update_member(bad, me.agent_id, role="lead"),
            "remove_member": lambda bad=bad: teams.remove_member(bad, b.agent_id),
            "remove itself": lambda bad=bad: teams.remove_member(bad, me.agent_id),
            "disband_team": lambda bad=bad: teams.disband_team(bad),
            "team_members": lambda bad=bad: teams.team_members(bad),
        }
        assert await not_refused(ValidationError, calls) == [], repr(bad)
    assert await teams.get_team(team.id) == team


async def test_a_malformed_member_id_is_refused(view: View) -> None:
    """Rule (every backend): an agent named by a team call (lead, member) follows the agent-id
    rule; breaking it is a ValidationError (not "not a member"), and nothing changes."""
    me, b = view("me"), view("b")
    team = await me.teams.create_team("member rule crew", members=[b.agent_id])
    teams = me.teams
    for bad in ("", "Not Valid", "a\x00b", "x" * 65, 42):
        calls = {
            "create lead": lambda bad=bad: teams.create_team("x", lead=bad),
            "create members": lambda bad=bad: teams.create_team("x", members=[bad]),
            "add_member": lambda bad=bad: teams.add_member(team.id, bad),
            "update_member": lambda bad=bad: teams.update_member(team.id, bad, role="member"),
            "remove_member": lambda bad=bad: teams.remove_member(team.id, bad),
        }
        assert await not_refused(ValidationError, calls) == [], repr(bad)
    assert await teams.get_team(team.id) == team
    assert [t.id for t in await teams.list_teams()] == [team.id]


async def test_a_new_teams_id_must_be_a_lower_case_uuid(view: View) -> None:
    """Rule (every backend): a caller's ``id=`` for a new team is a UUID in canonical lower-case
    text, else ValidationError and no team is made."""
    me = view()
    calls = {
        repr(given): lambda given=given: me.teams.create_team("given id", id=given)
        for given in NOT_LOWER_CASE_UUIDS
    }
    assert await not_refused(ValidationError, calls) == []
    assert await me.teams.list_teams(include_disbanded=True) == []


async def test_empty_team_name_is_refused(view: View) -> None:
    """A team needs a name."""
    me = view()
    with pytest.raises(ValidationError):
        await me.teams.create_team("  ")
    assert await me.teams.list_teams(include_disbanded=True) == []


async def test_only_the_creator_or_the_lead_changes_a_team(view: View) -> None:
    """Rule (every backend): a team's members are added, re-roled and removed, and the team is
    disbanded, only by its creator or its current lead. A member that is neither (a former lead
    included) gets PermissionDeniedError from each of these calls; an agent that cannot see the
    team gets NotFoundError, exactly as for a team nobody made. Nothing changes."""
    creator, lead, member, other, outsider = (
        view("creator"), view("lead"), view("member"), view("other"), view("outsider"),
    )  # fmt: skip
    team = await creator.teams.create_team(
        "guarded crew", lead=lead.agent_id, members=[member.agent_id, other.agent_id]
    )

    def changes(teams: Any) -> dict[str, Any]:
        return {
            "add_member": lambda: teams.add_member(team.id, outsider.agent_id),
            "add_member as lead": lambda: teams.add_member(team.id, member.agent_id, role="lead"),
            "update_member": lambda: teams.update_member(team.id, other.agent_id, role="lead"),
            "remove_member": lambda: teams.remove_member(team.id, other.agent_id),
            "disband_team": lambda: teams.disband_team(team.id),
        }

    assert await not_refused(PermissionDeniedError, changes(member.teams)) == []
    assert await not_refused(NotFoundError, changes(outsider.teams)) == []
    assert await creator.teams.get_team(team.id) == team
    # The creator and the lead may; a lead that hands the lead over may no longer.
    team = await creator.teams.add_member(team.id, outsider.agent_id)
    team = await lead.teams.update_member(team.id, member.agent_id, role="lead")
    assert team.lead == member.agent_id
    assert await not_refused(PermissionDeniedError, changes(lead.teams)) == []
    team = await member.teams.remove_member(team.id, outsider.agent_id)
    assert [m.agent_id for m in team.members] == [
        lead.agent_id, member.agent_id, other.agent_id,
    ]  # fmt: skip
    assert (await creator.teams.disband_team(team.id)).status == "disbanded"


async def test_a_member_may_leave_a_team(view: View) -> None:
    """Rule (every backend): any member may remove itself (leave) without being the creator or
    the lead; the call returns the team without it, and the team is then not found for it. The
    lead cannot leave before handing the lead over (ValidationError)."""
    lead, member, other = view("lead"), view("member"), view("other")
    team = await lead.teams.create_team("leavers", members=[member.agent_id, other.agent_id])
    left = await member.teams.remove_member(team.id, member.agent_id)
    assert [m.agent_id for m in left.members] == [lead.agent_id, other.agent_id]
    assert (left.id, left.lead, left.status) == (team.id, lead.agent_id, "active")
    assert await member.teams.get_team(team.id) is None
    assert await member.teams.list_teams() == []
    assert await lead.teams.get_team(team.id) == left
    with pytest.raises(ValidationError):
        await lead.teams.remove_member(team.id, lead.agent_id)
    assert await lead.teams.get_team(team.id) == left


async def test_a_disbanded_teams_membership_is_frozen(view: View) -> None:
    """Rule (every backend): once disbanded, a team's members cannot be added, re-roled or
    removed, and no member can leave (ValidationError): the members are kept for the record.
    Disbanding again is a no-op for the creator or lead; for a member it is refused."""
    lead, member, newcomer = view("lead"), view("member"), view("newcomer")
    team = await lead.teams.create_team("frozen crew", members=[member.agent_id])
    disbanded = await lead.teams.disband_team(team.id)
    calls = {
        "add_member": lambda: lead.teams.add_member(team.id, newcomer.agent_id),
        "update_member": lambda: lead.teams.update_member(team.id, member.agent_id, role="lead"),
        "remove_member": lambda: lead.teams.remove_member(team.id, member.agent_id),
        "leave": lambda: member.teams.remove_member(team.id, member.agent_id),
    }
    assert await not_refused(ValidationError, calls) == []
    assert await lead.teams.disband_team(team.id) == disbanded
    with pytest.raises(PermissionDeniedError):
        await member.teams.disband_team(team.id)
    assert await member.teams.get_team(team.id) == disbanded
    assert [m.agent_id for m in disbanded.members] == [lead.agent_id, member.agent_id]


# --- agents registry -------------------------------------------------------------------------


async def test_upsert_and_get_agent(storage: Any, new_agent: Callable[..., str]) -> None:
    """upsert_agent creates a registry entry that get_agent reads back equal."""
    agent_id = new_agent("reg")
    record = await storage.agents.upsert_agent(
        agent_id, name="Registry Agent", role="planner", config={"model": "m1", "b": [1]}
    )
    assert (record.id, record.name, record.role, record.status) == (
        agent_id, "Registry Agent", "planner", "active",
    )  # fmt: skip
    assert record.config == {"b": [1], "model": "m1"}
    assert list(record.config) == ["b", "model"]
    assert is_utc(record.created_at)
    assert is_utc(record.updated_at)
    assert await storage.agents.get_agent(agent_id) == record


async def test_upsert_updates_in_place(storage: Any, new_agent: Callable[..., str]) -> None:
    """A second upsert of the same id updates the entry and keeps its created_at."""
    agent_id = new_agent("reg")
    first = await storage.agents.upsert_agent(agent_id, name="Before", config={"model": "m1"})
    second = await storage.agents.upsert_agent(
        agent_id, name="After", role="critic", status="idle", config={"model": "m2"}
    )
    assert (second.name, second.role, second.status) == ("After", "critic", "idle")
    assert second.config["model"] == "m2"
    assert second.created_at == first.created_at
    assert second.updated_at >= first.updated_at
    assert await storage.agents.get_agent(agent_id) == second


async def test_list_agents_newest_first(storage: Any, new_agent: Callable[..., str]) -> None:
    """list_agents includes every registered agent, newest first."""
    created = [new_agent(f"l{n}") for n in range(3)]
    for agent_id in created:
        await storage.agents.upsert_agent(agent_id, name=agent_id)
    listed = [a.id for a in await storage.agents.list_agents() if a.id in created]
    assert listed == list(reversed(created))


async def test_set_agent_status(storage: Any, new_agent: Callable[..., str]) -> None:
    """set_agent_status changes the status; an unknown status is refused and an unknown agent
    is not found."""
    agent_id = new_agent("status")
    await storage.agents.upsert_agent(agent_id, name="S")
    offline = await storage.agents.set_agent_status(agent_id, "offline")
    assert offline.status == "offline"
    assert (await storage.agents.get_agent(agent_id)).status == "offline"
    with pytest.raises(ValidationError):
        await storage.agents.set_agent_status(agent_id, "sleeping")
    with pytest.raises(NotFoundError):
        await storage.agents.set_agent_status(new_agent("ghost"), "idle")
    assert (await storage.agents.get_agent(agent_id)).status == "offline"


async def test_unknown_agent_is_none(storage: Any, new_agent: Callable[..., str]) -> None:
    """get_agent of an id never registered returns None."""
    assert await storage.agents.get_agent(new_agent("nobody")) is None


async def test_agent_ids_in_the_registry_follow_the_id_rule(
    storage: Any, new_agent: Callable[..., str]
) -> None:
    """Rule (every backend): looking an agent up by an id that is not text, empty, longer than
    MAX_ID_CHARS or holding NUL is a ValidationError (get_agent never answers None for it); a
    well-formed id nobody registered is "not found" (None / NotFoundError); registering an id
    that breaks the agent-id rule is a ValidationError."""
    agents = storage.agents
    for bad in MALFORMED_IDS:
        calls = {
            "get_agent": lambda bad=bad: agents.get_agent(bad),
            "set_agent_status": lambda bad=bad: agents.set_agent_status(bad, "idle"),
            "upsert_agent": lambda bad=bad: agents.upsert_agent(bad),
        }
        assert await not_refused(ValidationError, calls) == [], repr(bad)
    for unknown in (new_agent("nobody"), "Not Registered"):
        assert await agents.get_agent(unknown) is None
        with pytest.raises(NotFoundError):
            await agents.set_agent_status(unknown, "idle")
    with pytest.raises(ValidationError):
        await agents.upsert_agent("Not Valid")
    assert await agents.get_agent("Not Valid") is None


async def test_invalid_agent_ids_are_refused(storage: Any) -> None:
    """An agent id breaking the naming rule is refused (InvalidAgentIdError or ValidationError,
    both ValueErrors) by for_agent and the registry."""
    with pytest.raises((InvalidAgentIdError, ValidationError)):
        storage.for_agent("Not Valid")
    with pytest.raises((InvalidAgentIdError, ValidationError)):
        await storage.agents.upsert_agent("Not Valid")


# --- views -----------------------------------------------------------------------------------


async def test_views_are_scoped_and_closing_one_keeps_the_adapter(
    storage: Any, new_agent: Callable[..., str]
) -> None:
    """for_agent returns a view acting as that agent; closing a view leaves the adapter and
    other views working."""
    agent_id = new_agent("v")
    assert storage.agent_id is None
    first = storage.for_agent(agent_id)
    assert first.agent_id == agent_id
    item = await first.memory.create_item("a note before the view closes")
    assert item.agent_id == agent_id
    await first.aclose()
    assert storage.is_ready()
    second = storage.for_agent(agent_id)
    assert await second.memory.get_item(item.id) == item
    assert (await storage.agents.get_agent(new_agent("none"))) is None


async def test_a_second_adapter_on_the_same_store_sees_every_write(
    storage: Any, another_adapter: Callable[[], Any], new_agent: Callable[..., str]
) -> None:
    """Two adapters on one store (two processes, in effect) see each other's writes, vectors
    included, even after one of them has searched (and cached) the vectors already; opening an
    up-to-date store again is harmless."""
    agent_id = new_agent("shared")
    first = storage.for_agent(agent_id)
    before = await first.memory.create_item("written first", embedding=as_list(unit(70)))
    other = another_adapter()
    await other.open()
    try:
        await other.open()  # idempotent
        assert other.is_ready()
        second = other.for_agent(agent_id)
        assert await second.memory.get_item(before.id) == before
        warm = await first.memory.search_items(
            "x", embedding=as_list(unit(71)), mode="vector", own_only=True
        )
        assert [h.item.id for h in warm] == [before.id]
        after = await second.memory.create_item("written second", embedding=as_list(unit(71)))
        hits = await first.memory.search_items(
            "x", embedding=as_list(unit(71)), mode="vector", own_only=True
        )
        assert [h.item.id for h in hits] == [after.id, before.id]
        await second.memory.embed_item(before.id, as_list(unit(72)))
        hits = await first.memory.search_items(
            "x", embedding=as_list(unit(72)), mode="vector", own_only=True, limit=1
        )
        assert [h.item.id for h in hits] == [before.id]
        assert hits[0].score == pytest.approx(1.0, abs=1e-5)
        await second.memory.delete_item(after.id)
        hits = await first.memory.search_items(
            "x", embedding=as_list(unit(71)), mode="vector", own_only=True
        )
        assert [h.item.id for h in hits] == [before.id]
    finally:
        await other.aclose()
    assert not other.is_ready()
    assert storage.is_ready()
