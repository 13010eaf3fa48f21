"""Tasks: ids and short ids, updates (metadata merged), status stamps, filters and the one
documented order, search, dependencies (a DAG), the ready queue, hand-off history, fencing
(agent-scope and family-scope fences)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import anyio
import pytest

from agentbus import Fence, uuid7
from agentbus.storage._canonical import short_id
from agentbus.storage._errors import (
    AmbiguousIdError,
    DependencyCycleError,
    NotFoundError,
    PermissionDeniedError,
    StaleWriteError,
    ValidationError,
)
from agentbus.storage._models import PRIORITY_RANK, UNASSIGNED

from ._support import (
    MALFORMED_IDS,
    NOT_LOWER_CASE_UUIDS,
    future,
    is_utc,
    not_refused,
    with_suffix,
)

pytestmark = pytest.mark.anyio

View = Callable[..., Any]
Call = Callable[[], Awaitable[object]]


def task_ids(tasks: list[Any]) -> list[str]:
    return [task.id for task in tasks]


def documented_order(tasks: list[Any]) -> list[Any]:
    """Priority rank (urgent first), then due_at (nulls last), then created_at, then id."""
    far = datetime.max.replace(tzinfo=UTC)
    return sorted(
        tasks,
        key=lambda t: (PRIORITY_RANK[t.priority], t.due_at is None, t.due_at or far,
                       t.created_at, t.id),
    )  # fmt: skip


# --- create / get ----------------------------------------------------------------------------


async def test_create_task_defaults_and_get_by_full_and_short_id(view: View) -> None:
    """A new task is pending with the documented defaults; get_task finds it by full id and by
    its short id (the id's last 8 hex digits)."""
    me = view()
    task = await me.tasks.create_task("descale the kettle")
    assert task.agent_id == me.agent_id
    assert (task.status, task.priority, task.visibility) == ("pending", "normal", "private")
    assert (task.assignee, task.team_id, task.project, task.due_at) == (None, None, None, None)
    assert (task.tags, task.metadata, task.depends_on) == ([], {}, [])
    assert (task.started_at, task.completed_at, task.description) == (None, None, None)
    assert task.short_id == short_id(task.id)
    assert len(task.short_id) == 8
    assert is_utc(task.created_at)
    assert is_utc(task.updated_at)
    assert await me.tasks.get_task(task.id) == task
    assert await me.tasks.get_task(task.short_id) == task


async def test_create_task_with_the_id_of_an_existing_task_is_refused(view: View) -> None:
    """Rule (every backend): ``id=`` of a task that exists is a ValidationError, also when the
    new task would depend on it (never a DependencyCycleError), and nothing is written."""
    me = view()
    existing = await me.tasks.create_task("already here")
    calls = {
        "same id": lambda: me.tasks.create_task("again", id=existing.id),
        "same id, depending on it": lambda: me.tasks.create_task(
            "again", id=existing.id, depends_on=[existing.id]
        ),
    }
    assert await not_refused(ValidationError, calls) == []
    assert await me.tasks.list_tasks() == [existing]


async def test_create_task_keeps_every_field(view: View) -> None:
    """Every argument of create_task is stored and read back."""
    me = view()
    team = await me.teams.create_team("task field team")
    due = future(3)
    task = await me.tasks.create_task(
        "full task", description="all fields", priority="high", assignee="someone-else",
        team_id=team.id, project="apollo", tags=["b", "a"], due_at=due, metadata={"x": 1},
    )  # fmt: skip
    assert (task.description, task.priority, task.assignee) == (
        "all fields",
        "high",
        "someone-else",
    )
    assert (task.team_id, task.project, task.tags) == (team.id, "apollo", ["b", "a"])
    assert (task.due_at, task.metadata) == (due, {"x": 1})
    assert await me.tasks.get_task(task.id) == task


async def test_unknown_task_ids_are_none(view: View) -> None:
    """get_task of an unknown full id or short id returns None."""
    me = view()
    await me.tasks.create_task("some task")
    assert await me.tasks.get_task(uuid7()) is None
    assert await me.tasks.get_task("00000000") is None


async def test_ambiguous_short_id_raises(view: View) -> None:
    """A short id matching two visible tasks raises AmbiguousIdError; the full ids still work."""
    me = view()
    first = await me.tasks.create_task("first of a pair")
    second = await me.tasks.create_task("second of a pair", id=with_suffix(uuid7(), first.short_id))
    assert first.short_id == second.short_id
    with pytest.raises(AmbiguousIdError):
        await me.tasks.get_task(first.short_id)
    assert (await me.tasks.get_task(second.id)).title == "second of a pair"


def task_id_calls(tasks: Any, ref: object, other: str) -> dict[str, Call]:
    """Every task call that names a task, with ``ref`` in that place (``other``, a task of the
    agent's own, wherever a second task goes)."""
    return {
        "update_task": lambda: tasks.update_task(ref, title="changed"),
        "delete_task": lambda: tasks.delete_task(ref),
        "handoff_task": lambda: tasks.handoff_task(ref, "someone"),
        "task_history": lambda: tasks.task_history(ref),
        "add_dependency task": lambda: tasks.add_dependency(ref, other),
        "add_dependency depends_on": lambda: tasks.add_dependency(other, ref),
        "remove_dependency task": lambda: tasks.remove_dependency(ref, other),
        "remove_dependency depends_on": lambda: tasks.remove_dependency(other, ref),
        "create_task depends_on": lambda: tasks.create_task("d", depends_on=[ref]),
    }


async def test_a_malformed_task_id_is_refused_by_every_call(view: View) -> None:
    """Rule (every backend): a task id (full or short) that is not text, empty, longer than
    MAX_ID_CHARS or holding NUL is a ValidationError wherever a task id goes in — reads too
    (get_task never answers None for it) — and nothing changes."""
    me = view()
    task = await me.tasks.create_task("a task beside malformed ids")
    t = me.tasks
    for bad in MALFORMED_IDS:
        calls = task_id_calls(t, bad, task.id) | {
            "get_task": lambda bad=bad: t.get_task(bad),
            "create_task team_id": lambda bad=bad: t.create_task(
                "t", visibility="team", team_id=bad
            ),
            "list_tasks team_id": lambda bad=bad: t.list_tasks(team_id=bad),
        }
        assert await not_refused(ValidationError, calls) == [], repr(bad)
    assert await t.list_tasks() == [task]


async def test_a_well_formed_unknown_task_id_is_not_found(view: View) -> None:
    """Rule (every backend): a well-formed task id naming no visible task — a UUID nobody
    stored, a short id nobody has, any other text within the limits — is "not found":
    get_task -> None, every other call -> NotFoundError."""
    me = view()
    task = await me.tasks.create_task("a task beside unknown ids")
    t = me.tasks
    for unknown in (uuid7(), "0000abcd", "not-a-task-id"):
        assert await t.get_task(unknown) is None
        assert await not_refused(NotFoundError, task_id_calls(t, unknown, task.id)) == [], unknown
    assert await t.list_tasks() == [task]


async def test_short_ids_are_accepted_in_either_case_wherever_a_task_id_is(view: View) -> None:
    """A task's short id (its last 8 hex digits), in lower or upper case, names it in every
    call that takes a task id."""
    me = view()
    dep = await me.tasks.create_task("short dependency")
    task = await me.tasks.create_task("short task", depends_on=[dep.short_id.upper()])
    assert task.depends_on == [dep.id]
    assert await me.tasks.get_task(task.short_id.upper()) == task
    updated = await me.tasks.update_task(task.short_id.upper(), title="renamed")
    assert (updated.id, updated.title) == (task.id, "renamed")
    freed = await me.tasks.remove_dependency(task.short_id, dep.short_id.upper())
    assert (freed.depends_on, freed.status) == ([], "pending")
    again = await me.tasks.add_dependency(task.short_id.upper(), dep.short_id)
    assert again.depends_on == [dep.id]
    history = await me.tasks.task_history(task.short_id.upper())
    assert history[0].kind == "created"
    assert await me.tasks.delete_task(dep.short_id.upper()) is True
    assert await me.tasks.get_task(dep.id) is None


async def test_a_new_tasks_id_must_be_a_lower_case_uuid(view: View) -> None:
    """Rule (every backend): a caller's ``id=`` for a new task is a UUID in canonical lower-case
    text — not a short id, not any other text — else ValidationError and nothing is stored."""
    me = view()
    calls = {
        repr(given): lambda given=given: me.tasks.create_task("given id", id=given)
        for given in NOT_LOWER_CASE_UUIDS
    }
    assert await not_refused(ValidationError, calls) == []
    assert await me.tasks.list_tasks() == []


async def test_bad_task_arguments_naming_ids_are_refused(view: View) -> None:
    """Rule (every backend): ``depends_on`` is a sequence of task ids (one string is refused,
    not read as one id), and an agent named by a task call (assignee, hand-off target, the
    assignee/agent_id filters) follows the agent-id rule: ValidationError either way."""
    me = view()
    task = await me.tasks.create_task("a task beside bad arguments")
    t = me.tasks
    calls = {
        "depends_on one string": lambda: t.create_task("d", depends_on=task.id),
        "create assignee": lambda: t.create_task("a", assignee="Not Valid"),
        "update assignee": lambda: t.update_task(task.id, assignee="Not Valid"),
        "handoff": lambda: t.handoff_task(task.id, "Not Valid"),
        "handoff empty": lambda: t.handoff_task(task.id, ""),
        "list assignee": lambda: t.list_tasks(assignee="Not Valid"),
        "list agent_id": lambda: t.list_tasks(agent_id="a\x00b"),
    }
    assert await not_refused(ValidationError, calls) == []
    assert await t.list_tasks() == [task]


# --- update ----------------------------------------------------------------------------------


async def test_update_changes_only_given_fields(view: View) -> None:
    """update_task changes the fields it is given and leaves the rest alone."""
    me = view()
    task = await me.tasks.create_task(
        "original", description="keep me", priority="low", project="p", tags=["t"],
        metadata={"keep": True},
    )  # fmt: skip
    due = future(2)
    updated = await me.tasks.update_task(task.id, title="renamed", priority="urgent", due_at=due)
    assert (updated.title, updated.priority, updated.due_at) == ("renamed", "urgent", due)
    assert (updated.description, updated.project, updated.tags) == ("keep me", "p", ["t"])
    assert updated.metadata == {"keep": True}
    assert updated.created_at == task.created_at
    assert updated.updated_at >= task.updated_at
    assert await me.tasks.get_task(task.id) == updated
    retagged = await me.tasks.update_task(task.id, tags=["x", "y"], assignee="someone", project="q")
    assert (retagged.tags, retagged.assignee, retagged.project) == (["x", "y"], "someone", "q")


async def test_update_merges_metadata_and_none_removes_a_key(view: View) -> None:
    """Metadata is merged into what is stored, never replaced; a key set to None is removed;
    updates without metadata keep it."""
    me = view()
    task = await me.tasks.create_task("meta", metadata={"a": 1, "b": {"deep": 1}})
    merged = await me.tasks.update_task(task.id, metadata={"b": {"new": 2}, "c": 3})
    assert merged.metadata == {"a": 1, "b": {"new": 2}, "c": 3}
    removed = await me.tasks.update_task(task.id, metadata={"a": None})
    assert removed.metadata == {"b": {"new": 2}, "c": 3}
    untouched = await me.tasks.update_task(task.id, title="meta renamed")
    assert untouched.metadata == {"b": {"new": 2}, "c": 3}
    assert (await me.tasks.get_task(task.id)).metadata == {"b": {"new": 2}, "c": 3}


async def test_only_the_owner_or_the_assignee_changes_a_task(view: View) -> None:
    """Rule (every backend): a task is updated, handed off and given or relieved of dependencies
    only by its owner (creator) or its current assignee, and deleted only by its owner. Another
    agent that sees the task gets PermissionDeniedError (an assignee deleting it too); one that
    cannot see it gets NotFoundError, as for a task nobody made. A task needs only to be
    visible to be depended on."""
    owner, assignee, reader, stranger = view("owner"), view("assignee"), view("reader"), view("s")
    crew = await owner.teams.create_team("chores", members=[assignee.agent_id, reader.agent_id])
    shared = {"visibility": "team", "team_id": crew.id}
    task = await owner.tasks.create_task("shared chore", **shared)
    hidden = await owner.tasks.create_task("hidden chore")
    helper = await owner.tasks.create_task("helper", **shared)
    await owner.tasks.add_dependency(task.id, helper.id)
    mine = await reader.tasks.create_task("reader's own")

    def changes(tasks: Any, target: str) -> dict[str, Call]:
        return {
            "update_task": lambda: tasks.update_task(target, title="taken"),
            "handoff_task": lambda: tasks.handoff_task(target, stranger.agent_id),
            "add_dependency": lambda: tasks.add_dependency(target, mine.id),
            "remove_dependency": lambda: tasks.remove_dependency(target, helper.id),
            "delete_task": lambda: tasks.delete_task(target),
        }

    before = await owner.tasks.get_task(task.id)
    assert await not_refused(PermissionDeniedError, changes(reader.tasks, task.id)) == []
    assert await not_refused(NotFoundError, changes(reader.tasks, hidden.id)) == []
    assert await not_refused(NotFoundError, changes(stranger.tasks, task.id)) == []
    assert await owner.tasks.get_task(task.id) == before
    assert len(await owner.tasks.task_history(task.id)) == 3  # created, dependency, status
    # depending on a visible task needs no right to change it
    depending = await reader.tasks.add_dependency(mine.id, task.id)
    assert depending.depends_on == [task.id]
    # the assignee moves the task along; deleting stays the owner's
    await owner.tasks.handoff_task(task.id, assignee.agent_id)
    moved = await assignee.tasks.update_task(task.id, status="in_progress")
    assert (moved.status, moved.agent_id) == ("in_progress", owner.agent_id)
    assert (await assignee.tasks.remove_dependency(task.id, helper.id)).depends_on == []
    assert (await assignee.tasks.add_dependency(task.id, helper.id)).depends_on == [helper.id]
    with pytest.raises(PermissionDeniedError):
        await assignee.tasks.delete_task(task.id)
    handed = await assignee.tasks.handoff_task(task.id, reader.agent_id)
    assert handed.assignee == reader.agent_id
    with pytest.raises(PermissionDeniedError):
        await assignee.tasks.update_task(task.id, title="no longer mine")
    assert (await reader.tasks.update_task(task.id, title="now mine")).title == "now mine"
    await reader.tasks.remove_dependency(mine.id, task.id)
    assert await owner.tasks.delete_task(task.id) is True
    assert await owner.tasks.get_task(task.id) is None


async def test_an_update_that_changes_nothing_writes_nothing(view: View) -> None:
    """Rule (every backend): update_task with no field, with the status the task has or with
    the assignee it has leaves ``updated_at`` and the history as they are (a given title, even
    the same one, is an update)."""
    me = view()
    task = await me.tasks.create_task("steady")
    history = await me.tasks.task_history(task.id)
    calls = {
        "no field": lambda: me.tasks.update_task(task.id),
        "same status": lambda: me.tasks.update_task(task.id, status="pending"),
        "still unassigned": lambda: me.tasks.update_task(task.id, assignee=UNASSIGNED),
        "fence only": lambda: me.tasks.update_task(task.id, fence=("steady", 1)),
    }
    for name, call in calls.items():
        assert await call() == task, name
    assert await me.tasks.task_history(task.id) == history
    retitled = await me.tasks.update_task(task.id, title="steady")
    assert retitled.updated_at > task.updated_at
    kinds = [event.kind for event in await me.tasks.task_history(task.id)]
    assert kinds == ["created", "updated"]


async def test_tags_are_kept_once_in_the_order_given(view: View) -> None:
    """Rule (every backend): a tag given twice is kept once, where it first appears."""
    me = view()
    task = await me.tasks.create_task("tagged", tags=["b", "a", "b", "c", "a"])
    assert task.tags == ["b", "a", "c"]
    updated = await me.tasks.update_task(task.id, tags=["z", "z", "y"])
    assert updated.tags == ["z", "y"]
    assert task_ids(await me.tasks.list_tasks(tags=["y", "y"])) == [task.id]


async def test_update_unknown_task_is_not_found(view: View) -> None:
    """update_task of an id nobody stored raises NotFoundError."""
    with pytest.raises(NotFoundError):
        await view().tasks.update_task(uuid7(), title="ghost")


async def test_status_transitions_stamp_started_and_completed(view: View) -> None:
    """started_at is set the first time a task goes in_progress; completed_at when it reaches a
    done status and cleared when it is reopened."""
    me = view()
    task = await me.tasks.create_task("stamped")
    started = await me.tasks.update_task(task.id, status="in_progress")
    assert started.status == "in_progress"
    assert is_utc(started.started_at)
    assert started.completed_at is None
    done = await me.tasks.update_task(task.id, status="completed")
    assert done.started_at == started.started_at
    assert is_utc(done.completed_at)
    assert done.completed_at >= started.started_at
    reopened = await me.tasks.update_task(task.id, status="in_progress")
    assert reopened.completed_at is None
    assert reopened.started_at == started.started_at
    failed = await me.tasks.update_task(task.id, status="failed")
    assert is_utc(failed.completed_at)
    direct = await me.tasks.create_task("completed without starting")
    closed = await me.tasks.update_task(direct.id, status="cancelled")
    assert closed.started_at is None
    assert is_utc(closed.completed_at)
    assert await me.tasks.get_task(direct.id) == closed


async def test_delete_task(view: View) -> None:
    """delete_task removes the task (True); deleting it again is "not found"."""
    me = view()
    task = await me.tasks.create_task("doomed")
    assert await me.tasks.delete_task(task.id) is True
    assert await me.tasks.get_task(task.id) is None
    with pytest.raises(NotFoundError):
        await me.tasks.delete_task(task.id)
    assert await me.tasks.list_tasks() == []


# --- list ------------------------------------------------------------------------------------


async def test_list_order_is_priority_rank_then_due_then_created(view: View) -> None:
    """list_tasks orders by priority rank urgent > high > normal > low > background (never by
    the priority's text), then due_at with nulls last, then created_at, then id."""
    me = view()
    low, high = sorted([uuid7(), uuid7()])
    spec = [
        ("low-none", "low", None, None),
        ("urgent-none", "urgent", None, None),
        ("high-2d", "high", future(2), None),
        ("high-1d", "high", future(1), None),
        ("background", "background", None, None),
        ("normal-1d", "normal", future(1), None),
        ("normal-none-first", "normal", None, high),  # created first, larger id
        ("normal-none-second", "normal", None, low),  # created second, smaller id
        ("urgent-5d", "urgent", future(5), None),
        ("high-none", "high", None, None),
    ]
    created = {}
    for title, priority, due, task_id in spec:
        kwargs = {"id": task_id} if task_id else {}
        created[title] = await me.tasks.create_task(title, priority=priority, due_at=due, **kwargs)
    listed = await me.tasks.list_tasks()
    assert [t.title for t in listed] == [
        "urgent-5d", "urgent-none", "high-1d", "high-2d", "high-none", "normal-1d",
        "normal-none-first", "normal-none-second", "low-none", "background",
    ]  # fmt: skip
    assert task_ids(listed) == task_ids(documented_order(list(created.values())))


async def test_list_default_limit_is_50_and_offset_pages(view: View) -> None:
    """list_tasks returns 50 tasks by default; offset continues where the page ended."""
    me = view()
    created = [await me.tasks.create_task(f"task {n:02d}") for n in range(55)]
    first = await me.tasks.list_tasks()
    rest = await me.tasks.list_tasks(offset=50)
    assert len(first) == 50
    assert len(rest) == 5
    assert task_ids(first + rest) == task_ids(documented_order(created))
    assert len(await me.tasks.list_tasks(limit=1000)) == 55


async def test_list_filters_status_priority_assignee(view: View) -> None:
    """list_tasks filters by status (one or several), priority and assignee, UNASSIGNED listing
    the tasks nobody is assigned to."""
    me = view()
    a = await me.tasks.create_task("a", priority="high", assignee="bob")
    b = await me.tasks.create_task("b", priority="low")
    c = await me.tasks.create_task("c", priority="high")
    d = await me.tasks.create_task("d", assignee="carol")
    await me.tasks.update_task(b.id, status="in_progress")
    await me.tasks.update_task(d.id, status="completed")
    assert task_ids(await me.tasks.list_tasks(status="pending")) == [a.id, c.id]
    assert set(task_ids(await me.tasks.list_tasks(status=["in_progress", "completed"]))) == {
        b.id, d.id,
    }  # fmt: skip
    assert task_ids(await me.tasks.list_tasks(priority="high")) == [a.id, c.id]
    assert task_ids(await me.tasks.list_tasks(assignee="bob")) == [a.id]
    assert set(task_ids(await me.tasks.list_tasks(assignee=UNASSIGNED))) == {b.id, c.id}
    assert task_ids(
        await me.tasks.list_tasks(status="pending", priority="high", assignee="bob")
    ) == [a.id]
    assert await me.tasks.list_tasks(assignee="nobody-at-all") == []


async def test_list_filters_agent_team_project(view: View) -> None:
    """list_tasks filters by creating agent, team and project."""
    me = view()
    team = await me.teams.create_team("filter team")
    in_team = await me.tasks.create_task("team task", team_id=team.id)
    in_project = await me.tasks.create_task("project task", project="apollo")
    other = await me.tasks.create_task("other task", project="gemini")
    assert set(task_ids(await me.tasks.list_tasks(agent_id=me.agent_id))) == {
        in_team.id, in_project.id, other.id,
    }  # fmt: skip
    assert await me.tasks.list_tasks(agent_id="some-other-agent") == []
    assert task_ids(await me.tasks.list_tasks(team_id=team.id)) == [in_team.id]
    assert task_ids(await me.tasks.list_tasks(project="apollo")) == [in_project.id]


async def test_list_filter_tags_requires_all(view: View) -> None:
    """list_tasks(tags=[...]) returns tasks carrying every given tag."""
    me = view()
    abc = await me.tasks.create_task("abc", tags=["a", "b", "c"])
    ba = await me.tasks.create_task("ba", tags=["b", "a"])
    a = await me.tasks.create_task("a", tags=["a"])
    await me.tasks.create_task("none")
    assert set(task_ids(await me.tasks.list_tasks(tags=["a", "b"]))) == {abc.id, ba.id}
    assert set(task_ids(await me.tasks.list_tasks(tags=["a"]))) == {abc.id, ba.id, a.id}
    assert task_ids(await me.tasks.list_tasks(tags=["c", "a"])) == [abc.id]
    assert await me.tasks.list_tasks(tags=["a", "z"]) == []


async def test_list_filter_due_range(view: View) -> None:
    """due_before/due_after select tasks due in the range; tasks without a due date are in no
    range."""
    me = view()
    soon = await me.tasks.create_task("soon", due_at=future(1))
    later = await me.tasks.create_task("later", due_at=future(5))
    latest = await me.tasks.create_task("latest", due_at=future(10))
    await me.tasks.create_task("undated")
    assert task_ids(await me.tasks.list_tasks(due_before=future(3))) == [soon.id]
    assert task_ids(await me.tasks.list_tasks(due_after=future(3))) == [later.id, latest.id]
    assert task_ids(await me.tasks.list_tasks(due_after=future(3), due_before=future(7))) == [
        later.id
    ]


async def test_list_due_range_is_half_open(view: View) -> None:
    """Rule (every backend): ``due_after <= due_at < due_before`` — a task due exactly at
    ``due_after`` is in the range, one due exactly at ``due_before`` is not."""
    me = view()
    start = future(2)
    end = start + timedelta(days=1)
    at_start = await me.tasks.create_task("at start", due_at=start)
    inside = await me.tasks.create_task("inside", due_at=start + timedelta(hours=1))
    at_end = await me.tasks.create_task("at end", due_at=end)
    before_start = await me.tasks.create_task("before", due_at=start - timedelta(microseconds=1))
    listed = task_ids(await me.tasks.list_tasks(due_after=start, due_before=end))
    assert listed == [at_start.id, inside.id]
    assert task_ids(await me.tasks.list_tasks(due_after=start)) == [
        at_start.id, inside.id, at_end.id,
    ]  # fmt: skip
    assert task_ids(await me.tasks.list_tasks(due_before=end)) == [
        before_start.id, at_start.id, inside.id,
    ]  # fmt: skip
    assert await me.tasks.list_tasks(due_after=start, due_before=start) == []


async def test_search_tasks_requires_every_term(view: View) -> None:
    """search_tasks matches task titles with every query term required (after stemming)."""
    me = view()
    both = await me.tasks.create_task("deploy the kettle firmware")
    plural = await me.tasks.create_task("kettles firmware deployed")
    one = await me.tasks.create_task("kettle cleaning")
    assert set(task_ids(await me.tasks.search_tasks("kettle firmware"))) == {both.id, plural.id}
    assert set(task_ids(await me.tasks.search_tasks("kettle"))) == {both.id, plural.id, one.id}
    assert await me.tasks.search_tasks("kettle violin") == []


async def test_get_tasks_by_project(view: View) -> None:
    """get_tasks_by_project returns exactly the project's tasks."""
    me = view()
    tasks = [await me.tasks.create_task(f"apollo {n}", project="apollo") for n in range(3)]
    await me.tasks.create_task("gemini", project="gemini")
    await me.tasks.create_task("no project")
    found = await me.tasks.get_tasks_by_project("apollo")
    assert set(task_ids(found)) == set(task_ids(tasks))
    assert await me.tasks.get_tasks_by_project("mercury") == []


# --- dependencies ----------------------------------------------------------------------------


async def test_open_dependency_blocks_and_completion_unblocks(view: View) -> None:
    """A task with open dependencies starts blocked; completing the last one makes it pending."""
    me = view()
    first = await me.tasks.create_task("first")
    second = await me.tasks.create_task("second")
    dependent = await me.tasks.create_task("dependent", depends_on=[first.id, second.id])
    assert dependent.status == "blocked"
    assert dependent.depends_on == [first.id, second.id]
    await me.tasks.update_task(first.id, status="completed")
    assert (await me.tasks.get_task(dependent.id)).status == "blocked"
    await me.tasks.update_task(second.id, status="completed")
    assert (await me.tasks.get_task(dependent.id)).status == "pending"


async def test_dependency_on_done_task_does_not_block(view: View) -> None:
    """A task whose dependencies are all done starts pending."""
    me = view()
    done = await me.tasks.create_task("done already")
    await me.tasks.update_task(done.id, status="completed")
    task = await me.tasks.create_task("free", depends_on=[done.id])
    assert task.status == "pending"


async def test_add_and_remove_dependency(view: View) -> None:
    """add_dependency on an open task blocks it and keeps dependencies in the order added;
    removing the last open one makes it pending again."""
    me = view()
    task = await me.tasks.create_task("task")
    dep1 = await me.tasks.create_task("dep1")
    dep2 = await me.tasks.create_task("dep2")
    blocked = await me.tasks.add_dependency(task.id, dep2.id)
    assert (blocked.status, blocked.depends_on) == ("blocked", [dep2.id])
    both = await me.tasks.add_dependency(task.id, dep1.id)
    assert both.depends_on == [dep2.id, dep1.id]
    one = await me.tasks.remove_dependency(task.id, dep2.id)
    assert (one.status, one.depends_on) == ("blocked", [dep1.id])
    free = await me.tasks.remove_dependency(task.id, dep1.id)
    assert (free.status, free.depends_on) == ("pending", [])


async def test_depends_on_lists_only_dependencies_the_reader_can_see(view: View) -> None:
    """Rule (every backend): ``depends_on`` names only the dependencies the reading agent can
    see — another agent's private task is never named — while the task stays blocked by it."""
    owner, reader = view("owner"), view("reader")
    crew = await owner.teams.create_team("goal crew", members=[reader.agent_id])
    shared = {"visibility": "team", "team_id": crew.id}
    private = await owner.tasks.create_task("private step")
    step = await owner.tasks.create_task("shared step", **shared)
    task = await owner.tasks.create_task("team goal", depends_on=[private.id, step.id], **shared)
    assert task.depends_on == [private.id, step.id]
    seen = await reader.tasks.get_task(task.id)
    assert seen is not None
    assert (seen.status, seen.depends_on) == ("blocked", [step.id])
    listed = [t for t in await reader.tasks.list_tasks(team_id=crew.id) if t.id == task.id]
    assert [t.depends_on for t in listed] == [[step.id]]
    found = await reader.tasks.search_tasks("team goal")
    assert [t.depends_on for t in found] == [[step.id]]
    history = json.dumps([e.detail for e in await reader.tasks.task_history(task.id)])
    assert private.id not in history


async def test_dependency_changes_are_recorded_in_history(view: View) -> None:
    """Rule (every backend): adding or removing a dependency is an ``updated`` event with
    ``fields: ["depends_on"]`` (no task id: the history never names a dependency) and moves
    ``updated_at``; the blocked/pending change it causes is a ``status`` event with reason
    ``dependencies``, after it. Adding an existing or removing an absent dependency writes
    nothing."""
    me = view()
    task = await me.tasks.create_task("goal")
    step = await me.tasks.create_task("step")
    blocked = await me.tasks.add_dependency(task.id, step.id)
    assert blocked.updated_at > task.updated_at
    again = await me.tasks.add_dependency(task.id, step.id)
    assert again == blocked
    free = await me.tasks.remove_dependency(task.id, step.id)
    assert free.updated_at > blocked.updated_at
    assert await me.tasks.remove_dependency(task.id, step.id) == free
    events = [(e.kind, e.detail) for e in await me.tasks.task_history(task.id)]
    assert events[1:] == [
        ("updated", {"fields": ["depends_on"]}),
        ("status", {"from": "pending", "to": "blocked", "reason": "dependencies"}),
        ("updated", {"fields": ["depends_on"]}),
        ("status", {"from": "blocked", "to": "pending", "reason": "dependencies"}),
    ]
    await me.tasks.add_dependency(task.id, step.id)
    await me.tasks.update_task(step.id, status="completed")
    await me.tasks.update_task(step.id, status="in_progress")
    await me.tasks.delete_task(step.id)
    automatic = [e.detail for e in await me.tasks.task_history(task.id) if e.kind == "status"]
    assert automatic[2:] == [
        {"from": "pending", "to": "blocked", "reason": "dependencies"},
        {"from": "blocked", "to": "pending", "reason": "dependencies"},
        {"from": "pending", "to": "blocked", "reason": "dependencies"},
        {"from": "blocked", "to": "pending", "reason": "dependencies"},
    ]


async def test_dependency_cycles_are_rejected(view: View) -> None:
    """A→B→C→A and a self-dependency raise DependencyCycleError and change nothing."""
    me = view()
    a = await me.tasks.create_task("a")
    b = await me.tasks.create_task("b", depends_on=[a.id])
    c = await me.tasks.create_task("c", depends_on=[b.id])
    with pytest.raises(DependencyCycleError):
        await me.tasks.add_dependency(a.id, c.id)
    with pytest.raises(DependencyCycleError):
        await me.tasks.add_dependency(a.id, a.id)
    with pytest.raises(DependencyCycleError):
        await me.tasks.add_dependency(b.id, c.id)
    after = await me.tasks.get_task(a.id)
    assert (after.status, after.depends_on) == ("pending", [])
    assert (await me.tasks.get_task(b.id)).depends_on == [a.id]


async def test_concurrent_opposite_dependencies_make_no_cycle(view: View) -> None:
    """Adding A→B and B→A at the same time: exactly one succeeds, the other raises
    DependencyCycleError."""
    me = view()
    outcomes: list[str] = []

    async def add(task_id: str, depends_on: str) -> None:
        try:
            await me.tasks.add_dependency(task_id, depends_on)
            outcomes.append("ok")
        except DependencyCycleError:
            outcomes.append("cycle")

    for _ in range(5):
        a = await me.tasks.create_task("left")
        b = await me.tasks.create_task("right")
        outcomes.clear()
        async with anyio.create_task_group() as tg:
            tg.start_soon(add, a.id, b.id)
            tg.start_soon(add, b.id, a.id)
        assert sorted(outcomes) == ["cycle", "ok"]
        left, right = await me.tasks.get_task(a.id), await me.tasks.get_task(b.id)
        assert (left.depends_on, right.depends_on) in (([b.id], []), ([], [a.id]))


async def test_ready_tasks_in_priority_order(view: View) -> None:
    """ready_tasks lists pending tasks without open dependencies, urgent first; a dependent
    appears once its dependency completes."""
    me = view()
    low = await me.tasks.create_task("low", priority="low")
    urgent = await me.tasks.create_task("urgent", priority="urgent")
    background = await me.tasks.create_task("background", priority="background")
    high = await me.tasks.create_task("high", priority="high")
    blocked = await me.tasks.create_task("blocked", priority="urgent", depends_on=[high.id])
    running = await me.tasks.create_task("running", priority="urgent")
    await me.tasks.update_task(running.id, status="in_progress")
    assert task_ids(await me.tasks.ready_tasks()) == [urgent.id, high.id, low.id, background.id]
    await me.tasks.update_task(high.id, status="completed")
    # blocked is urgent too, created after "urgent": created_at breaks the tie
    assert task_ids(await me.tasks.ready_tasks()) == [urgent.id, blocked.id, low.id, background.id]
    assert task_ids(await me.tasks.ready_tasks(limit=2)) == [urgent.id, blocked.id]


# --- history, hand-off, fencing --------------------------------------------------------------


async def test_handoff_is_recorded_in_history(view: View, new_agent: Callable[..., str]) -> None:
    """handoff_task assigns the task to another agent and records who handed it to whom, after
    the creation event, in time order."""
    me = view()
    to_agent = new_agent("b")
    task = await me.tasks.create_task("hand me on")
    handed = await me.tasks.handoff_task(task.id, to_agent, note="over to you")
    assert handed.assignee == to_agent
    assert (await me.tasks.get_task(task.id)).assignee == to_agent
    history = await me.tasks.task_history(task.id)
    assert history[0].kind == "created"
    assert history[0].by == me.agent_id
    handoffs = [event for event in history if event.kind == "handoff"]
    assert len(handoffs) == 1
    assert handoffs[0].by == me.agent_id
    detail = json.dumps(handoffs[0].detail)
    assert to_agent in detail
    assert "over to you" in detail
    assert [e.at for e in history] == sorted(e.at for e in history)
    assert all(is_utc(e.at) for e in history)


async def test_status_changes_are_recorded_in_history(view: View) -> None:
    """Every status change adds a ``status`` event to the task's history."""
    me = view()
    task = await me.tasks.create_task("historic")
    await me.tasks.update_task(task.id, status="in_progress")
    await me.tasks.update_task(task.id, status="completed")
    kinds = [event.kind for event in await me.tasks.task_history(task.id)]
    assert kinds[0] == "created"
    assert kinds.count("status") == 2


async def test_stale_fencing_token_is_refused(view: View) -> None:
    """After a write with fence ("n", 5), a write with ("n", 4) raises StaleWriteError and
    changes nothing; the same or a newer token is accepted."""
    me = view()
    task = await me.tasks.create_task("fenced", metadata={"owner": "first"})
    await me.tasks.update_task(task.id, status="in_progress", fence=("n", 5))
    before = await me.tasks.get_task(task.id)
    history_before = await me.tasks.task_history(task.id)
    with pytest.raises(StaleWriteError):
        await me.tasks.update_task(
            task.id, title="stale", status="failed", metadata={"owner": "stale"}, fence=("n", 4)
        )
    assert await me.tasks.get_task(task.id) == before
    assert await me.tasks.task_history(task.id) == history_before
    same = await me.tasks.update_task(task.id, metadata={"beat": 1}, fence=("n", 5))
    assert same.metadata == {"owner": "first", "beat": 1}
    newer = await me.tasks.update_task(task.id, status="completed", fence=("n", 6))
    assert newer.status == "completed"
    with pytest.raises(StaleWriteError):
        await me.tasks.update_task(task.id, title="stale again", fence=("n", 5))
    assert (await me.tasks.get_task(task.id)).title == "fenced"


async def test_fencing_tokens_are_kept_per_agent(view: View) -> None:
    """Rule (every backend): the tokens seen are kept per (agent, name) — an agent's locks count
    their own tokens — so one agent's token never makes another agent's write stale."""
    a, b = view("a"), view("b")
    mine = await a.tasks.create_task("a's fenced task")
    theirs = await b.tasks.create_task("b's fenced task")
    await a.tasks.update_task(mine.id, title="by a", fence=("nightly", 50))
    by_b = await b.tasks.update_task(theirs.id, title="by b", fence=("nightly", 1))
    assert by_b.title == "by b"
    with pytest.raises(StaleWriteError):
        await a.tasks.update_task(mine.id, title="stale a", fence=("nightly", 1))
    with pytest.raises(StaleWriteError):
        await b.tasks.update_task(theirs.id, title="stale b", fence=("nightly", 0))


async def test_a_fence_is_a_name_and_a_64_bit_token(view: View) -> None:
    """Rule (every backend): ``fence`` is a (name, token) pair — a tuple or a list — whose token
    is an integer from 0 to 2**63 - 1; anything else is a ValidationError and writes nothing."""
    me = view()
    task = await me.tasks.create_task("fence shapes")
    calls = {
        repr(fence): lambda fence=fence: me.tasks.update_task(task.id, title="x", fence=fence)
        for fence in (
            ("n", -1), ("n", 2**63), ("n", True), ("n", 1.0), ("n", "1"), ("n",), ("n", 1, 2),
            "n1", ("", 1), (7, 1), ["n"],
        )
    }  # fmt: skip
    assert await not_refused(ValidationError, calls) == []
    assert await me.tasks.get_task(task.id) == task
    as_list = await me.tasks.update_task(task.id, title="list", fence=["n", 2**63 - 1])
    assert as_list.title == "list"
    with pytest.raises(StaleWriteError):
        await me.tasks.update_task(task.id, title="older", fence=("n", 2**63 - 2))


async def test_a_family_fence_refuses_a_stale_token_whichever_agent_saw_the_newer_one(
    view: View,
) -> None:
    """Rule (every backend): a family-scope fence (``Fence(name, token, family=True)``, a
    family-wide lock's) is kept once for the family: after agent B wrote with token 6, agent A's
    write with token 5 is refused and changes nothing, A's token 7 is accepted, and then B's 6
    is refused. The same name in agent scope is a fence of its own."""
    a, b = view("a"), view("b")
    name = f"deploy-{a.agent_id}"  # the store is shared by the module's tests
    mine = await a.tasks.create_task("a's fenced task")
    theirs = await b.tasks.create_task("b's fenced task")
    assert (await b.tasks.update_task(theirs.id, title="by b", fence=Fence(name, 6, True))).title
    with pytest.raises(StaleWriteError):
        await a.tasks.update_task(mine.id, title="stale a", status="failed",
                                  fence=Fence(name, 5, family=True))  # fmt: skip
    assert await a.tasks.get_task(mine.id) == mine
    assert [e.kind for e in await a.tasks.task_history(mine.id)] == ["created"]
    by_a = await a.tasks.update_task(mine.id, title="by a", fence=Fence(name, 7, family=True))
    assert by_a.title == "by a"
    with pytest.raises(StaleWriteError):
        await b.tasks.update_task(theirs.id, title="stale b", fence=Fence(name, 6, family=True))
    assert (await b.tasks.get_task(theirs.id)).title == "by b"
    # Agent scope and family scope of one name count apart.
    assert (await a.tasks.update_task(mine.id, title="own", fence=(name, 1))).title == "own"
    assert (await b.tasks.update_task(theirs.id, title="own", fence=Fence(name, 0))).title == "own"


async def test_a_family_fence_is_kept_by_the_acting_agent_not_the_task(view: View) -> None:
    """A family-scope fence is checked for the write whatever task it changes: an assignee
    writing to another agent's task with a stale family token is refused like the owner."""
    owner, worker = view("owner"), view("worker")
    name = f"shift-{owner.agent_id}"
    task = await owner.tasks.create_task("shared", assignee=worker.agent_id, visibility="family")
    await owner.tasks.update_task(task.id, status="in_progress", fence=Fence(name, 3, True))
    with pytest.raises(StaleWriteError):
        await worker.tasks.update_task(task.id, status="completed", fence=Fence(name, 2, True))
    done = await worker.tasks.update_task(task.id, status="completed", fence=Fence(name, 4, True))
    assert done.status == "completed"


async def test_agent_scope_fences_of_two_agents_are_independent(view: View) -> None:
    """Rule (every backend): ``Fence(name, token)`` (family False) and the pair ``(name,
    token)`` are one scope, the acting agent's: each agent's newest token for a name is its
    own, so agent B's low token is accepted after agent A's high one, and each agent is held to
    its own newest token, whichever form wrote it."""
    a, b = view("a"), view("b")
    mine = await a.tasks.create_task("a's task")
    theirs = await b.tasks.create_task("b's task")
    await a.tasks.update_task(mine.id, title="a at 50", fence=Fence("nightly", 50))
    assert (await b.tasks.update_task(theirs.id, title="b at 2", fence=("nightly", 2))).title
    assert (await b.tasks.update_task(theirs.id, title="b at 3", fence=Fence("nightly", 3))).title
    with pytest.raises(StaleWriteError):
        await a.tasks.update_task(mine.id, title="stale a", fence=("nightly", 49))
    with pytest.raises(StaleWriteError):
        await b.tasks.update_task(theirs.id, title="stale b", fence=Fence("nightly", 2))
    assert (await a.tasks.get_task(mine.id)).title == "a at 50"
    assert (await b.tasks.get_task(theirs.id)).title == "b at 3"


async def test_bad_fence_values_are_refused(view: View) -> None:
    """Rule (every backend): a Fence is built from a name of at most 500 characters, a token
    from 0 to 2**63 - 1 and a boolean ``family`` (ValidationError otherwise, when it is made);
    ``fence=`` takes a Fence or a (name, token) pair and refuses anything else — a three-item
    tuple, a mapping, a bare token or name — writing nothing."""
    me = view()
    task = await me.tasks.create_task("fence values")
    history = await me.tasks.task_history(task.id)

    async def build(*args: object) -> object:
        return Fence(*args)  # type: ignore[arg-type]

    shapes = (
        ("n", -1), ("n", 2**63), ("n", True), ("n", 1.5), ("n", "1"), ("", 1), (" ", 1), (7, 1),
        (None, 1), ("x" * 501, 1), ("a\x00b", 1), ("n", 1, 1), ("n", 1, "yes"), ("n", 1, None),
    )  # fmt: skip
    assert await not_refused(ValidationError, {repr(a): partial(build, *a) for a in shapes}) == []
    calls = {
        repr(fence): lambda fence=fence: me.tasks.update_task(task.id, title="x", fence=fence)
        for fence in (
            ("n", 1, True), ["n", 1, False], {"name": "n", "token": 1}, 1, "n", ("n", None),
            (Fence("n", 1), 2), Fence,
        )
    }  # fmt: skip
    assert await not_refused(ValidationError, calls) == []
    assert await me.tasks.get_task(task.id) == task
    assert await me.tasks.task_history(task.id) == history
    edge = await me.tasks.update_task(task.id, title="edge", fence=Fence("x" * 500, 2**63 - 1))
    assert edge.title == "edge"


async def test_fencing_names_are_independent(view: View) -> None:
    """A token seen for one fence name does not make another name's lower token stale."""
    me = view()
    task = await me.tasks.create_task("two fences")
    await me.tasks.update_task(task.id, title="by n", fence=("n", 100))
    updated = await me.tasks.update_task(task.id, title="by m", fence=("m", 1))
    assert updated.title == "by m"
