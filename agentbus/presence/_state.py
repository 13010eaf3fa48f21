"""Agent state: what an agent says it is doing, merged field by field, with liveness from leases.

The state hash holds JSON-encoded fields plus ``updated_at``. Status is what the agent last set
(default ``idle``) while any of its instances holds a lease, and ``offline`` once the last lease
is gone — so a dead agent never shows ``busy`` forever, whatever its hash still says.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import msgspec
import redis.asyncio as aioredis

from .._errors import EncodeError
from .._ids import validate_agent_id, validate_name
from .._keys import Keys
from ..streams._events import Event
from ..streams._narrow import text
from ..streams._redis import map_redis_errors

STATE_TOPIC = "agent.state"
"""Topic of the event published on every state change (``bus.subscribe("agent.state")``)."""

_UPDATED_AT = "updated_at"
_json = msgspec.json.Encoder()


class AgentState(msgspec.Struct, frozen=True, kw_only=True):
    agent: str
    status: str
    fields: dict[str, Any]
    updated_at: float | None
    online: bool


def encode_fields(fields: Mapping[str, Any]) -> dict[Any, Any]:
    """JSON-encode each field, refusing what JSON cannot hold and the reserved ``updated_at``.

    Raises:
        InvalidNameError: a bad field name. EncodeError: a value JSON cannot encode.
    """
    if not fields:
        raise ValueError("set_state() needs at least one field, e.g. status='busy'")
    encoded: dict[Any, Any] = {}
    for name, value in fields.items():
        validate_name("state field", name)
        if name == _UPDATED_AT:
            raise ValueError("'updated_at' is set by agentbus; choose another field name")
        try:
            encoded[name] = _json.encode(value)
        except (TypeError, msgspec.EncodeError) as exc:
            raise EncodeError(
                f"state field {name!r} cannot be stored: {exc}; use JSON types "
                "(str, int, float, bool, None, lists and dicts of them)"
            ) from exc
    return encoded


async def set_state(
    client: aioredis.Redis, keys: Keys, agent: str, fields: Mapping[str, Any]
) -> float:
    """Merge ``fields`` into ``agent``'s state and publish a state event; returns updated_at."""
    validate_agent_id(agent)
    encoded = encode_fields(fields)
    updated_at = time.time()
    event = Event(
        topic=STATE_TOPIC, sender=agent, time=updated_at,
        data=msgspec.Raw(msgspec.msgpack.encode({"agent": agent, "fields": dict(fields),
                                                 "updated_at": updated_at})),
    )  # fmt: skip
    with map_redis_errors("setting agent state"):
        async with client.pipeline(transaction=False) as pipe:
            encoded[_UPDATED_AT] = repr(updated_at)
            pipe.hset(keys.state(agent), mapping=encoded)
            pipe.publish(keys.events(STATE_TOPIC), msgspec.msgpack.encode(event))
            await pipe.execute()
    return updated_at


def decode_state(agent: str, raw: Mapping[Any, Any], online: bool) -> AgentState:
    fields: dict[str, Any] = {}
    updated_at = None
    for raw_name, raw_value in raw.items():
        name = text(raw_name)
        if name == _UPDATED_AT:
            updated_at = float(text(raw_value))
        else:
            fields[name] = msgspec.json.decode(raw_value)
    status = str(fields.get("status", "idle")) if online else "offline"
    return AgentState(
        agent=agent, status=status, fields=fields, updated_at=updated_at, online=online
    )


async def get_state(client: aioredis.Redis, keys: Keys, agent: str) -> AgentState:
    """The agent's state and whether it is online, in one round trip."""
    validate_agent_id(agent)
    with map_redis_errors("reading agent state"):
        async with client.pipeline(transaction=True) as pipe:
            pipe.hgetall(keys.state(agent))
            pipe.zcount(keys.instances(agent), int(time.time() * 1000), "+inf")
            raw, live = await pipe.execute()
    return decode_state(agent, raw, int(live) > 0)
