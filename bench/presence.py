"""Presence reads and lock throughput against hand-written redis-py baselines in the same run.

    python bench/presence.py [--runs 5] [--quick] [--show-baseline]

- ``online()`` at 1k and 10k agents vs one pipelined round trip (ZRANGEBYSCORE + HGETALL + GET in
  MULTI/EXEC, the same consistency) decoded into the same structs.
- ``snapshot()`` of 1k agents vs the same reads written by hand: the registry and family-wide
  keys, then one pipeline of per-agent reads (two round trips: the agent ids come from the
  registry), decoded into the same structs.
- Lock acquire+release pairs/s: ``async with bus.lock(name, ttl=10)`` (fencing token, dashboard
  index entry, renewal by the bus's lock keeper, cancellable body, shielded release) vs
  redis-py's ``redis.asyncio.lock.Lock`` (``client.lock(name, timeout=10)``: SET NX PX, Lua
  release) on the bus's client and on a client with redis-py's defaults; the target is judged
  against the faster of the two in each run. agentbus runs its lock scripts on a connection it
  keeps for them (``DirectLine``); redis-py's ``Lock`` goes through ``execute_command``.

The agents are written the way the package writes them (the lease pipeline with the
``presence_touch`` script, ``RegistryEntry``, ``set_state``'s fields, the ``lock_acquire`` script,
``HeartbeatRun`` records, mailbox streams with a consumer group) on a private redis-server.
Within every run the contenders take turns call by call (the order flipping every turn), so the
machine's changing load hits both alike; each figure is the median over runs, and a ratio is the
median of the per-run ratios.
"""

from __future__ import annotations

import argparse
import gc
import inspect
import statistics
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import anyio
import msgspec
import redis.asyncio
from _common import machine_header, median_or_nan, target_line

from agentbus import AgentBus, Keys, load_config
from agentbus._keys import CONSUMER_GROUP, FAMILY
from agentbus.presence import (
    AgentPresence,
    AgentSnapshot,
    AgentState,
    FamilySnapshot,
    HeartbeatRun,
    InstanceInfo,
    LockInfo,
    MailboxCounts,
    PresenceSnapshot,
    online,
    snapshot,
)
from agentbus.presence._lease import RegistryEntry
from agentbus.presence._presence import PresenceScripts, touch_args
from agentbus.presence._state import encode_fields
from agentbus.streams._scripts import load_script
from agentbus.testing import RedisServer, unique_namespace

LEASE_TTL = 3600.0  # nothing expires while the benchmark runs
CHUNK = 1000

# ===== the hand-written baselines: this exact code is what the ratios are measured against =====

_info_decoder = msgspec.json.Decoder(InstanceInfo)
_lock_decoder = msgspec.json.Decoder(dict[str, Any])
_run_decoder = msgspec.json.Decoder(HeartbeatRun)
_json_decoder = msgspec.json.Decoder()


async def baseline_online(client: redis.asyncio.Redis, keys: Keys) -> PresenceSnapshot:
    now_ms = int(time.time() * 1000)
    async with client.pipeline(transaction=True) as pipe:
        pipe.zrangebyscore(keys.presence_index, now_ms, "+inf")
        pipe.hgetall(keys.presence_info)
        pipe.get(keys.presence_version)
        alive, infos, version = await pipe.execute()
    by_agent: dict[str, list[InstanceInfo]] = {}
    for member in alive:
        info = _info_decoder.decode(infos[member])
        by_agent.setdefault(info.agent, []).append(info)
    return PresenceSnapshot(
        version=int(version or 0),
        agents={
            agent: AgentPresence(
                agent=agent, instances=insts, since=min(i.since for i in insts),
                last_seen=max(i.last_seen for i in insts),
            )
            for agent, insts in sorted(by_agent.items())
        },
    )  # fmt: skip


def _baseline_locks(names: list[tuple[str, int]], values: list[Any]) -> list[LockInfo]:
    held = []
    for (name, token), value in zip(names, values, strict=True):
        if value:
            entry = _lock_decoder.decode(value[32:])  # after the holder's 32-digit token
            held.append(LockInfo(
                name=name, holder=entry["holder"], fencing_token=token,
                acquired_at=entry["acquired_at"] / 1000, expires_at=entry["expires_at"] / 1000,
            ))  # fmt: skip
    return held


async def baseline_snapshot(client: redis.asyncio.Redis, keys: Keys) -> FamilySnapshot:
    now = time.time()
    now_ms = now * 1000
    async with client.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.registry)
        pipe.zrangebyscore(keys.presence_index, int(now_ms), "+inf")
        pipe.hgetall(keys.presence_info)
        pipe.get(keys.presence_version)
        pipe.hgetall(keys.locks(FAMILY))
        pipe.hgetall(keys.heartbeats(FAMILY))
        registry, alive, infos, version, family_locks, family_beats = await pipe.execute()
    names = sorted(name.decode() for name in registry)
    async with client.pipeline(transaction=False) as pipe:
        for agent in names:
            pipe.hgetall(keys.state(agent))
            pipe.xinfo_groups(keys.mailbox(agent))
            pipe.xlen(keys.mailbox(agent))
            pipe.zcard(keys.delayed(agent))
            pipe.xlen(keys.dead_letters(agent))
            pipe.hgetall(keys.locks(agent))
            pipe.hgetall(keys.heartbeats(agent))
        replies = await pipe.execute(raise_on_error=False)
    lock_names = {FAMILY: sorted((n.decode(), int(t)) for n, t in family_locks.items())}
    for i, agent in enumerate(names):
        lock_names[agent] = sorted((n.decode(), int(t)) for n, t in replies[i * 7 + 5].items())
    async with client.pipeline(transaction=False) as pipe:
        for scope, scope_names in lock_names.items():
            for name, _ in scope_names:
                pipe.get(keys.lock(scope, name))
        values = await pipe.execute()
    held, offset = {}, 0
    for scope, scope_names in lock_names.items():
        held[scope] = _baseline_locks(scope_names, values[offset : offset + len(scope_names)])
        offset += len(scope_names)
    presence: dict[str, list[InstanceInfo]] = {}
    for member in alive:
        info = _info_decoder.decode(infos[member])
        presence.setdefault(info.agent, []).append(info)
    agents = []
    for i, agent in enumerate(names):
        state, groups, length, delayed, dead, _, beats = replies[i * 7 : i * 7 + 7]
        instances = presence.get(agent)
        fields = {k.decode(): _json_decoder.decode(v) for k, v in state.items()}
        updated_at = fields.pop("updated_at", None)
        pending, depth = 0, int(length)
        if not isinstance(groups, Exception):
            for group in groups:
                if group["name"] == CONSUMER_GROUP.encode():
                    pending, depth = int(group["pending"]), int(group["lag"])
        agents.append(AgentSnapshot(
            agent=agent,
            online=instances is not None,
            last_seen=_json_decoder.decode(registry[agent.encode()])["last_seen"],
            presence=AgentPresence(
                agent=agent, instances=instances, since=min(i.since for i in instances),
                last_seen=max(i.last_seen for i in instances),
            ) if instances else None,
            state=AgentState(
                agent=agent, status=str(fields.get("status", "idle")) if instances else "offline",
                fields=fields, updated_at=updated_at, online=instances is not None,
            ),
            mailbox=MailboxCounts(
                depth=depth, pending=pending, delayed=int(delayed), dead_letters=int(dead)
            ),
            locks=held[agent],
            heartbeats=[_run_decoder.decode(beats[name]) for name in sorted(beats)],
        ))  # fmt: skip
    return FamilySnapshot(
        taken_at=now, presence_version=int(version or 0), total_agents=len(registry),
        agents=agents, family_locks=held[FAMILY],
        family_heartbeats=[_run_decoder.decode(family_beats[n]) for n in sorted(family_beats)],
        next_cursor=None,
    )  # fmt: skip


async def baseline_lock_pairs(client: redis.asyncio.Redis, name: str, n: int) -> None:
    for _ in range(n):
        lock = client.lock(name, timeout=10)
        await lock.acquire()
        await lock.release()


# ===== agentbus =================================================================================


async def agentbus_lock_pairs(bus: AgentBus, name: str, n: int) -> None:
    for _ in range(n):
        async with bus.lock(name, ttl=10):
            pass


# ===== populating a family the way the package writes it ========================================


async def populate(client: redis.asyncio.Redis, keys: Keys, n: int) -> None:
    """``n`` online agents, one instance each, with state, mailbox, some locks and heartbeats."""
    touch = PresenceScripts(client).touch
    acquire = load_script(client, "lock_acquire", "agentbus.presence")
    for script in (touch, acquire):
        await client.script_load(script.script)
    now = time.time()
    for start in range(0, n, CHUNK):
        async with client.pipeline(transaction=False) as pipe:
            for i in range(start, min(n, start + CHUNK)):
                _write_agent(pipe, keys, i, now, touch.sha, acquire.sha)
            await pipe.execute()
        async with client.pipeline(transaction=False) as pipe:
            for i in range(start, min(n, start + CHUNK)):
                # One of the three messages is delivered and not yet acked: depth 2, pending 1.
                pipe.xreadgroup(CONSUMER_GROUP, "c1", {keys.mailbox(_agent(i)): ">"}, count=1)
            await pipe.execute()


def _agent(i: int) -> str:
    return f"agent-{i:05d}"


def _write_agent(pipe: Any, keys: Keys, i: int, now: float, touch: str, acquire: str) -> None:
    agent, instance = _agent(i), f"i{i:05d}"
    info = InstanceInfo(
        agent=agent, instance=instance, since=now, last_seen=now, ttl=LEASE_TTL,
        host="bench", pid=10_000 + i, metadata={"role": "worker", "team": f"t{i % 10}"},
    )  # fmt: skip
    # The lease refresh (InstanceLease.refresh), command for command.
    pipe.set(keys.lease(agent, instance), "1", px=int(LEASE_TTL * 1000))
    pipe.zadd(keys.instances(agent), {instance: int((now + LEASE_TTL) * 1000)})
    pipe.hset(keys.registry, agent, msgspec.json.encode(RegistryEntry(agent=agent, last_seen=now)))
    script_keys, script_args = touch_args(keys, info, changed=False)
    pipe.evalsha(touch, len(script_keys), *script_keys, *script_args)
    # set_state(status=..., task=...)
    fields = encode_fields({"status": "busy", "task": f"task-{i}", "progress": i % 100 / 100})
    fields["updated_at"] = repr(now)
    pipe.hset(keys.state(agent), mapping=fields)
    # A mailbox with three messages and the consumer group.
    for m in range(3):
        pipe.xadd(
            keys.mailbox(agent), {"type": "job", "sender": "boss", "env": b"x" * 120 + bytes([m])}
        )
    pipe.xgroup_create(keys.mailbox(agent), CONSUMER_GROUP, id="0")
    if i % 10 == 0:  # a tenth hold a lock and have run a heartbeat
        lock_keys = [keys.lock(agent, "nightly"), keys.locks(agent)]
        now_ms, ttl_ms = int(now * 1000), 3_600_000
        holder = f"{agent}/{instance}"
        entry = {"holder": holder, "acquired_at": now_ms, "expires_at": now_ms + ttl_ms}
        token = f"{i:032x}"  # as Lock does: 32 hex digits, then the JSON entry
        lock_args = [token, ttl_ms, "nightly", msgspec.json.encode(entry)]
        pipe.evalsha(acquire, 2, *lock_keys, *lock_args)
        run = HeartbeatRun(
            name="beat", window=int(now / 60), fencing_token=1, runner=f"{agent}/{instance}",
            started_at=now, finished_at=now + 0.01, duration=0.01, outcome="ok",
        )  # fmt: skip
        pipe.hset(keys.heartbeats(agent), "beat", msgspec.json.encode(run))


# ===== timing ====================================================================================


async def compare(
    label: str, contenders: dict[str, Callable[[], Awaitable[Any]]], runs: int, calls: int
) -> dict[str, list[float]]:
    """Seconds per call of each contender, one figure per run.

    Within a run the contenders take turns call by call (the order flips every round), so a
    change in the machine's load hits all of them alike; each call is timed on its own.
    """
    names = list(contenders)
    for fn in contenders.values():
        await fn()  # warm-up: scripts loaded, connections open
    results: dict[str, list[float]] = {name: [] for name in names}
    for run in range(runs):
        spent = dict.fromkeys(names, 0.0)
        gc.collect()
        for call in range(calls):
            for name in names if (run + call) % 2 == 0 else names[::-1]:
                started = time.perf_counter()
                await contenders[name]()
                spent[name] += time.perf_counter() - started
        for name in names:
            results[name].append(spent[name] / calls)
        shown = "  ".join(f"{name} {results[name][-1] * 1000:8.3f} ms" for name in names)
        print(f"run {run + 1} {label:<18} {shown}", flush=True)
    return results


def ratios(a: list[float], b: list[float]) -> list[float]:
    return [x / y for x, y in zip(a, b, strict=True)]


async def bench(url: str, runs: int, quick: bool) -> list[str]:
    summary: list[str] = []
    async with redis.asyncio.Redis.from_url(url) as client:
        for n, calls in ((1_000, 20 if quick else 200), (10_000, 3 if quick else 30)):
            keys = Keys(unique_namespace("bench"))
            await populate(client, keys, n)
            check = await online(client, keys)
            assert check == await baseline_online(client, keys), "the baseline reads otherwise"
            assert len(check.agents) == n
            res = await compare(f"online() {n:>6,}", {
                "agentbus": partial(online, client, keys),
                "baseline": partial(baseline_online, client, keys),
            }, runs, calls)  # fmt: skip
            summary.append(_line(f"online() {n:,} agents", res))
            if n == 1_000:
                snap, base = await snapshot(client, keys), await baseline_snapshot(client, keys)
                assert _same_snapshot(snap, base), "the baseline reads something else"
                res = await compare("snapshot() 1,000", {
                    "agentbus": partial(snapshot, client, keys),
                    "baseline": partial(baseline_snapshot, client, keys),
                }, runs, 5 if quick else 40)  # fmt: skip
                summary.append(_line("snapshot() 1,000 agents", res))
            await client.flushdb()  # this private server holds nothing else

        pairs = 50  # per turn
        ns = unique_namespace("bench")
        config = load_config(redis_url=url, overrides={"bus": {"namespace": ns}})
        async with (
            AgentBus("locker", config=config) as bus,
            redis.asyncio.Redis.from_url(url) as default_client,
        ):
            res = await compare("lock pairs x50", {
                "agentbus": partial(agentbus_lock_pairs, bus, "bench-lock", pairs),
                # redis-py's lock on the bus's own client: the same server and settings
                "redis-py": partial(baseline_lock_pairs, bus.redis, f"{ns}:rlock", pairs),
                # and on a client with redis-py's defaults (no socket timeout: no wait_for)
                "redis-py default": partial(
                    baseline_lock_pairs, default_client, f"{ns}:rlock2", pairs
                ),
            }, runs, 10 if quick else 60)  # fmt: skip
        per_s = {name: [pairs / t for t in times] for name, times in res.items()}
        # The target is judged against the faster redis-py variant of each run.
        best = [
            max(a, b) for a, b in zip(per_s["redis-py"], per_s["redis-py default"], strict=True)
        ]
        ratio = median_or_nan(ratios(per_s["agentbus"], best))
        summary.append(
            target_line("lock pairs/s agentbus/redis-py (faster client)", ratio, ">=", 1.0)
            + f"   agentbus {median_or_nan(per_s['agentbus']):,.0f}/s,"
            f" redis-py {median_or_nan(per_s['redis-py']):,.0f}/s on the bus's client,"
            f" {median_or_nan(per_s['redis-py default']):,.0f}/s on a default client"
        )
    return summary


def _line(label: str, res: dict[str, list[float]]) -> str:
    ratio = median_or_nan(ratios(res["agentbus"], res["baseline"]))
    return (
        target_line(f"{label} agentbus/baseline", ratio, "<=", 1.5)
        + f"   agentbus {statistics.median(res['agentbus']) * 1000:.2f} ms,"
        f" baseline {statistics.median(res['baseline']) * 1000:.2f} ms"
    )


def _same_snapshot(a: FamilySnapshot, b: FamilySnapshot) -> bool:
    strip = {"taken_at": 0.0}
    return msgspec.structs.replace(a, **strip) == msgspec.structs.replace(b, **strip)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="alternating runs (median taken)")
    parser.add_argument("--quick", action="store_true", help="smoke run: fewer calls, 1 run")
    parser.add_argument("--show-baseline", action="store_true", help="print the baselines, exit")
    args = parser.parse_args()
    if args.show_baseline:
        for fn in (baseline_online, _baseline_locks, baseline_snapshot, baseline_lock_pairs):
            print(inspect.getsource(fn))
        return
    runs = 1 if args.quick else args.runs
    with RedisServer.start() as server:
        print(machine_header(server.url, "presence"))
        print(f"runs       {runs}, contenders taking turns call by call within each run\n")
        summary = anyio.run(bench, server.url, runs, args.quick, backend="asyncio")
    print("\n(ratios: median of per-run ratios; times: median per call over runs)")
    for line in summary:
        print(line)


if __name__ == "__main__":
    main()
