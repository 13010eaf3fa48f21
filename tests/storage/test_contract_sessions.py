"""Session capture: observations (events of a session, keyword-searchable, per agent) and model
feedback (a record per model answer, the agent's self-evaluation, a user rating set once)."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import anyio
import pytest

from agentbus import uuid7
from agentbus.storage._errors import NotFoundError, ValidationError
from agentbus.storage._models import MAX_ID_CHARS, MAX_SUMMARY_CHARS, RatingResult

from ._stores import store
from ._support import is_utc, is_uuid7, not_refused

pytestmark = pytest.mark.anyio

View = Callable[..., Any]


def obs(view: Any) -> Any:
    return store(view, "observations")


def fb(view: Any) -> Any:
    return store(view, "feedback")


def session() -> str:
    return f"session-{secrets.token_hex(4)}"


def word() -> str:
    """A made-up word no other test uses (letters only: it stems alike on both backends)."""
    return "zq" + "".join(chr(ord("a") + int(c, 16)) for c in secrets.token_hex(4))


# --- observations -------------------------------------------------------------------------------


async def test_an_observation_records_its_fields(view: View) -> None:
    """record() stores session, kind, summary, detail, tool and the given timestamps (UTC,
    microseconds kept), under the calling agent, with a UUIDv7 id."""
    me = view()
    sid = session()
    started = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    ended = started + timedelta(seconds=3, microseconds=7)
    recorded = await obs(me).record(
        sid, "tool_call", "ran the test suite", detail={"exit": 0, "args": ["-q"]},
        tool="pytest", started_at=started, ended_at=ended,
    )  # fmt: skip
    assert is_uuid7(recorded.id)
    assert (recorded.agent_id, recorded.session_id, recorded.kind) == (
        me.agent_id,
        sid,
        "tool_call",
    )
    assert recorded.summary == "ran the test suite"
    assert recorded.detail == {"args": ["-q"], "exit": 0}
    assert recorded.tool == "pytest"
    assert recorded.started_at == started
    assert is_utc(recorded.started_at)
    assert recorded.ended_at == ended
    assert is_utc(recorded.ended_at)
    assert is_utc(recorded.created_at)
    assert await obs(me).list_observations(session_id=sid) == [recorded]


async def test_an_observation_defaults_to_now_and_no_detail(view: View) -> None:
    """Without timestamps an observation starts now and has not ended; detail defaults to {}
    and tool to None."""
    me = view()
    before = datetime.now(UTC)
    recorded = await obs(me).record(session(), "note", "a plain note")
    after = datetime.now(UTC)
    assert before - timedelta(seconds=1) <= recorded.started_at <= after + timedelta(seconds=1)
    assert recorded.ended_at is None
    assert recorded.detail == {}
    assert recorded.tool is None


async def test_invalid_observations_are_refused(view: View) -> None:
    """An empty summary, session id or kind, a naive timestamp or non-JSON detail is a
    ValidationError, and nothing is recorded."""
    me = view()
    sid = session()
    o = obs(me)
    naive = datetime(2025, 1, 1, 12, 0)
    problems = await not_refused(
        ValidationError,
        {
            "empty summary": lambda: o.record(sid, "note", "   "),
            "empty session": lambda: o.record("", "note", "text"),
            "empty kind": lambda: o.record(sid, "", "text"),
            "NUL summary": lambda: o.record(sid, "note", "a\x00b"),
            "naive start": lambda: o.record(sid, "note", "text", started_at=naive),
            "naive end": lambda: o.record(sid, "note", "text", ended_at=naive),
            "NaN detail": lambda: o.record(sid, "note", "text", detail={"x": float("nan")}),
        },
    )
    assert problems == []
    assert await o.list_observations(session_id=sid) == []


async def test_a_filter_that_record_refuses_is_refused(view: View) -> None:
    """list_observations, latest and list_feedback check their filters like record() checks
    the values (empty, NUL): a ValidationError, never an empty answer on one backend and an
    error on the other."""
    me = view()
    o, f = obs(me), fb(me)
    for bad in ("", "  ", "a\x00b"):
        problems = await not_refused(
            ValidationError,
            {
                "observations by session": lambda bad=bad: o.list_observations(session_id=bad),
                "observations by kind": lambda bad=bad: o.list_observations(kind=bad),
                "latest feedback": lambda bad=bad: f.latest(bad),
                "feedback by model": lambda bad=bad: f.list_feedback(model=bad),
            },
        )
        assert problems == [], repr(bad)


async def test_observations_are_listed_newest_first_and_filtered(view: View) -> None:
    """list_observations is newest first, filters by session and kind, and honours limit."""
    me = view()
    one, two = session(), session()
    made = [
        await obs(me).record(sid, kind, f"event {i}")
        for i, (sid, kind) in enumerate(
            [(one, "prompt"), (one, "tool_call"), (two, "prompt"), (one, "tool_call")]
        )
    ]
    newest_first = [o.id for o in reversed(made)]
    listed = [o.id for o in await obs(me).list_observations(limit=1000)]
    assert [i for i in listed if i in set(newest_first)] == newest_first
    assert [o.id for o in await obs(me).list_observations(session_id=one)] == [
        made[3].id, made[1].id, made[0].id,
    ]  # fmt: skip
    assert [o.id for o in await obs(me).list_observations(kind="prompt", session_id=two)] == [
        made[2].id
    ]
    assert [o.id for o in await obs(me).list_observations(session_id=one, kind="tool_call")] == [
        made[3].id, made[1].id,
    ]  # fmt: skip
    assert [o.id for o in await obs(me).list_observations(session_id=one, limit=1)] == [made[3].id]


async def test_observation_search_requires_every_term(view: View) -> None:
    """Search matches summaries containing every query term (after stemming): a row with only
    some of the terms is not returned."""
    me = view()
    deploy, staging = word(), word()
    both = await obs(me).record(session(), "note", f"{deploy} failed on {staging} twice")
    also = await obs(me).record(session(), "note", f"{staging} then {deploy} again")
    await obs(me).record(session(), "note", f"{deploy} succeeded")
    await obs(me).record(session(), "note", f"{staging} cache cleared")
    found = await obs(me).search(f"{deploy} {staging}")
    assert {o.id for o in found} == {both.id, also.id}
    assert len(await obs(me).search(deploy)) == 3
    assert await obs(me).search(f"{deploy} {staging} {word()}") == []


async def test_observation_search_stems_like_memory_search(view: View) -> None:
    """Search terms match other forms of the same stem (deploys / deployed / deploying)."""
    me = view()
    target = await obs(me).record(session(), "note", f"{word()} deployed the harbors build")
    for query in ("deploy harbor", "deploying harbors", "deploys"):
        assert target.id in {o.id for o in await obs(me).search(query, limit=50)}, query


async def test_observation_search_breaks_ties_by_id(view: View) -> None:
    """Observations that match equally well (the same summary) come back by id, ascending —
    the tie rule of every search."""
    me = view()
    term = word()
    made = [await obs(me).record(session(), "note", f"{term} the same words") for _ in range(4)]
    assert [o.id for o in await obs(me).search(term)] == sorted(o.id for o in made)


async def test_observation_search_honours_the_limit(view: View) -> None:
    """search returns at most ``limit`` observations."""
    me = view()
    term = word()
    for i in range(5):
        await obs(me).record(session(), "note", f"{term} number {i}")
    assert len(await obs(me).search(term, limit=3)) == 3
    assert len(await obs(me).search(term)) == 5


async def test_observations_belong_to_their_agent(view: View) -> None:
    """Another agent, even one using the same session id, neither lists nor finds an agent's
    observations."""
    a, b = view("a"), view("b")
    sid, term = session(), word()
    mine = await obs(a).record(sid, "note", f"{term} private observation")
    await obs(b).record(sid, "note", "b's own note")
    assert mine.id not in {o.id for o in await obs(b).list_observations(session_id=sid)}
    assert mine.id not in {o.id for o in await obs(b).list_observations(limit=1000)}
    assert await obs(b).search(term) == []
    assert [o.id for o in await obs(a).search(term)] == [mine.id]
    assert len(await obs(b).list_observations(session_id=sid)) == 1


# --- model feedback -----------------------------------------------------------------------------


async def test_feedback_records_its_fields(view: View) -> None:
    """record() stores session, model, task, self-evaluation and metadata; rating, comment and
    rated_at start empty."""
    me = view()
    sid = session()
    made = await fb(me).record(
        sid, "claude-sonnet", task="summarise", self_evaluation=0.75, metadata={"tokens": 812}
    )
    assert is_uuid7(made.id)
    assert (made.agent_id, made.session_id, made.model, made.task) == (
        me.agent_id, sid, "claude-sonnet", "summarise",
    )  # fmt: skip
    assert made.self_evaluation == pytest.approx(0.75)
    assert made.metadata == {"tokens": 812}
    assert (made.rating, made.comment, made.rated_at) == (None, None, None)
    assert is_utc(made.created_at)
    assert await fb(me).latest(sid) == made


async def test_invalid_feedback_is_refused(view: View) -> None:
    """A self-evaluation outside 0..1, an empty session or model, or non-JSON metadata is a
    ValidationError."""
    me = view()
    f = fb(me)
    problems = await not_refused(
        ValidationError,
        {
            "self-evaluation > 1": lambda: f.record(session(), "m", self_evaluation=1.5),
            "self-evaluation < 0": lambda: f.record(session(), "m", self_evaluation=-0.1),
            "self-evaluation NaN": lambda: f.record(session(), "m", self_evaluation=float("nan")),
            "empty model": lambda: f.record(session(), ""),
            "empty session": lambda: f.record("", "m"),
            "metadata NaN": lambda: f.record(session(), "m", metadata={"x": float("inf")}),
            "long task": lambda: f.record(session(), "m", task="t" * (MAX_SUMMARY_CHARS + 1)),
        },
    )
    assert problems == []
    made = await f.record(session(), "m")
    problems = await not_refused(
        ValidationError,
        {
            "long comment": lambda: f.rate(made.id, 4, comment="c" * (MAX_SUMMARY_CHARS + 1)),
            "empty id": lambda: f.rate("", 4),
            "long id": lambda: f.rate("x" * (MAX_ID_CHARS + 1), 4),
        },
    )
    assert problems == []
    assert (await f.latest(made.session_id)).rating is None


async def test_a_rating_is_set_once_and_a_second_call_says_so(view: View) -> None:
    """The first rate() applies (applied=True: rating, comment and rated_at set); a second call,
    with another rating and comment, changes nothing and returns applied=False with the
    record as it was after the first."""
    me = view()
    made = await fb(me).record(session(), "claude-sonnet")
    first = await fb(me).rate(made.id, 4, comment="good answer")
    assert isinstance(first, RatingResult)
    assert first.applied is True
    assert (first.feedback.rating, first.feedback.comment) == (4, "good answer")
    assert is_utc(first.feedback.rated_at)
    second = await fb(me).rate(made.id, 1, comment="changed my mind")
    assert second.applied is False
    assert second.feedback == first.feedback
    assert await fb(me).latest(made.session_id) == first.feedback
    third = await fb(me).rate(made.id, 4, comment="good answer")  # the same rating again
    assert third.applied is False
    assert third.feedback == first.feedback


async def test_concurrent_ratings_apply_exactly_once(view: View) -> None:
    """Ten concurrent rate() calls on one record: exactly one applies, and the stored rating is
    that call's."""
    me = view()
    made = await fb(me).record(session(), "claude-sonnet")
    results: dict[int, RatingResult] = {}

    async def rate(rating: int) -> None:
        results[rating] = await fb(me).rate(made.id, 1 + rating % 5, comment=f"call {rating}")

    async with anyio.create_task_group() as tg:
        for i in range(10):
            tg.start_soon(rate, i)
    applied = [i for i, result in results.items() if result.applied]
    assert len(applied) == 1, applied
    stored = await fb(me).latest(made.session_id)
    assert stored is not None
    assert (stored.rating, stored.comment) == (1 + applied[0] % 5, f"call {applied[0]}")


async def test_an_invalid_rating_is_refused_and_does_not_use_up_the_rating(view: View) -> None:
    """Ratings are integers 1..5: 0, 6, 2.5 and True are ValidationErrors, and the record can
    still be rated afterwards."""
    me = view()
    made = await fb(me).record(session(), "claude-sonnet")
    f = fb(me)
    problems = await not_refused(
        ValidationError,
        {f"rating {r!r}": lambda r=r: f.rate(made.id, r) for r in (0, 6, -1, 2.5, True)},
    )
    assert problems == []
    assert (await f.rate(made.id, 5)).applied is True


async def test_feedback_of_another_agent_cannot_be_rated(view: View) -> None:
    """Rating another agent's record, or one that does not exist, raises NotFoundError and
    leaves the record unrated; another agent's latest() does not return it."""
    a, b = view("a"), view("b")
    made = await fb(a).record(session(), "claude-sonnet")
    calls = {
        "other agent's": lambda: fb(b).rate(made.id, 5),
        "missing": lambda: fb(b).rate(uuid7(), 5),
    }
    assert await not_refused(NotFoundError, calls) == []
    assert await fb(b).latest(made.session_id) is None
    assert made.id not in {f.id for f in await fb(b).list_feedback(limit=1000)}
    assert (await fb(a).latest(made.session_id)).rating is None


async def test_latest_returns_the_newest_record_of_a_session(view: View) -> None:
    """latest(session) is the session's newest record; None for a session without records."""
    me = view()
    sid = session()
    await fb(me).record(sid, "model-a")
    await fb(me).record(session(), "model-b")  # another session
    newest = await fb(me).record(sid, "model-c")
    assert (await fb(me).latest(sid)).id == newest.id
    assert await fb(me).latest(session()) is None


async def test_feedback_is_listed_newest_first_and_by_model(view: View) -> None:
    """list_feedback is newest first, filters by model and honours limit."""
    me = view()
    made = [await fb(me).record(session(), model) for model in ("m-a", "m-b", "m-a", "m-c")]
    listed = [f.id for f in await fb(me).list_feedback(limit=1000)]
    assert listed == [f.id for f in reversed(made)]
    assert [f.id for f in await fb(me).list_feedback(model="m-a")] == [made[2].id, made[0].id]
    assert [f.id for f in await fb(me).list_feedback(limit=2)] == [made[3].id, made[2].id]


# --- get_stats ----------------------------------------------------------------------------------


async def test_get_stats_counts_observations_and_feedback(view: View) -> None:
    """get_stats() counts the agent's observations and their distinct sessions, its feedback
    records and the rated ones (a refused second rating counts once); a fresh agent has zeros
    and another agent's rows never count."""
    me, other = view("me"), view("other")
    fields = ("observations", "observation_sessions", "model_feedback", "rated_model_feedback")

    def counts(stats: Any) -> tuple[int, ...]:
        return tuple(getattr(stats, name) for name in fields)

    assert counts(await me.memory.get_stats()) == (0, 0, 0, 0)
    one, two = session(), session()
    for sid in (one, one, two):
        await obs(me).record(sid, "note", "counted")
    await obs(other).record(one, "note", "not counted")
    made = [await fb(me).record(sid, "m") for sid in (one, two, two)]
    await fb(other).record(one, "m")
    await fb(me).rate(made[0].id, 5)
    await fb(me).rate(made[0].id, 1)  # refused: rated once
    await fb(me).rate(made[2].id, 3)
    assert counts(await me.memory.get_stats()) == (3, 2, 3, 2)
    assert counts(await other.memory.get_stats()) == (1, 1, 1, 0)
