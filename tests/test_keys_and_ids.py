"""Agent ids, names, UUIDv7 and the key layout."""

from __future__ import annotations

import time
import uuid

import pytest

from agentbus import InvalidAgentIdError, InvalidNameError, Keys, uuid7, validate_agent_id
from agentbus._ids import validate_name


@pytest.mark.parametrize("agent", ["a", "planner", "agent-7", "x_y.z", "0" * 64])
def test_valid_agent_ids(agent: str) -> None:
    assert validate_agent_id(agent) == agent


BAD_IDS = ["", "A", "Planner", "a b", "a{b}", "a:b", "é", "0" * 65, None, 7]


@pytest.mark.parametrize("agent", BAD_IDS)
def test_invalid_agent_ids_name_the_rule(agent: object) -> None:
    """A bad id is a ValueError whose message states the rule."""
    with pytest.raises(InvalidAgentIdError, match="lower-case letters") as caught:
        validate_agent_id(agent)
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize("name", ["", "a b", "x*", "{x}", "n" * 129])
def test_invalid_names(name: str) -> None:
    with pytest.raises(InvalidNameError, match="lock"):
        validate_name("lock", name)


def test_uuid7_is_version_7_and_time_ordered() -> None:
    """Ids parse as RFC 9562 version 7 and sort by creation time."""
    ids = []
    for _ in range(5):
        ids.append(uuid7())
        time.sleep(0.002)
    parsed = [uuid.UUID(i) for i in ids]
    assert all(u.version == 7 and u.variant == uuid.RFC_4122 for u in parsed)
    assert ids == sorted(ids)
    millis = parsed[-1].int >> 80
    assert abs(millis - time.time() * 1000) < 5_000
    assert len({uuid7() for _ in range(10_000)}) == 10_000


def test_keys_share_one_hash_tag_per_agent() -> None:
    """Every per-agent key carries {agent} so one agent's keys live in one cluster slot."""
    keys = Keys("ns")
    per_agent = [
        keys.mailbox("a"), keys.dead_letters("a"), keys.delayed("a"), keys.state("a"),
        keys.lease("a", "i1"), keys.reply("a", "i1"), keys.lock("a", "n"), keys.fence("a", "n"),
        keys.dedup("a", "k"), keys.effect("a", "k"), keys.instances("a"),
    ]  # fmt: skip
    assert all(key.startswith("ns:{a}:") for key in per_agent)
    assert len(set(per_agent)) == len(per_agent)
    assert keys.registry == "ns:registry"
    with pytest.raises(InvalidAgentIdError):
        keys.mailbox("Bad Agent")
