"""Visibility between agents: another agent's private rows are "not found", never a leak;
``family``/``public`` rows are visible to every agent; ``team`` rows to the team's active members.

This module creates family/public rows, which every agent in the store sees, so it has a store of
its own (the fixtures make one per module) and its assertions name the rows they expect.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import pytest

from agentbus import uuid7
from agentbus.storage._errors import NotFoundError, ValidationError

from ._support import (
    MALFORMED_IDS,
    as_list,
    not_refused,
    outcome,
    unit,
    with_cosine,
    with_suffix,
)

pytestmark = pytest.mark.anyio

View = Callable[..., Any]


async def test_private_item_of_another_agent_is_not_found(view: View) -> None:
    """Agent B cannot see, list, search, delete, reinforce, embed or link agent A's private item:
    each mutation fails exactly as for an id nobody stored (NotFoundError; delete answers as for
    a missing id), and A's item is unchanged."""
    a, b = view("a"), view("b")
    secret = await a.memory.create_item("the private kettle secret", embedding=as_list(unit(1)))
    category = await b.memory.create_category("b-category")
    entity = await b.memory.create_entity("B Entity")
    assert await b.memory.get_item(secret.id) is None
    assert secret.id not in {i.id for i in await b.memory.list_items(limit=1000)}
    hits = await b.memory.search_items("kettle secret", embedding=as_list(unit(1)), limit=50)
    assert secret.id not in {h.item.id for h in hits}
    vector_hits = await b.memory.search_items("x", embedding=as_list(unit(1)), mode="vector")
    assert secret.id not in {h.item.id for h in vector_hits}
    for target in (secret.id, uuid7()):
        calls = {
            "reinforce": lambda t=target: b.memory.reinforce_item(t),
            "embed": lambda t=target: b.memory.embed_item(t, as_list(unit(2))),
            "link category": lambda t=target: b.memory.link_item_category(t, category.id),
            "link entity": lambda t=target: b.memory.link_item_entity(t, entity.id),
        }
        assert await not_refused(NotFoundError, calls) == [], target
    # delete: the invisible id and a missing one give the same answer (NotFoundError or False)
    deletes = [await outcome(lambda t=t: b.memory.delete_item(t)) for t in (secret.id, uuid7())]
    assert deletes[0] == deletes[1]
    assert deletes[0] in ("NotFoundError", False)
    assert await a.memory.get_item(secret.id) == secret
    assert (await b.memory.get_entity(entity.id)).memory_count == 0
    assert await b.memory.get_item_categories(secret.id) == []


async def test_other_agents_rows_without_visibility_are_not_found(view: View) -> None:
    """Resources, entities, categories and lessons belong to their agent: another agent cannot
    read them, link to them, reference them or reinforce them."""
    a, b = view("a"), view("b")
    resource = await a.memory.create_resource("https://example.org/private")
    entity = await a.memory.create_entity("Private Person")
    category = await a.memory.create_category("private-category")
    lesson = await a.memory.create_lesson("a private lesson")
    mine = await b.memory.create_item("b's own note about a person")
    assert await b.memory.get_resource(resource.id) is None
    assert await b.memory.get_entity(entity.id) is None
    assert await b.memory.get_entity("Private Person") is None
    assert category.id not in {c.id for c in await b.memory.list_categories()}
    assert lesson.id not in {x.id for x in await b.memory.list_lessons()}
    assert await b.memory.search_lessons("private lesson") == []
    calls = {
        "link entity": lambda: b.memory.link_item_entity(mine.id, entity.id),
        "link category": lambda: b.memory.link_item_category(mine.id, category.id),
        "reference resource": lambda: b.memory.create_item("refers", resource_id=resource.id),
        "reinforce lesson": lambda: b.memory.reinforce_lesson(lesson.id),
        "decay lesson": lambda: b.memory.decay_lesson(lesson.id),
    }
    assert await not_refused(NotFoundError, calls) == []
    assert (await a.memory.get_entity(entity.id)).memory_count == 0
    assert [x.confidence for x in await a.memory.list_lessons()] == [lesson.confidence]
    assert [i.id for i in await b.memory.list_items(visibility="private")] == [mine.id]


async def test_family_and_public_items_are_visible_to_every_agent(view: View) -> None:
    """Another agent gets, lists and searches A's family and public items; own_only hides them."""
    a, b = view("a"), view("b")
    family = await a.memory.create_item("family glacier bulletin", visibility="family")
    public = await a.memory.create_item("public glacier bulletin", visibility="public")
    private = await a.memory.create_item("private glacier bulletin")
    assert await b.memory.get_item(family.id) == family
    assert await b.memory.get_item(public.id) == public
    listed = {i.id for i in await b.memory.list_items(limit=1000)}
    assert {family.id, public.id} <= listed
    assert private.id not in listed
    assert family.id in {i.id for i in await b.memory.list_items(visibility="family", limit=1000)}
    assert public.id not in {i.id for i in await b.memory.list_items(visibility="family")}
    hits = await b.memory.search_items("glacier bulletin", mode="keyword", limit=50)
    assert {h.item.id for h in hits} >= {family.id, public.id}
    assert private.id not in {h.item.id for h in hits}
    own = await b.memory.search_items("glacier bulletin", mode="keyword", own_only=True)
    assert own == []


async def test_family_item_keeps_its_owner(view: View) -> None:
    """A family item read by another agent still names its owner."""
    a, b = view("a"), view("b")
    family = await a.memory.create_item("family quartz notice", visibility="family")
    got = await b.memory.get_item(family.id)
    assert got is not None
    assert got.agent_id == a.agent_id


async def test_stats_do_not_count_another_agents_private_rows(view: View) -> None:
    """Agent A's private rows do not move agent B's stats."""
    a, b = view("a"), view("b")
    before = await b.memory.get_stats()
    await a.memory.create_item("a private stat", embedding=as_list(unit(3)))
    await a.memory.create_entity("Private Stat")
    await a.memory.create_lesson("private stat lesson")
    assert await b.memory.get_stats() == before


# --- team visibility -------------------------------------------------------------------------


async def test_team_items_are_visible_to_team_members_only(view: View) -> None:
    """A ``team`` item is visible to the team's members and not to other agents."""
    a, b, c = view("a"), view("b"), view("c")
    team = await a.teams.create_team("harbor crew", members=[b.agent_id])
    item = await a.memory.create_item("team harbor schedule", visibility="team", team_id=team.id)
    assert (item.visibility, item.team_id) == ("team", team.id)
    assert await b.memory.get_item(item.id) == item
    assert await c.memory.get_item(item.id) is None
    b_hits = await b.memory.search_items("harbor schedule", mode="keyword")
    c_hits = await c.memory.search_items("harbor schedule", mode="keyword")
    assert item.id in {h.item.id for h in b_hits}
    assert item.id not in {h.item.id for h in c_hits}
    assert item.id in {i.id for i in await b.memory.list_items(visibility="team")}
    assert item.id not in {i.id for i in await c.memory.list_items(limit=1000)}
    with pytest.raises(NotFoundError):
        await c.memory.reinforce_item(item.id)


async def test_removed_member_loses_team_visibility(view: View) -> None:
    """After remove_member the former member no longer sees the team's items."""
    a, b = view("a"), view("b")
    team = await a.teams.create_team("meadow crew", members=[b.agent_id])
    item = await a.memory.create_item("team meadow plan", visibility="team", team_id=team.id)
    assert await b.memory.get_item(item.id) is not None
    await a.teams.remove_member(team.id, b.agent_id)
    assert await b.memory.get_item(item.id) is None
    hits = await b.memory.search_items("meadow plan", mode="keyword")
    assert item.id not in {h.item.id for h in hits}
    assert await a.memory.get_item(item.id) == item


async def test_disbanded_team_grants_no_visibility(view: View) -> None:
    """After disband_team the members no longer see its team items; the owner still does."""
    a, b = view("a"), view("b")
    team = await a.teams.create_team("orchard crew", members=[b.agent_id])
    item = await a.memory.create_item("team orchard plan", visibility="team", team_id=team.id)
    task = await a.tasks.create_task("team orchard task", visibility="team", team_id=team.id)
    assert await b.memory.get_item(item.id) is not None
    assert await b.tasks.get_task(task.id) is not None
    await a.teams.disband_team(team.id)
    assert await b.memory.get_item(item.id) is None
    assert await b.tasks.get_task(task.id) is None
    assert await a.memory.get_item(item.id) == item


async def test_team_visibility_needs_a_team_id(view: View) -> None:
    """visibility="team" without a team_id is refused with ValidationError."""
    me = view()
    with pytest.raises(ValidationError):
        await me.memory.create_item("team note without team", visibility="team")
    with pytest.raises(ValidationError):
        await me.tasks.create_task("team task without team", visibility="team")
    assert await me.memory.list_items(visibility="private") == []


async def test_team_rows_for_a_team_one_is_not_in_are_not_found(view: View) -> None:
    """Writing a team row for a team the agent does not belong to raises NotFoundError."""
    a, c = view("a"), view("c")
    team = await a.teams.create_team("closed crew")
    calls = {
        "item": lambda: c.memory.create_item("sneak in", visibility="team", team_id=team.id),
        "task": lambda: c.tasks.create_task("sneak in", visibility="team", team_id=team.id),
        "unknown team": lambda: c.memory.create_item("x", visibility="team", team_id=uuid7()),
    }
    assert await not_refused(NotFoundError, calls) == []
    assert await c.memory.list_items(visibility="team") == []


# --- tasks -----------------------------------------------------------------------------------


async def test_private_task_of_another_agent_is_not_found(view: View) -> None:
    """Agent B cannot read A's private task (full or short id), nor update, delete, hand off,
    depend on it, drop a dependency on it or read its history: each fails exactly as for an id
    nobody stored (NotFoundError; delete answers as for a missing id)."""
    a, b = view("a"), view("b")
    task = await a.tasks.create_task("a private violin task", project="secret")
    own = await b.tasks.create_task("b's own task")
    assert await b.tasks.get_task(task.id) is None
    assert await b.tasks.get_task(task.short_id) is None
    assert task.id not in {t.id for t in await b.tasks.list_tasks(limit=1000)}
    assert await b.tasks.search_tasks("violin") == []
    assert await b.tasks.get_tasks_by_project("secret") == []
    for target in (task.id, uuid7()):
        calls = {
            "update": lambda t=target: b.tasks.update_task(t, title="hijacked"),
            "handoff": lambda t=target: b.tasks.handoff_task(t, b.agent_id),
            "depend on it": lambda t=target: b.tasks.add_dependency(own.id, t),
            "add to it": lambda t=target: b.tasks.add_dependency(t, own.id),
            "create depending": lambda t=target: b.tasks.create_task("dep", depends_on=[t]),
            "remove dependency on it": lambda t=target: b.tasks.remove_dependency(own.id, t),
            "remove from it": lambda t=target: b.tasks.remove_dependency(t, own.id),
            "history": lambda t=target: b.tasks.task_history(t),
        }
        assert await not_refused(NotFoundError, calls) == [], target
    for short in (task.short_id, task.short_id.upper()):
        calls = {
            "update by short id": lambda s=short: b.tasks.update_task(s, title="hijacked"),
            "history by short id": lambda s=short: b.tasks.task_history(s),
            "depend on it by short id": lambda s=short: b.tasks.add_dependency(own.id, s),
        }
        assert await not_refused(NotFoundError, calls) == [], short
    deletes = [await outcome(lambda t=t: b.tasks.delete_task(t)) for t in (task.id, uuid7())]
    assert deletes[0] == deletes[1]
    assert deletes[0] in ("NotFoundError", False)
    assert await a.tasks.get_task(task.id) == task
    assert [t.id for t in await b.tasks.list_tasks(agent_id=b.agent_id)] == [own.id]


async def test_short_id_matching_an_invisible_task_is_not_ambiguous(view: View) -> None:
    """A short id shared with another agent's private task resolves to the visible task (an
    AmbiguousIdError would leak that the other task exists)."""
    a, b = view("a"), view("b")
    theirs = await a.tasks.create_task("their task")
    mine = await b.tasks.create_task("my task", id=with_suffix(uuid7(), theirs.short_id))
    assert mine.short_id == theirs.short_id
    got = await b.tasks.get_task(mine.short_id)
    assert got is not None
    assert got.id == mine.id


async def test_family_and_team_tasks_are_visible(view: View) -> None:
    """A's family task is visible to any agent; A's team task to the team's members only."""
    a, b, c = view("a"), view("b"), view("c")
    team = await a.teams.create_team("lantern crew", members=[b.agent_id])
    family = await a.tasks.create_task("family lantern task", visibility="family")
    team_task = await a.tasks.create_task("team lantern task", visibility="team", team_id=team.id)
    private = await a.tasks.create_task("private lantern task")
    assert await c.tasks.get_task(family.id) == family
    assert await b.tasks.get_task(team_task.id) == team_task
    assert await c.tasks.get_task(team_task.id) is None
    b_listed = {t.id for t in await b.tasks.list_tasks(agent_id=a.agent_id)}
    c_listed = {t.id for t in await c.tasks.list_tasks(agent_id=a.agent_id)}
    assert b_listed == {family.id, team_task.id}
    assert c_listed == {family.id}
    assert private.id not in b_listed
    assert {t.id for t in await b.tasks.list_tasks(team_id=team.id)} == {team_task.id}


# --- teams -----------------------------------------------------------------------------------


async def test_a_team_the_agent_is_not_in_is_not_found(view: View) -> None:
    """Agent B, not a member of A's team, gets exactly what an id nobody stored gets: get_team
    None, a team_id filter matching nothing, NotFoundError from every member change, disband,
    team_members and from rows that name the team — never a ValidationError, never a leak; and
    A's team is unchanged."""
    a, b, c = view("a"), view("b"), view("c")
    team = await a.teams.create_team("closed harbor crew", members=[c.agent_id])
    await a.tasks.create_task("closed crew task", visibility="team", team_id=team.id)
    for target in (team.id, uuid7()):
        assert await b.teams.get_team(target) is None, target
        assert await b.tasks.list_tasks(team_id=target) == [], target
        calls = {
            "add_member": lambda t=target: b.teams.add_member(t, b.agent_id),
            "add_member as lead": lambda t=target: b.teams.add_member(t, b.agent_id, role="lead"),
            "update_member": lambda t=target: b.teams.update_member(t, c.agent_id, role="lead"),
            "remove_member": lambda t=target: b.teams.remove_member(t, c.agent_id),
            "disband_team": lambda t=target: b.teams.disband_team(t),
            "team_members": lambda t=target: b.teams.team_members(t),
            "team item": lambda t=target: b.memory.create_item(
                "sneak", visibility="team", team_id=t
            ),
            "team task": lambda t=target: b.tasks.create_task(
                "sneak", visibility="team", team_id=t
            ),
        }
        assert await not_refused(NotFoundError, calls) == [], target
    after = await a.teams.get_team(team.id)
    assert after == team
    assert [m.agent_id for m in await c.teams.team_members(team.id)] == [a.agent_id, c.agent_id]


async def test_a_malformed_id_is_refused_before_visibility_is_asked(view: View) -> None:
    """A malformed id is a ValidationError for every agent alike — the owner of rows and an
    agent that sees none — so the answer to a bad id never depends on who asks or what exists."""
    owner, stranger = view("owner"), view("stranger")
    await owner.memory.create_item("an item of the owner")
    await owner.tasks.create_task("a task of the owner")
    await owner.teams.create_team("a team of the owner")
    for me in (owner, stranger):
        for bad in MALFORMED_IDS:
            calls = {
                "get_item": lambda me=me, bad=bad: me.memory.get_item(bad),
                "get_task": lambda me=me, bad=bad: me.tasks.get_task(bad),
                "get_team": lambda me=me, bad=bad: me.teams.get_team(bad),
                "delete_item": lambda me=me, bad=bad: me.memory.delete_item(bad),
                "delete_task": lambda me=me, bad=bad: me.tasks.delete_task(bad),
                "team_members": lambda me=me, bad=bad: me.teams.team_members(bad),
            }
            assert await not_refused(ValidationError, calls) == [], (me.agent_id, repr(bad))


# --- vector search and concurrency ------------------------------------------------------------


async def test_vector_search_counts_family_and_team_rows_as_visible(view: View) -> None:
    """An agent with no rows of its own gets k vector hits made of other agents' family rows and
    its team's rows, although many closer private rows of a third agent exist; an outsider gets
    only the family rows."""
    a, member, outsider, crowd = view("a"), view("member"), view("outsider"), view("crowd")
    query = unit(40_000)
    await crowd.memory.create_items(
        [{"summary": f"crowd {n}", "embedding": as_list(with_cosine(query, 0.99, 41_000 + n))}
         for n in range(300)]
    )  # fmt: skip
    team = await a.teams.create_team("vector crew", members=[member.agent_id])
    family = await a.memory.create_items(
        [{"summary": f"vector family {n}", "visibility": "family",
          "embedding": as_list(with_cosine(query, 0.5, 42_000 + n))} for n in range(6)]
    )  # fmt: skip
    teamed = await a.memory.create_items(
        [{"summary": f"vector team {n}", "visibility": "team", "team_id": team.id,
          "embedding": as_list(with_cosine(query, 0.6, 43_000 + n))} for n in range(4)]
    )  # fmt: skip
    member_hits = await member.memory.search_items("x", embedding=as_list(query), mode="vector")
    member_ids = [h.item.id for h in member_hits]
    assert set(member_ids[:4]) == {i.id for i in teamed}  # cosine 0.6 before 0.5
    assert set(member_ids[4:]) == {i.id for i in family}
    outsider_hits = await outsider.memory.search_items("x", embedding=as_list(query), mode="vector")
    assert {h.item.id for h in outsider_hits} == {i.id for i in family}


async def test_concurrent_requests_for_different_agents_stay_apart(view: View) -> None:
    """Fifty agents writing and reading at the same time through one adapter each see exactly
    their own private rows and no other agent's."""
    agents = [view(f"c{n}") for n in range(50)]
    seen: dict[str, tuple[list[Any], list[Any], str, str]] = {}

    async def work(me: Any) -> None:
        item = await me.memory.create_item(f"concurrent private note of {me.agent_id}")
        task = await me.tasks.create_task(f"concurrent task of {me.agent_id}")
        items = await me.memory.list_items(visibility="private", limit=1000)
        tasks = await me.tasks.list_tasks(limit=1000)
        seen[me.agent_id] = (items, tasks, item.id, task.id)

    async with anyio.create_task_group() as tg:
        for me in agents:
            tg.start_soon(work, me)
    for me in agents:
        items, tasks, item_id, task_id = seen[me.agent_id]
        assert [i.id for i in items] == [item_id]
        private = [t.id for t in tasks if t.visibility == "private"]
        assert private == [task_id]
        assert all(t.agent_id == me.agent_id for t in tasks if t.visibility == "private")
