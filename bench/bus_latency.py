"""Request/reply round-trip latency, one request in flight, between two processes.

    python bench/bus_latency.py [--requests N] [--runs 5] [--quick] [--only raw,agentbus]

The requester times each round trip itself (one clock, one process); the first ``--warmup``
round trips of every run are not counted. Contenders alternate run by run on one private
redis-server, each run on fresh keys; p50/p99/mean are medians over runs, and the p50 ratio is
taken against the raw baseline of the same run.
"""

from __future__ import annotations

import inspect
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import msgspec
import redis.asyncio
from _common import (
    GROUP,
    Side,
    SideError,
    SideFn,
    SideSpec,
    agentbus_config,
    base_parser,
    machine_header,
    median_or_nan,
    now,
    percentile,
    quiesce,
    run_pair,
    selected,
    skip_unavailable,
    target_line,
)

from agentbus.testing import RedisServer, unique_namespace

QUICK_REQUESTS = 2_000
CONTENDERS = ("raw", "agentbus")
_REPLY_TIMEOUT = 5.0

# ===== raw baseline: request/reply over two streams with redis-py asyncio =====================

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder()


async def raw_server(side: Side) -> dict[str, Any]:
    spec = side.spec
    stream = f"{spec.ns}:server"
    client = redis.asyncio.Redis.from_url(spec.url)
    await client.xgroup_create(stream, GROUP, id="0", mkstream=True)
    served = 0

    async def serve() -> None:
        nonlocal served
        while True:
            response = await client.xreadgroup(GROUP, "s1", {stream: ">"}, count=10, block=1000)
            for _stream, entries in response:
                for entry_id, fields in entries:
                    request = _decoder.decode(fields[b"p"])
                    reply = {"p": _encoder.encode({"pong": request["i"]}), "cid": fields[b"cid"]}
                    await client.xadd(fields[b"reply"], reply)
                    await client.xack(stream, GROUP, entry_id)
                    served += 1

    async with anyio.create_task_group() as tg:
        tg.start_soon(serve)
        side.signal_ready()
        await side.wait_sender_finished()
        tg.cancel_scope.cancel()
    await client.aclose()
    return {"served": served}


async def raw_client(side: Side) -> dict[str, Any]:
    spec = side.spec
    stream, reply_stream = f"{spec.ns}:server", f"{spec.ns}:reply:c1"
    client = redis.asyncio.Redis.from_url(spec.url)
    await client.ping()
    warmup = int(spec.options["warmup"])
    samples: list[float] = []
    last_id = "0-0"
    side.signal_ready()
    await side.wait_go()
    for i in range(warmup + spec.n):
        cid = str(i).encode()
        t0 = now()
        request = {"p": _encoder.encode({"i": i}), "reply": reply_stream, "cid": cid}
        await client.xadd(stream, request)
        while True:
            response = await client.xread({reply_stream: last_id}, count=1, block=1000)
            if not response:
                if now() - t0 > _REPLY_TIMEOUT:
                    raise TimeoutError(f"no reply to request {i}")
                continue
            last_id, fields = response[0][1][0]
            if fields[b"cid"] == cid:
                break
        elapsed = now() - t0
        if _decoder.decode(fields[b"p"])["pong"] != i:
            raise AssertionError(f"request {i} got the wrong reply")
        if i >= warmup:
            samples.append(elapsed)
    await client.aclose()
    return {"samples": samples}


# ===== agentbus ===============================================================================


async def agentbus_server(side: Side) -> dict[str, Any]:
    from agentbus import AgentBus

    served = 0
    async with AgentBus("bench-server", config=agentbus_config(side.spec)) as bus:

        @bus.handler("ping")
        async def ping(msg: Any) -> dict[str, Any]:
            nonlocal served
            served += 1
            return {"pong": msg.data["i"]}

        async with anyio.create_task_group() as tg:
            tg.start_soon(bus.serve)
            side.signal_ready()
            # Serve until the requester has reported: its last reply must get out.
            await side.wait_sender_finished()
            tg.cancel_scope.cancel()
    return {"served": served}


async def agentbus_client(side: Side) -> dict[str, Any]:
    from agentbus import AgentBus

    spec = side.spec
    warmup = int(spec.options["warmup"])
    samples: list[float] = []
    async with AgentBus("bench-client", config=agentbus_config(spec)) as bus:
        side.signal_ready()
        await side.wait_go()
        for i in range(warmup + spec.n):
            t0 = now()
            reply = await bus.request("bench-server", "ping", {"i": i}, timeout=_REPLY_TIMEOUT)
            elapsed = now() - t0
            if reply.data["pong"] != i:
                raise AssertionError(f"request {i} got the wrong reply {reply.data!r}")
            if i >= warmup:
                samples.append(elapsed)
    return {"samples": samples}


# ===== driver =================================================================================

_SIDES: dict[str, tuple[SideFn, SideFn]] = {
    "raw": (raw_server, raw_client),
    "agentbus": (agentbus_server, agentbus_client),
}


@dataclass(frozen=True)
class RunResult:
    p50: float  # seconds
    p99: float
    mean: float


def run_once(name: str, url: str, n: int, warmup: int, stall_timeout: float) -> RunResult:
    spec = SideSpec(
        url=url,
        ns=unique_namespace("bench"),
        n=n,
        stall_timeout=stall_timeout,
        options={"warmup": warmup},
    )
    server, client = _SIDES[name]
    try:
        # Even 5 ms per round trip would be far inside this.
        pair = run_pair(server, client, spec, timeout=60.0 + (n + warmup) * 0.02)
    finally:
        quiesce(url, spec.ns)
    samples = sorted(pair.sender["samples"])
    return RunResult(
        p50=percentile(samples, 50), p99=percentile(samples, 99), mean=statistics.fmean(samples)
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = base_parser(
        __doc__ or "", default_n=10_000, quick_n=QUICK_REQUESTS, count_name="requests"
    )
    parser.add_argument("--warmup", type=int, default=200, help="uncounted round trips per run")
    args = parser.parse_args(argv)
    if args.show_baseline:
        print(inspect.getsource(raw_server) + "\n\n" + inspect.getsource(raw_client))
        return
    n, runs = (QUICK_REQUESTS, 1) if args.quick else (args.n, args.runs)
    names = selected(CONTENDERS, args.only)

    with RedisServer.start() as server:
        print(machine_header(server.url, "bus_latency"))
        skipped = skip_unavailable(names)
        print(f"workload   {n:,} request/reply round trips, one in flight, +{args.warmup} warmup")
        print(f"runs       {runs}, contenders alternating: {', '.join(names)}\n")
        results: dict[str, list[RunResult | None]] = {name: [] for name in names}
        for run in range(1, runs + 1):
            for name in names:
                if name not in skipped:
                    results[name].append(
                        _run_reported(name, server.url, n, args.warmup, args.stall_timeout, run)
                    )
        print()
        _print_summary(names, results, skipped)


def _run_reported(
    name: str, url: str, n: int, warmup: int, stall_timeout: float, run: int
) -> RunResult | None:
    try:
        result = run_once(name, url, n, warmup, stall_timeout)
    except SideError as exc:
        print(f"run {run} {name:<10} FAILED:\n{exc}", file=sys.stderr)
        return None
    print(
        f"run {run} {name:<10} p50 {_ms(result.p50)}  p99 {_ms(result.p99)}"
        f"  mean {_ms(result.mean)} ms",
        flush=True,
    )
    return result


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:7.3f}"


def _print_summary(
    names: list[str], results: dict[str, list[RunResult | None]], skipped: dict[str, str]
) -> None:
    print(
        f"{'contender':<10} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8} {'p50 vs raw':>11} ok runs"
    )
    raw = results.get("raw", [])
    for name in names:
        if name in skipped:
            print(f"{name:<10} skipped (see NOTE above)")
            continue
        done = [r for r in results[name] if r is not None]
        stats = [median_or_nan([getattr(r, stat) for r in done]) for stat in ("p50", "p99", "mean")]
        ratio = median_or_nan(_p50_ratios(results[name], raw))
        print(
            f"{name:<10} {_ms(stats[0]):>8} {_ms(stats[1]):>8} {_ms(stats[2]):>8}"
            f" {ratio:>11.2f} {len(done):>3}/{len(results[name])}"
        )
    print("(each figure: median over runs; p50 vs raw: median of per-run ratios)\n")
    note = "agentbus skipped" if "agentbus" in skipped else ""
    ratio = median_or_nan(_p50_ratios(results.get("agentbus", []), raw))
    print(target_line("p50 agentbus/raw", ratio, "<=", 1.25, note))


def _p50_ratios(a: list[RunResult | None], b: list[RunResult | None]) -> list[float]:
    return [x.p50 / y.p50 for x, y in zip(a, b, strict=False) if x is not None and y is not None]


if __name__ == "__main__":
    main()
