"""Live candidates: memories that may duplicate an existing item wait as ``pending`` until they are
merged into an item (which is reinforced), promoted to a new item, or rejected — once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from agentbus import uuid7
from agentbus.storage._errors import NotFoundError, StorageError, ValidationError

from ._stores import store
from ._support import MALFORMED_IDS, is_utc, is_uuid7, not_refused

pytestmark = pytest.mark.anyio

View = Callable[..., Any]


def lc(view: Any) -> Any:
    return store(view, "live_candidates")


async def own_items(view: Any) -> dict[str, int]:
    """The agent's own items (not other tests' family ones) -> reinforcement count."""
    items = await view.memory.list_items(limit=1000)
    return {i.id: i.reinforcement_count for i in items if i.agent_id == view.agent_id}


async def test_a_candidate_starts_pending(view: View) -> None:
    """create() stores summary, the similar item, similarity and metadata as a pending
    candidate of the calling agent, unresolved."""
    me = view()
    item = await me.memory.create_item("The deploy key rotates on Mondays")
    made = await lc(me).create(
        "deploy keys rotate every Monday", similar_item_id=item.id, similarity=0.93,
        metadata={"source": "chat"},
    )  # fmt: skip
    assert is_uuid7(made.id)
    assert (made.agent_id, made.status, made.resolved_item_id) == (me.agent_id, "pending", None)
    assert made.summary == "deploy keys rotate every Monday"
    assert made.similar_item_id == item.id
    assert made.similarity == pytest.approx(0.93)
    assert made.metadata == {"source": "chat"}
    assert is_utc(made.created_at)
    assert is_utc(made.updated_at)
    assert [c.id for c in await lc(me).list_candidates()] == [made.id]


async def test_invalid_candidates_are_refused(view: View) -> None:
    """An empty summary, a similarity outside 0..1 or a similar item the agent cannot see is
    refused (ValidationError / NotFoundError), and nothing is stored."""
    me, other = view("me"), view("other")
    hidden = await other.memory.create_item("other agent's private item")
    c = lc(me)
    assert await not_refused(
        ValidationError,
        {
            "empty summary": lambda: c.create("  "),
            "similarity > 1": lambda: c.create("x", similarity=1.5),
            "similarity < 0": lambda: c.create("x", similarity=-0.5),
        },
    ) == []  # fmt: skip
    assert await not_refused(
        NotFoundError,
        {
            "invisible similar item": lambda: c.create("x", similar_item_id=hidden.id),
            "missing similar item": lambda: c.create("x", similar_item_id=uuid7()),
        },
    ) == []  # fmt: skip
    assert await c.list_candidates(status=None) == []


async def test_a_malformed_id_is_refused_by_every_call(view: View) -> None:
    """An id that is empty, longer than MAX_ID_CHARS or holding NUL — of a candidate, a similar
    item or a merge target — is a ValidationError, and the candidate stays pending."""
    me = view()
    c = lc(me)
    pending = await c.create("a pending candidate")
    for bad in MALFORMED_IDS:
        problems = await not_refused(
            ValidationError,
            {
                "create similar_item_id": lambda bad=bad: c.create("x", similar_item_id=bad),
                "merge": lambda bad=bad: c.merge(bad),
                "merge into": lambda bad=bad: c.merge(pending.id, into=bad),
                "promote": lambda bad=bad: c.promote(bad),
                "reject": lambda bad=bad: c.reject(bad),
            },
        )
        assert problems == [], repr(bad)
    assert [x.id for x in await c.list_candidates(status=None)] == [pending.id]


async def test_candidates_are_listed_by_status_newest_first(view: View) -> None:
    """list_candidates shows pending ones by default, newest first; status=None lists all, and a
    status lists only those."""
    me = view()
    made = [await lc(me).create(f"candidate {i}") for i in range(4)]
    await lc(me).reject(made[1].id)
    await lc(me).promote(made[2].id)
    assert [c.id for c in await lc(me).list_candidates()] == [made[3].id, made[0].id]
    assert [c.id for c in await lc(me).list_candidates(status=None)] == [
        c.id for c in reversed(made)
    ]
    assert [c.id for c in await lc(me).list_candidates(status="rejected")] == [made[1].id]
    assert [c.id for c in await lc(me).list_candidates(status="promoted")] == [made[2].id]
    assert await lc(me).list_candidates(status="merged") == []
    assert [c.id for c in await lc(me).list_candidates(status=None, limit=2)] == [
        made[3].id, made[2].id,
    ]  # fmt: skip


async def test_merge_folds_into_the_similar_item_and_reinforces_it(view: View) -> None:
    """merge() without ``into`` resolves the candidate into its similar item: status merged,
    resolved_item_id that item, and the item's reinforcement count goes up by one."""
    me = view()
    item = await me.memory.create_item("The deploy key rotates on Mondays")
    candidate = await lc(me).create("deploy key rotates Mondays", similar_item_id=item.id)
    merged = await lc(me).merge(candidate.id)
    assert (merged.id, merged.status, merged.resolved_item_id) == (candidate.id, "merged", item.id)
    assert merged.updated_at >= candidate.updated_at
    after = await me.memory.get_item(item.id)
    assert after.reinforcement_count == item.reinforcement_count + 1
    assert after.summary == item.summary
    assert await lc(me).list_candidates() == []


async def test_merge_into_another_item(view: View) -> None:
    """merge(into=...) folds into the named item (reinforced) instead of the similar one (not)."""
    me = view()
    similar = await me.memory.create_item("the similar item")
    chosen = await me.memory.create_item("the chosen item")
    candidate = await lc(me).create("a candidate", similar_item_id=similar.id)
    merged = await lc(me).merge(candidate.id, into=chosen.id)
    assert merged.resolved_item_id == chosen.id
    assert (await me.memory.get_item(chosen.id)).reinforcement_count == (
        chosen.reinforcement_count + 1
    )
    assert (await me.memory.get_item(similar.id)).reinforcement_count == (
        similar.reinforcement_count
    )


async def test_merge_needs_a_visible_target(view: View) -> None:
    """merge() without a similar item and without ``into`` is a ValidationError; into an item
    the agent cannot see is NotFoundError; either way the candidate stays pending."""
    me, other = view("me"), view("other")
    hidden = await other.memory.create_item("other agent's private item")
    candidate = await lc(me).create("no similar item")
    with pytest.raises(ValidationError):
        await lc(me).merge(candidate.id)
    with pytest.raises(NotFoundError):
        await lc(me).merge(candidate.id, into=hidden.id)
    with pytest.raises(NotFoundError):
        await lc(me).merge(candidate.id, into=uuid7())
    assert [c.status for c in await lc(me).list_candidates()] == ["pending"]
    assert (await other.memory.get_item(hidden.id)).reinforcement_count == (
        hidden.reinforcement_count
    )


async def test_merge_folds_only_into_the_agents_own_item(view: View) -> None:
    """Rule: merge() folds only into the calling agent's own item. Another agent's family,
    public or team item — visible, and a valid similar_item_id — is no merge target: merging
    into it (by default or with ``into``) raises NotFoundError like any mutation of a row the
    agent does not own, reinforces nothing, and leaves the candidate pending for a merge into
    the agent's own item."""
    me, other = view("me"), view("other")
    team = await other.teams.create_team("merge targets", members=[me.agent_id])
    shared = {
        visibility: await other.memory.create_item(
            f"other's {visibility} memory", visibility=visibility,
            team_id=team.id if visibility == "team" else None,
        )
        for visibility in ("family", "public", "team")
    }  # fmt: skip
    assert all([await me.memory.get_item(item.id) is not None for item in shared.values()])
    candidate = await lc(me).create("a near duplicate", similar_item_id=shared["family"].id)
    attempts = {"default (the similar item)": lambda: lc(me).merge(candidate.id)}
    for visibility, item in shared.items():
        attempts[f"into {visibility}"] = lambda item=item: lc(me).merge(candidate.id, into=item.id)
    assert await not_refused(NotFoundError, attempts) == []
    for item in shared.values():
        assert (await other.memory.get_item(item.id)).reinforcement_count == (
            item.reinforcement_count
        )
    assert [c.status for c in await lc(me).list_candidates()] == ["pending"]
    own = await me.memory.create_item("my own memory")
    merged = await lc(me).merge(candidate.id, into=own.id)
    assert (merged.status, merged.resolved_item_id) == ("merged", own.id)
    assert (await me.memory.get_item(own.id)).reinforcement_count == own.reinforcement_count + 1


async def test_a_candidate_keeps_its_item_ids_after_the_item_is_deleted(view: View) -> None:
    """A resolved candidate is a record of the decision: deleting the item it resembled and was
    merged into, or the item it was promoted to, leaves similar_item_id and resolved_item_id as
    they were (the ids then name nothing: get_item returns None)."""
    me = view()
    item = await me.memory.create_item("an item that will be deleted")
    merged = await lc(me).merge(
        (await lc(me).create("its near duplicate", similar_item_id=item.id)).id
    )
    promoted = await lc(me).promote((await lc(me).create("a fact that will be deleted")).id)
    assert await me.memory.delete_item(item.id) is True
    assert await me.memory.delete_item(promoted.resolved_item_id) is True
    kept = {c.id: c for c in await lc(me).list_candidates(status=None)}
    assert (kept[merged.id].similar_item_id, kept[merged.id].resolved_item_id) == (
        item.id, item.id,
    )  # fmt: skip
    assert kept[promoted.id].resolved_item_id == promoted.resolved_item_id
    assert await me.memory.get_item(item.id) is None


async def test_get_stats_counts_candidates_by_status(view: View) -> None:
    """get_stats().live_candidates counts the agent's own candidates by status, every status
    present (0 when none): a fresh agent has all zeros, and creating, merging, promoting and
    rejecting move exactly one count each; another agent's candidates never count."""
    me, other = view("me"), view("other")
    zeros = {"pending": 0, "merged": 0, "promoted": 0, "rejected": 0}
    assert (await me.memory.get_stats()).live_candidates == zeros
    item = await me.memory.create_item("the memory merged into")
    made = [await lc(me).create(f"stats candidate {i}") for i in range(5)]
    await lc(other).create("someone else's candidate")
    assert (await me.memory.get_stats()).live_candidates == {**zeros, "pending": 5}
    await lc(me).merge(made[0].id, into=item.id)
    await lc(me).promote(made[1].id)
    await lc(me).reject(made[2].id)
    await lc(me).reject(made[3].id)
    stats = await me.memory.get_stats()
    assert stats.live_candidates == {"pending": 1, "merged": 1, "promoted": 1, "rejected": 2}
    assert stats.items == 2  # the item merged into, and the promoted one
    assert (await other.memory.get_stats()).live_candidates == {**zeros, "pending": 1}


async def test_promote_creates_a_memory_item(view: View) -> None:
    """promote() creates an item of the calling agent from the candidate's summary with the
    given visibility: status promoted, resolved_item_id the new item."""
    me = view()
    candidate = await lc(me).create("The staging database moved to host db-3")
    promoted = await lc(me).promote(candidate.id, visibility="family")
    assert promoted.status == "promoted"
    assert promoted.resolved_item_id is not None
    item = await me.memory.get_item(promoted.resolved_item_id)
    assert item is not None
    assert (item.summary, item.agent_id, item.visibility) == (
        candidate.summary, me.agent_id, "family",
    )  # fmt: skip
    default = await lc(me).promote((await lc(me).create("Another new fact")).id)
    assert (await me.memory.get_item(default.resolved_item_id)).visibility == "private"


async def test_reject_resolves_without_an_item(view: View) -> None:
    """reject() marks the candidate rejected and creates or reinforces nothing."""
    me = view()
    item = await me.memory.create_item("an existing memory")
    candidate = await lc(me).create("a near duplicate", similar_item_id=item.id)
    rejected = await lc(me).reject(candidate.id)
    assert (rejected.status, rejected.resolved_item_id) == ("rejected", None)
    assert (await me.memory.get_item(item.id)).reinforcement_count == item.reinforcement_count
    assert await own_items(me) == {item.id: item.reinforcement_count}


@pytest.mark.parametrize("first", ["merge", "promote", "reject"])
async def test_a_resolved_candidate_cannot_be_resolved_again(view: View, first: str) -> None:
    """Only a pending candidate moves: after merge, promote or reject, every further merge,
    promote or reject is refused (a StorageError), the candidate keeps its status and result,
    and no item is created or reinforced again."""
    me = view()
    item = await me.memory.create_item("the existing memory")
    candidate = await lc(me).create("the candidate memory", similar_item_id=item.id)
    actions = {
        "merge": lambda: lc(me).merge(candidate.id),
        "promote": lambda: lc(me).promote(candidate.id),
        "reject": lambda: lc(me).reject(candidate.id),
    }
    resolved = await actions[first]()
    items = await own_items(me)
    assert await not_refused(StorageError, actions) == []
    (after,) = await lc(me).list_candidates(status=None)
    assert (after.status, after.resolved_item_id) == (resolved.status, resolved.resolved_item_id)
    assert await own_items(me) == items


async def test_another_agents_candidates_are_not_found(view: View) -> None:
    """Another agent neither lists nor resolves an agent's candidates: merge, promote and reject
    raise NotFoundError, as for an id nobody stored, and the candidate stays pending."""
    a, b = view("a"), view("b")
    item = await a.memory.create_item("a's memory", visibility="family")
    candidate = await lc(a).create("a's candidate", similar_item_id=item.id)
    assert await lc(b).list_candidates(status=None) == []
    for target in (candidate.id, uuid7()):
        problems = await not_refused(
            NotFoundError,
            {
                "merge": lambda t=target: lc(b).merge(t, into=item.id),
                "promote": lambda t=target: lc(b).promote(t),
                "reject": lambda t=target: lc(b).reject(t),
            },
        )
        assert problems == [], target
    assert [c.status for c in await lc(a).list_candidates(status=None)] == ["pending"]
