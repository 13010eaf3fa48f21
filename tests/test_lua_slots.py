"""Every Lua script and MULTI transaction of the bus touches keys of one Redis Cluster slot.

The slot rule (Redis Cluster specification, "Keys distribution model"): HASH_SLOT =
CRC16(key) mod 16384, where CRC16 is CRC-16/XMODEM (polynomial 0x1021, initial value 0), and when
the key contains a ``{`` followed later by a ``}`` with at least one character between them, only
the characters between the first ``{`` and the first ``}`` after it are hashed.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis.asyncio.client as redis_client
from bus_support import bus_config, wait_until

import agentbus
from agentbus import AgentBus, Keys, Message
from agentbus.streams._consumer import ConsumerSettings, MailboxConsumer
from agentbus.streams._scripts import SCRIPT_NAMES
from agentbus.testing import RedisServer

SLOTS = 16384

LUA_FILES = sorted(Path(agentbus.__file__).parent.rglob("*.lua"))
"""Every Lua script in the package (the streams' and any other module's)."""


def crc16_xmodem(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def hash_tag(key: bytes) -> bytes:
    """The part of ``key`` that decides its slot."""
    start = key.find(b"{")
    if start != -1:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            return key[start + 1 : end]
    return key


def key_slot(key: str | bytes) -> int:
    raw = key.encode() if isinstance(key, str) else key
    return crc16_xmodem(hash_tag(raw)) % SLOTS


def slots(keys: list[str] | list[str | bytes]) -> set[int]:
    return {key_slot(key) for key in keys}


# ---- the slot rule itself ----------------------------------------------------------------


def test_crc16_matches_the_xmodem_check_value() -> None:
    """CRC-16/XMODEM of "123456789" is 0x31C3 (the catalogue check value), slot 12739."""
    assert crc16_xmodem(b"123456789") == 0x31C3
    assert crc16_xmodem(b"") == 0
    assert key_slot("123456789") == 12739


@pytest.mark.parametrize(
    ("key", "hashed"),
    [
        ("{user1000}.following", b"user1000"),
        ("foo{}{bar}", b"foo{}{bar}"),  # empty first tag: the whole key
        ("foo{{bar}}zap", b"{bar"),  # from the first "{" to the first "}" after it
        ("foo{bar}{zap}", b"bar"),  # only the first tag counts
        ("no-tag", b"no-tag"),
        ("open{only", b"open{only"),
        ("}{x}", b"x"),
    ],
)
def test_hash_tag_rule(key: str, hashed: bytes) -> None:
    """The hash tag is the text between the first "{" and the next "}", when not empty."""
    assert hash_tag(key.encode()) == hashed


def test_keys_with_one_hash_tag_share_a_slot() -> None:
    """Keys with the same hash tag share a slot (the specification's own example)."""
    assert key_slot("{user1000}.following") == key_slot("{user1000}.followers")
    assert key_slot("{user1000}.following") == key_slot("user1000")
    assert key_slot("foo{}{bar}") != key_slot("bar")


# ---- the keys the bus uses ---------------------------------------------------------------

AGENTS = ["planner", "a", "agent-7.worker_2", "0", "x" * 64]


def agent_keys(keys: Keys, agent: str) -> list[str]:
    return [
        keys.mailbox(agent),
        keys.dead_letters(agent),
        keys.delayed(agent),
        keys.dedup(agent, "k-1"),
        keys.effect(agent, "effect:{weird}"),
        keys.state(agent),
        keys.lease(agent, "inst1"),
        keys.instances(agent),
        keys.reply(agent, "inst1"),
        keys.lock(agent, "nightly"),
        keys.fence(agent, "nightly"),
        keys.fenced(agent, "nightly"),
        keys.locks(agent),
        keys.heartbeat(agent, "nightly"),
        keys.running(agent, "nightly"),
    ]


@pytest.mark.parametrize("agent", AGENTS)
def test_all_keys_of_one_agent_share_its_slot(agent: str) -> None:
    """Every per-agent key hashes to the slot of the agent id, whatever comes after the tag."""
    keys = Keys("ns")
    assert slots(agent_keys(keys, agent)) == {key_slot(agent)}


def test_presence_keys_share_one_slot() -> None:
    """The family-wide presence keys share one slot of their own."""
    keys = Keys("ns")
    presence = [
        keys.presence_index, keys.presence_info, keys.presence_version, keys.presence_sweep,
    ]  # fmt: skip
    assert slots(presence) == {key_slot("~presence")}


def static_script_keys(agent: str) -> dict[str, list[str]]:
    """The KEYS each script gets, taken from the objects the bus builds them with."""
    keys = Keys("ns")
    consumer = MailboxConsumer(
        Any, keys, Any, agent=agent, instance="inst1",
        settings=ConsumerSettings(max_deliveries=3, lease_ttl=2, dedup_ttl=60),
    )  # fmt: skip
    return {
        "send_idempotent": [keys.dedup(agent, "order-17"), consumer.mailbox],
        "send_batch": [consumer.mailbox],
        "reply": [keys.reply(agent, "inst1")],
        "promote_due": [consumer.delayed, consumer.mailbox],
        "trim": [consumer.mailbox],
        "multi: dead letter": [consumer.dead_letter_stream, consumer.mailbox],
        "multi: retry": [consumer.delayed, consumer.mailbox],
    }


@pytest.mark.parametrize("agent", AGENTS)
def test_script_keys_share_one_slot(agent: str) -> None:
    """Each script's and transaction's keys for one agent live in one slot."""
    found = static_script_keys(agent)
    assert set(SCRIPT_NAMES) <= set(found)
    for name, keys in found.items():
        assert slots(keys) == {key_slot(agent)}, name


# ---- what the bus really sends -----------------------------------------------------------

# Where the key is in each command a bus transaction may contain (args[0] is the command).
KEY_POSITIONS = {"XADD": 1, "XACK": 1, "ZADD": 1, "XDEL": 1, "XTRIM": 1, "DEL": 1, "SET": 1}


@dataclass
class Recorded:
    scripts: list[tuple[str, list[bytes | str]]]
    transactions: list[list[tuple[str, str | bytes]]]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@asynccontextmanager
async def recording(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Recorded]:
    """Record every EVALSHA (script name, KEYS) and every MULTI (command, key) the process sends."""
    names = {hashlib.sha1(path.read_bytes()).hexdigest(): path.stem for path in LUA_FILES}
    record = Recorded([], [])

    def note_script(args: tuple[Any, ...]) -> None:
        if _text(args[0]).upper() in ("EVALSHA", "EVAL"):
            numkeys = int(args[2])
            name = names.get(_text(args[1]), f"unknown script {_text(args[1])}")
            record.scripts.append((name, list(args[3 : 3 + numkeys])))

    real_execute_command = redis_client.Redis.execute_command
    real_pipeline_execute = redis_client.Pipeline.execute

    async def execute_command(self: Any, *args: Any, **options: Any) -> Any:
        note_script(args)
        return await real_execute_command(self, *args, **options)

    async def pipeline_execute(self: Any, raise_on_error: bool = True) -> Any:
        stack = [args for args, _ in self.command_stack]
        for args in stack:
            note_script(args)
        if self.is_transaction or self.explicit_transaction:
            record.transactions.append(
                [(_text(args[0]).upper(), args[KEY_POSITIONS.get(_text(args[0]).upper(), 1)])
                 for args in stack]
            )  # fmt: skip
        return await real_pipeline_execute(self, raise_on_error)

    monkeypatch.setattr(redis_client.Redis, "execute_command", execute_command)
    monkeypatch.setattr(redis_client.Pipeline, "execute", pipeline_execute)
    yield record


@pytest.mark.anyio
async def test_scripts_and_transactions_the_bus_runs_stay_in_one_slot(
    redis_server: RedisServer, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Driving the bus through sends, retries, dead letters, replay and trim, every script call
    and every MULTI it issues touches keys of a single slot."""
    config = bus_config(redis_server, namespace, maxDeliveries=2)
    async with (
        recording(monkeypatch) as record,
        AgentBus("w.1", config=config, retry_base=0.05) as bus,
    ):
        healed = False
        handled: list[str] = []

        @bus.handler("job")
        async def job(message: Message) -> None:
            if not healed:
                raise RuntimeError("not yet")
            handled.append(message.id)

        @bus.handler("ask")
        async def ask(message: Message) -> int:
            return 42

        await bus.redis.xadd(bus.keys.mailbox("w.1"), {"foo": "bar"})  # -> decode dead letter
        mid = await bus.send("w.1", "job", 1, idempotency_key="once")
        await bus.send("w.1", "job", 1, idempotency_key="once")
        async with anyio.create_task_group() as tg:
            tg.start_soon(bus.serve)
            await bus.send_many([("w.1", "ask", i) for i in range(3)])  # plain messages
            assert (await bus.request("w.1", "ask", timeout=5)).data == 42

            async def two_dead_letters() -> bool:
                return len(await bus.dead_letters()) == 2

            await wait_until(two_dead_letters, what="the decode and the error dead letters")
            healed = True
            assert await bus.replay_dead_letter(mid)

            async def replayed() -> bool:
                return handled == [mid]

            await wait_until(replayed, what="the replayed message to be handled")
            tg.cancel_scope.cancel()
        await bus.trim_mailbox()

    script_names = {name for name, _ in record.scripts}
    assert set(SCRIPT_NAMES) <= script_names, record.scripts
    assert not [name for name in script_names if name.startswith("unknown")], record.scripts
    for name, keys in record.scripts:
        assert keys, f"{name} was called without KEYS"
        assert len(slots(keys)) == 1, (name, keys)
        if name in SCRIPT_NAMES:
            assert slots(keys) == {key_slot("w.1")}, (name, keys)

    shapes = {tuple(command for command, _ in multi) for multi in record.transactions}
    assert ("ZADD", "XACK") in shapes  # a retry
    assert ("XADD", "XACK") in shapes  # a dead letter
    assert ("XADD", "XDEL") in shapes  # a replay
    for multi in record.transactions:
        commands = [command for command, _ in multi]
        assert set(commands) <= set(KEY_POSITIONS), f"add {commands} to KEY_POSITIONS"
        assert len(slots([key for _, key in multi])) == 1, multi
