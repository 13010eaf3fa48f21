"""Memory: items, de-duplication, categories, entities, reflections, lessons, embeddings, stats."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest

from agentbus import uuid7
from agentbus.storage._canonical import content_hash
from agentbus.storage._errors import DimensionMismatchError, NotFoundError, ValidationError
from agentbus.storage._models import MAX_ID_CHARS
from agentbus.storage._rules import step_confidence

from ._support import MALFORMED_IDS, NOT_LOWER_CASE_UUIDS, as_list, is_utc, not_refused, unit

pytestmark = pytest.mark.anyio

View = Callable[..., Any]
Call = Callable[[], Awaitable[object]]


def newest_first(rows: list[Any]) -> list[Any]:
    return sorted(rows, key=lambda row: (row.created_at, row.id), reverse=True)


# --- items -----------------------------------------------------------------------------------


async def test_create_item_defaults_and_read_back(view: View) -> None:
    """A new item belongs to the agent, has the documented defaults, and reads back equal."""
    me = view()
    item = await me.memory.create_item("the harbor opens at dawn")
    assert item.agent_id == me.agent_id
    assert (item.memory_type, item.visibility, item.team_id) == ("knowledge", "private", None)
    assert item.significance == 0.5
    assert item.content_hash == content_hash("the harbor opens at dawn")
    assert item.has_embedding is False
    assert item.metadata == {}
    assert is_utc(item.created_at)
    assert is_utc(item.updated_at)
    assert await me.memory.get_item(item.id) == item


async def test_create_item_keeps_every_field(view: View) -> None:
    """Every argument of create_item is stored and read back."""
    me = view()
    resource = await me.memory.create_resource(
        "https://example.org/log", modality="image", caption="a log", metadata={"w": 3}
    )
    item = await me.memory.create_item(
        "an event with everything", memory_type="event", resource_id=resource.id,
        significance=0.9, metadata={"k": [1, 2]}, embedding=as_list(unit(3)),
    )  # fmt: skip
    assert (item.memory_type, item.resource_id, item.significance) == ("event", resource.id, 0.9)
    assert item.metadata == {"k": [1, 2]}
    assert item.has_embedding is True
    assert await me.memory.get_item(item.id) == item
    assert await me.memory.get_resource(resource.id) == resource
    assert (resource.modality, resource.caption, resource.metadata) == ("image", "a log", {"w": 3})
    assert [r.id for r in await me.memory.list_resources()] == [resource.id]


async def test_significance_outside_0_1_is_refused(view: View) -> None:
    """Significance is a number from 0 to 1."""
    me = view()
    for bad in (-0.1, 1.5):
        with pytest.raises(ValidationError):
            await me.memory.create_item(f"significance {bad}", significance=bad)
    assert await me.memory.list_items() == []


async def test_get_unknown_item_is_none(view: View) -> None:
    """get_item of an id nobody stored returns None."""
    assert await view().memory.get_item(uuid7()) is None


def memory_id_calls(
    memory: Any, ref: object, item: Any, category: Any, entity: Any
) -> dict[str, Call]:
    """Every memory call that changes a row named by id, with ``ref`` in that place (the
    agent's own ``item``, ``category`` and ``entity`` wherever a second row goes)."""
    return {
        "delete_item": lambda: memory.delete_item(ref),
        "reinforce_item": lambda: memory.reinforce_item(ref),
        "embed_item": lambda: memory.embed_item(ref, as_list(unit(5))),
        "link_item_category item": lambda: memory.link_item_category(ref, category.id),
        "link_item_category category": lambda: memory.link_item_category(item.id, ref),
        "link_item_entity item": lambda: memory.link_item_entity(ref, entity.id),
        "link_item_entity entity": lambda: memory.link_item_entity(item.id, ref),
        "reinforce_lesson": lambda: memory.reinforce_lesson(ref),
        "decay_lesson": lambda: memory.decay_lesson(ref),
        "create_item resource_id": lambda: memory.create_item("r", resource_id=ref),
        "create_item team_id": lambda: memory.create_item("t", visibility="team", team_id=ref),
        "create_items resource_id": lambda: memory.create_items(
            [{"summary": "fine"}, {"summary": "bad ref", "resource_id": ref}]
        ),
    }


async def test_a_malformed_id_is_refused_by_every_memory_call(view: View) -> None:
    """Rule (every backend): an id to look up that is not text, empty, longer than MAX_ID_CHARS
    or holding NUL is a ValidationError — for reads too (never None, never "not found") — of
    items, resources, categories, entities and lessons, and nothing changes."""
    me = view()
    m = me.memory
    item = await m.create_item("an item beside malformed ids")
    category = await m.create_category("malformed")
    entity = await m.create_entity("Malformed")
    lesson = await m.create_lesson("a lesson beside malformed ids")
    for bad in MALFORMED_IDS:
        calls = memory_id_calls(m, bad, item, category, entity) | {
            "get_item": lambda bad=bad: m.get_item(bad),
            "get_resource": lambda bad=bad: m.get_resource(bad),
            "get_item_categories": lambda bad=bad: m.get_item_categories(bad),
            "get_item_entities": lambda bad=bad: m.get_item_entities(bad),
        }
        if not (isinstance(bad, str) and len(bad) > MAX_ID_CHARS):  # also found by name
            calls["get_entity"] = lambda bad=bad: m.get_entity(bad)
        assert await not_refused(ValidationError, calls) == [], repr(bad)
    assert [i.id for i in await m.list_items()] == [item.id]
    assert await m.get_item(item.id) == item
    assert [x.confidence for x in await m.list_lessons()] == [lesson.confidence]
    assert (await m.get_entity(entity.id)).memory_count == 0


async def test_a_well_formed_unknown_id_is_not_found(view: View) -> None:
    """Rule (every backend): a well-formed id that names no row — a UUID nobody stored, or any
    other text within the limits — is "not found": get_* -> None, lists -> [], mutations and
    references -> NotFoundError; never a ValidationError."""
    me = view()
    m = me.memory
    item = await m.create_item("an item beside unknown ids")
    category = await m.create_category("unknown")
    entity = await m.create_entity("Unknown")
    for unknown in (uuid7(), "not-a-uuid", "x" * MAX_ID_CHARS):
        assert await m.get_item(unknown) is None
        assert await m.get_resource(unknown) is None
        assert await m.get_entity(unknown) is None
        assert await m.get_item_categories(unknown) == []
        assert await m.get_item_entities(unknown) == []
        calls = memory_id_calls(m, unknown, item, category, entity)
        assert await not_refused(NotFoundError, calls) == [], unknown
    assert [i.id for i in await m.list_items()] == [item.id]


@pytest.mark.parametrize("given", NOT_LOWER_CASE_UUIDS)
async def test_a_new_rows_id_must_be_a_lower_case_uuid(view: View, given: str) -> None:
    """Rule (every backend): a caller's ``id=`` for a new item or resource is a UUID in canonical
    lower-case text, so that every backend can hold the row under the same id; anything else is
    a ValidationError and nothing is stored."""
    me = view()
    calls = {
        "create_item": lambda: me.memory.create_item("given id", id=given),
        "create_items": lambda: me.memory.create_items(
            [{"summary": "fine"}, {"summary": "given id", "id": given}]
        ),
        "create_resource": lambda: me.memory.create_resource("https://example.org/", id=given),
    }
    assert await not_refused(ValidationError, calls) == []
    assert await me.memory.list_items() == []
    assert await me.memory.list_resources() == []


async def test_list_items_newest_first_with_default_limit_50(view: View) -> None:
    """list_items returns the 50 newest items by default, newest first (created_at, then id)."""
    me = view()
    created = await me.memory.create_items(
        [{"summary": f"batch orchard note number {n}"} for n in range(30)]
    )
    for n in range(25):
        created.append(await me.memory.create_item(f"single orchard note number {n}"))
    assert len({item.id for item in created}) == 55
    listed = await me.memory.list_items()
    assert len(listed) == 50
    assert [i.id for i in listed] == [i.id for i in newest_first(created)[:50]]
    rest = await me.memory.list_items(offset=50)
    assert [i.id for i in rest] == [i.id for i in newest_first(created)[50:]]
    assert len(await me.memory.list_items(limit=1000)) == 55


async def test_list_items_filters_by_type(view: View) -> None:
    """list_items(memory_type=...) returns only items of that type."""
    me = view()
    event = await me.memory.create_item("an event", memory_type="event")
    skill = await me.memory.create_item("a skill", memory_type="skill")
    assert [i.id for i in await me.memory.list_items(memory_type="event")] == [event.id]
    assert [i.id for i in await me.memory.list_items(memory_type="skill")] == [skill.id]
    assert await me.memory.list_items(visibility="family") == []


async def test_create_items_batch_returns_items_in_input_order(view: View) -> None:
    """create_items stores a batch and returns the items in the order given, fields applied."""
    me = view()
    specs = [
        {"summary": "batch one", "memory_type": "event", "metadata": {"n": 1}},
        {"summary": "batch two", "significance": 0.1, "embedding": as_list(unit(2))},
        {"summary": "batch three", "id": uuid7()},
    ]
    items = await me.memory.create_items(specs)
    assert [i.summary for i in items] == ["batch one", "batch two", "batch three"]
    assert (items[0].memory_type, items[0].metadata) == ("event", {"n": 1})
    assert (items[1].significance, items[1].has_embedding) == (0.1, True)
    assert items[2].id == specs[2]["id"]
    for item in items:
        assert await me.memory.get_item(item.id) == item


async def test_create_items_refuses_the_whole_batch_on_bad_input(view: View) -> None:
    """A batch with one invalid item raises ValidationError and stores none of them."""
    me = view()
    with pytest.raises(ValidationError):
        await me.memory.create_items([{"summary": "good one"}, {"summary": ""}])
    with pytest.raises(DimensionMismatchError):
        await me.memory.create_items(
            [{"summary": "good two", "embedding": as_list(unit(1))},
             {"summary": "short vector", "embedding": [0.5] * 3}]
        )  # fmt: skip
    assert await me.memory.list_items() == []


async def test_delete_item(view: View) -> None:
    """delete_item removes the item (True); deleting it again is "not found"."""
    me = view()
    item = await me.memory.create_item("a short-lived glacier note")
    assert await me.memory.delete_item(item.id) is True
    assert await me.memory.get_item(item.id) is None
    with pytest.raises(NotFoundError):
        await me.memory.delete_item(item.id)
    assert await me.memory.list_items() == []


# --- de-duplication and reinforcement --------------------------------------------------------


async def test_same_summary_returns_same_item_reinforced(view: View) -> None:
    """Creating an item whose summary (whitespace-normalised) exists returns the existing id with
    reinforcement_count incremented, and no second row."""
    me = view()
    first = await me.memory.create_item("The violin  needs new strings")
    again = await me.memory.create_item("  The violin needs\nnew strings ")
    assert again.id == first.id
    assert again.reinforcement_count == first.reinforcement_count + 1
    assert again.last_reinforced_at is not None
    assert is_utc(again.last_reinforced_at)
    third = await me.memory.create_item("The violin needs new strings")
    assert third.id == first.id
    assert third.reinforcement_count == first.reinforcement_count + 2
    assert [i.id for i in await me.memory.list_items()] == [first.id]
    assert (await me.memory.get_item(first.id)).reinforcement_count == third.reinforcement_count


async def test_batch_repeating_a_stored_summary_reinforces_it(view: View) -> None:
    """create_items de-duplicates against stored items the same way create_item does."""
    me = view()
    first = await me.memory.create_item("copper pipes were replaced")
    items = await me.memory.create_items(
        [{"summary": "copper pipes   were replaced"}, {"summary": "new copper tap"}]
    )
    assert items[0].id == first.id
    assert items[0].reinforcement_count == first.reinforcement_count + 1
    assert len(await me.memory.list_items()) == 2


async def test_dedup_is_per_agent(view: View) -> None:
    """Two agents storing the same summary get two items."""
    a, b = view("a"), view("b")
    item_a = await a.memory.create_item("the quartz clock is fast")
    item_b = await b.memory.create_item("the quartz clock is fast")
    assert item_a.id != item_b.id
    assert item_b.reinforcement_count == item_a.reinforcement_count


async def test_reinforce_item(view: View) -> None:
    """reinforce_item increments reinforcement_count and stamps last_reinforced_at."""
    me = view()
    item = await me.memory.create_item("lanterns are in the shed")
    once = await me.memory.reinforce_item(item.id)
    twice = await me.memory.reinforce_item(item.id)
    assert once.id == item.id
    assert once.reinforcement_count == item.reinforcement_count + 1
    assert twice.reinforcement_count == item.reinforcement_count + 2
    assert twice.last_reinforced_at is not None
    assert is_utc(twice.last_reinforced_at)
    assert once.last_reinforced_at is not None
    assert twice.last_reinforced_at >= once.last_reinforced_at
    assert await me.memory.get_item(item.id) == twice


async def test_reinforce_unknown_item_is_not_found(view: View) -> None:
    """reinforce_item of an id nobody stored raises NotFoundError."""
    with pytest.raises(NotFoundError):
        await view().memory.reinforce_item(uuid7())


# --- categories ------------------------------------------------------------------------------


async def test_categories_get_or_create_case_insensitive(view: View) -> None:
    """create_category returns the existing category for a name in any case."""
    me = view()
    work = await me.memory.create_category("Work", description="things for work")
    again = await me.memory.create_category("wORK")
    home = await me.memory.create_category("home")
    assert again.id == work.id
    assert (again.name, again.description) == ("Work", "things for work")
    assert sorted(c.id for c in await me.memory.list_categories()) == sorted([work.id, home.id])


async def test_category_links_are_idempotent_and_counted(view: View) -> None:
    """Linking an item to a category twice makes one link; item_count counts distinct items."""
    me = view()
    category = await me.memory.create_category("garden")
    first = await me.memory.create_item("the meadow needs mowing")
    second = await me.memory.create_item("the orchard needs pruning")
    await me.memory.link_item_category(first.id, category.id)
    await me.memory.link_item_category(first.id, category.id)
    assert [c.id for c in await me.memory.get_item_categories(first.id)] == [category.id]
    [listed] = await me.memory.list_categories()
    assert listed.item_count == 1
    await me.memory.link_item_category(second.id, category.id)
    [listed] = await me.memory.list_categories()
    assert listed.item_count == 2
    assert (await me.memory.get_item_categories(first.id))[0].item_count == 2


async def test_an_items_categories_and_entities_are_listed_newest_first(view: View) -> None:
    """Rule (every backend, the list rule): get_item_categories and get_item_entities list
    newest first (``created_at``, then id) — not by name."""
    me = view()
    item = await me.memory.create_item("the lighthouse keeper's log")
    categories = [await me.memory.create_category(name) for name in ("alpha", "Mike", "zulu")]
    entities = [await me.memory.create_entity(name) for name in ("Abe", "mia", "Zoe")]
    for category in (categories[1], categories[0], categories[2]):
        await me.memory.link_item_category(item.id, category.id)
    for entity in (entities[2], entities[0], entities[1]):
        await me.memory.link_item_entity(item.id, entity.id)
    listed_categories = await me.memory.get_item_categories(item.id)
    listed_entities = await me.memory.get_item_entities(item.id)
    assert [c.id for c in listed_categories] == [c.id for c in newest_first(categories)]
    assert [e.id for e in listed_entities] == [e.id for e in newest_first(entities)]
    assert [c.name for c in listed_categories] == ["zulu", "Mike", "alpha"]
    assert [e.name for e in listed_entities] == ["Zoe", "mia", "Abe"]


async def test_links_to_an_item_no_longer_visible_are_not_listed(view: View) -> None:
    """Rule (every backend): get_item_categories/get_item_entities answer [] for an item the
    agent cannot see, also when it linked its own category or entity to it while it could."""
    owner, member = view("owner"), view("member")
    crew = await owner.teams.create_team("log crew", members=[member.agent_id])
    item = await owner.memory.create_item("the crew log", visibility="team", team_id=crew.id)
    category = await member.memory.create_category("crew notes")
    entity = await member.memory.create_entity("Crew")
    await member.memory.link_item_category(item.id, category.id)
    await member.memory.link_item_entity(item.id, entity.id)
    assert [c.id for c in await member.memory.get_item_categories(item.id)] == [category.id]
    assert [e.id for e in await member.memory.get_item_entities(item.id)] == [entity.id]
    await owner.teams.remove_member(crew.id, member.agent_id)
    assert await member.memory.get_item(item.id) is None
    assert await member.memory.get_item_categories(item.id) == []
    assert await member.memory.get_item_entities(item.id) == []


async def test_a_new_entity_link_moves_the_entitys_updated_at(view: View) -> None:
    """Rule (every backend): linking an item to an entity stamps the entity's ``updated_at``
    (its ``memory_count`` changed); linking it again changes nothing."""
    me = view()
    entity = await me.memory.create_entity("Harbor Master")
    item = await me.memory.create_item("the harbor master retired")
    assert entity.updated_at == entity.created_at
    await me.memory.link_item_entity(item.id, entity.id)
    linked = await me.memory.get_entity(entity.id)
    assert linked is not None
    assert linked.updated_at > entity.updated_at
    assert linked.memory_count == 1
    await me.memory.link_item_entity(item.id, entity.id)
    assert await me.memory.get_entity(entity.id) == linked


async def test_linking_unknown_rows_is_not_found(view: View) -> None:
    """Links to an item or category nobody stored raise NotFoundError."""
    me = view()
    item = await me.memory.create_item("a linkable note")
    category = await me.memory.create_category("linkable")
    entity = await me.memory.create_entity("Linkable")
    with pytest.raises(NotFoundError):
        await me.memory.link_item_category(uuid7(), category.id)
    with pytest.raises(NotFoundError):
        await me.memory.link_item_category(item.id, uuid7())
    with pytest.raises(NotFoundError):
        await me.memory.link_item_entity(uuid7(), entity.id)
    with pytest.raises(NotFoundError):
        await me.memory.link_item_entity(item.id, uuid7())
    assert await me.memory.get_item_categories(item.id) == []
    assert await me.memory.get_item_entities(item.id) == []


# --- entities --------------------------------------------------------------------------------


async def test_entities_get_or_create_case_insensitive(view: View) -> None:
    """create_entity returns the existing entity for a name in any case; get_entity finds it by
    id or by name."""
    me = view()
    ada = await me.memory.create_entity("Ada Lovelace", entity_type="person", profile="math")
    again = await me.memory.create_entity("ADA LOVELACE")
    assert again.id == ada.id
    assert (again.name, again.entity_type, again.profile) == ("Ada Lovelace", "person", "math")
    assert await me.memory.get_entity(ada.id) == ada
    assert (await me.memory.get_entity("Ada Lovelace")).id == ada.id
    assert (await me.memory.get_entity("ada lovelace")).id == ada.id
    assert await me.memory.get_entity("Grace Hopper") is None
    assert [e.id for e in await me.memory.list_entities()] == [ada.id]


async def test_entity_links_are_idempotent_and_counted(view: View) -> None:
    """memory_count counts distinct linked items; relinking changes nothing."""
    me = view()
    entity = await me.memory.create_entity("Falcon")
    first = await me.memory.create_item("the falcon returned")
    second = await me.memory.create_item("the falcon hunted")
    for _ in range(3):
        await me.memory.link_item_entity(first.id, entity.id)
    assert (await me.memory.get_entity(entity.id)).memory_count == 1
    await me.memory.link_item_entity(second.id, entity.id)
    assert (await me.memory.get_entity(entity.id)).memory_count == 2
    assert [e.id for e in await me.memory.get_item_entities(first.id)] == [entity.id]
    assert [e.id for e in await me.memory.get_item_entities(second.id)] == [entity.id]


async def test_entities_are_per_agent(view: View) -> None:
    """Two agents creating the same entity name get separate entities."""
    a, b = view("a"), view("b")
    ea = await a.memory.create_entity("Shared Name")
    eb = await b.memory.create_entity("Shared Name")
    assert ea.id != eb.id
    assert ea.agent_id == a.agent_id
    assert eb.agent_id == b.agent_id


async def test_parallel_get_or_create_makes_one_entity(view: View) -> None:
    """Ten concurrent create_entity calls for one name (in varying case) make one row."""
    me = view()
    results: list[Any] = []
    names = ["Pebble", "pebble", "PEBBLE", "Pebble", "pEbble"] * 2

    async def create(name: str) -> None:
        results.append(await me.memory.create_entity(name))

    async with anyio.create_task_group() as tg:
        for name in names:
            tg.start_soon(create, name)
    assert len(results) == 10
    assert len({entity.id for entity in results}) == 1
    assert [e.id for e in await me.memory.list_entities()] == [results[0].id]


async def test_parallel_links_count_once(view: View) -> None:
    """Ten concurrent links of one item to one entity and one category count it once."""
    me = view()
    entity = await me.memory.create_entity("Concurrent")
    category = await me.memory.create_category("concurrent")
    item = await me.memory.create_item("linked from many tasks at once")
    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(me.memory.link_item_entity, item.id, entity.id)
            tg.start_soon(me.memory.link_item_category, item.id, category.id)
    assert (await me.memory.get_entity(entity.id)).memory_count == 1
    [listed] = await me.memory.list_categories()
    assert listed.item_count == 1


# --- reflections and lessons -----------------------------------------------------------------


async def test_reflections_create_and_list_newest_first(view: View) -> None:
    """Reflections keep content, period and metadata; list_reflections is newest first."""
    me = view()
    first = await me.memory.create_reflection("week one", metadata={"mood": "ok"})
    second = await me.memory.create_reflection("week two")
    assert (first.content, first.metadata, first.agent_id) == (
        "week one",
        {"mood": "ok"},
        me.agent_id,
    )
    assert await me.memory.list_reflections() == newest_first([first, second])


async def test_lessons_create_list_search(view: View) -> None:
    """Lessons are stored with context and confidence, listed newest first, and found by
    keyword search with every term required."""
    me = view()
    a = await me.memory.create_lesson("descale the kettle monthly", context="kitchen")
    b = await me.memory.create_lesson("the kettle whistles when ready", confidence=0.8)
    c = await me.memory.create_lesson("monthly harbor fees are due")
    assert (a.context, a.confidence, b.confidence) == ("kitchen", 0.5, 0.8)
    assert [x.id for x in await me.memory.list_lessons()] == [x.id for x in newest_first([a, b, c])]
    assert {x.id for x in await me.memory.search_lessons("kettle")} == {a.id, b.id}
    assert [x.id for x in await me.memory.search_lessons("kettle monthly")] == [a.id]
    assert await me.memory.search_lessons("kettle harbor") == []


async def test_lesson_confidence_outside_0_1_is_refused(view: View) -> None:
    """A lesson's confidence is a number from 0 to 1."""
    me = view()
    for bad in (-0.01, 1.01):
        with pytest.raises(ValidationError):
            await me.memory.create_lesson(f"bad confidence {bad}", confidence=bad)
    assert await me.memory.list_lessons() == []


async def test_lesson_reinforce_and_decay_step_bounded(view: View) -> None:
    """reinforce/decay move confidence by the step, bounded to 0..1, exactly as
    ``_rules.step_confidence`` computes it (so every backend stores the same value)."""
    me = view()
    lesson = await me.memory.create_lesson("keep the lantern lit", confidence=0.5)
    expected = 0.5
    steps = [("r", 0.1), ("r", 0.1), ("d", 0.3), ("r", 0.25), ("r", 0.5), ("d", 0.05)]
    steps += [("d", 0.7), ("d", 0.7), ("r", 0.1)]
    for kind, step in steps:
        if kind == "r":
            lesson = await me.memory.reinforce_lesson(lesson.id, step=step)
            expected = step_confidence(expected, step)
        else:
            lesson = await me.memory.decay_lesson(lesson.id, step=step)
            expected = step_confidence(expected, -step)
        assert lesson.confidence == expected, (kind, step)
        assert 0.0 <= lesson.confidence <= 1.0
    assert [x.confidence for x in await me.memory.list_lessons()] == [expected]


async def test_lesson_confidence_hits_the_bounds(view: View) -> None:
    """Reinforcing near 1 stops at exactly 1.0; decaying near 0 stops at exactly 0.0; the
    default step is 0.1."""
    me = view()
    high = await me.memory.create_lesson("almost certain", confidence=0.95)
    low = await me.memory.create_lesson("almost doubtful", confidence=0.05)
    mid = await me.memory.create_lesson("middling", confidence=0.5)
    assert (await me.memory.reinforce_lesson(high.id)).confidence == 1.0
    assert (await me.memory.decay_lesson(low.id)).confidence == 0.0
    assert (await me.memory.reinforce_lesson(mid.id)).confidence == step_confidence(0.5, 0.1)
    assert (await me.memory.decay_lesson(mid.id)).confidence == step_confidence(
        step_confidence(0.5, 0.1), -0.1
    )


async def test_lesson_reinforcement_is_counted(view: View) -> None:
    """reinforce_lesson increments the lesson's reinforcement_count."""
    me = view()
    lesson = await me.memory.create_lesson("count me")
    after = await me.memory.reinforce_lesson(lesson.id)
    assert after.reinforcement_count == lesson.reinforcement_count + 1


async def test_unknown_lesson_is_not_found(view: View) -> None:
    """Reinforcing or decaying a lesson nobody stored raises NotFoundError."""
    me = view()
    with pytest.raises(NotFoundError):
        await me.memory.reinforce_lesson(uuid7())
    with pytest.raises(NotFoundError):
        await me.memory.decay_lesson(uuid7())


# --- embeddings and stats --------------------------------------------------------------------


async def test_embed_item_makes_it_vector_searchable(view: View) -> None:
    """embed_item sets has_embedding and the item is found by vector search afterwards;
    embedding it again replaces the vector."""
    me = view()
    item = await me.memory.create_item("a note embedded later")
    other = await me.memory.create_item("another note", embedding=as_list(unit(21)))
    await me.memory.embed_item(item.id, as_list(unit(20)))
    assert (await me.memory.get_item(item.id)).has_embedding is True
    hits = await me.memory.search_items(
        "x", embedding=as_list(unit(20)), mode="vector", own_only=True, limit=1
    )
    assert [h.item.id for h in hits] == [item.id]
    await me.memory.embed_item(item.id, as_list(unit(22)))
    hits = await me.memory.search_items(
        "x", embedding=as_list(unit(21)), mode="vector", own_only=True, limit=2
    )
    assert next(h.item.id for h in hits) == other.id
    hits = await me.memory.search_items(
        "x", embedding=as_list(unit(22)), mode="vector", own_only=True, limit=1
    )
    assert [h.item.id for h in hits] == [item.id]
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)


async def test_embed_unknown_item_is_not_found(view: View) -> None:
    """embed_item of an id nobody stored raises NotFoundError."""
    with pytest.raises(NotFoundError):
        await view().memory.embed_item(uuid7(), as_list(unit(1)))


async def test_get_stats_counts_what_was_created(view: View) -> None:
    """get_stats counts items (embedded and by type), resources, categories, entities,
    reflections and lessons; creating rows moves each count by exactly what was created."""
    me = view()
    before = await me.memory.get_stats()
    await me.memory.create_item("stats event one", memory_type="event")
    await me.memory.create_item("stats event two", memory_type="event", embedding=as_list(unit(4)))
    await me.memory.create_item("stats skill", memory_type="skill")
    await me.memory.create_item("stats skill")  # de-duplicated: no new item
    await me.memory.create_resource("https://example.org/stats")
    await me.memory.create_category("stats")
    await me.memory.create_entity("Stats")
    await me.memory.create_entity("STATS")  # the same entity
    await me.memory.create_reflection("stats reflection")
    await me.memory.create_lesson("stats lesson")
    after = await me.memory.get_stats()
    assert after.items - before.items == 3
    assert after.embedded_items - before.embedded_items == 1
    by_type = {k: after.by_type.get(k, 0) - before.by_type.get(k, 0) for k in after.by_type}
    assert {k: v for k, v in by_type.items() if v} == {"event": 2, "skill": 1}
    assert after.resources - before.resources == 1
    assert after.categories - before.categories == 1
    assert after.entities - before.entities == 1
    assert after.reflections - before.reflections == 1
    assert after.lessons - before.lessons == 1
