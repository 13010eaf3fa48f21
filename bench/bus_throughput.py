"""End-to-end throughput of one producer process and one consumer process on Redis Streams.

    python bench/bus_throughput.py [--messages N] [--runs 5] [--quick] [--only raw,agentbus]

Throughput = messages / (producer start -> consumer has acked the last message). Contenders run
alternately (run 1: every contender, run 2: every contender, ...) on one private redis-server,
each run on fresh keys; results are medians, and ratios are taken against the raw baseline of the
same run, so drift of the machine over time cancels out.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import msgspec
import redis.asyncio
from _common import (
    BATCH,
    GROUP,
    IdTracker,
    Side,
    SideError,
    SideFn,
    SideSpec,
    agentbus_config,
    base_parser,
    batches,
    lost_and_duplicated,
    machine_header,
    make_payload,
    median_or_nan,
    now,
    quiesce,
    run_pair,
    selected,
    skip_unavailable,
    stall_watchdog,
    target_line,
    wait_acked,
)

from agentbus.testing import RedisServer, unique_namespace

QUICK_MESSAGES = 5_000
CONTENDERS = ("raw", "agentbus", "agentbus-manual", "faststream-batch", "faststream-per-message")

# ===== raw baseline: this exact code is what every ratio is measured against ==================

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder()


async def raw_producer(side: Side) -> dict[str, Any]:
    spec = side.spec
    stream = f"{spec.ns}:raw"
    client = redis.asyncio.Redis.from_url(spec.url)
    await client.ping()
    side.signal_ready()
    await side.wait_go()
    t_start = now()
    for batch in batches(spec.n):
        pipe = client.pipeline(transaction=False)
        for i in batch:
            pipe.xadd(stream, {"p": _encoder.encode(make_payload(i))})
        await pipe.execute()
    t_end = now()
    await client.aclose()
    return {"t_start": t_start, "t_end": t_end}


async def raw_consumer(side: Side) -> dict[str, Any]:
    spec = side.spec
    stream = f"{spec.ns}:raw"
    client = redis.asyncio.Redis.from_url(spec.url)
    await client.xgroup_create(stream, GROUP, id="0", mkstream=True)
    tracker = IdTracker(spec.n)
    side.signal_ready()
    while not tracker.complete and not tracker.stalled(spec.stall_timeout):
        response = await client.xreadgroup(GROUP, "c1", {stream: ">"}, count=BATCH, block=1000)
        for _stream, entries in response:
            for _entry_id, fields in entries:
                tracker.record(_decoder.decode(fields[b"p"])["i"])
            await client.xack(stream, GROUP, *(entry_id for entry_id, _ in entries))
    t_done = now()
    await client.aclose()
    return {"t_done": t_done, "seen": tracker.seen, "complete": tracker.complete, "acked": True}


# ===== agentbus ===============================================================================

_AGENTBUS_CONSUMER = "bench-consumer"


async def agentbus_producer(side: Side) -> dict[str, Any]:
    from agentbus import AgentBus

    spec = side.spec
    async with AgentBus("bench-producer", config=agentbus_config(spec)) as bus:
        side.signal_ready()
        await side.wait_go()
        t_start = now()
        for batch in batches(spec.n):
            ids = await bus.send_many(
                [(_AGENTBUS_CONSUMER, "bench", make_payload(i)) for i in batch]
            )
            if len(ids) != len(batch):
                raise RuntimeError(f"send_many returned {len(ids)} ids for {len(batch)} messages")
        t_end = now()
    return {"t_start": t_start, "t_end": t_end}


async def agentbus_serve_consumer(side: Side) -> dict[str, Any]:
    from agentbus import AgentBus

    spec = side.spec
    tracker = IdTracker(spec.n)
    async with AgentBus(_AGENTBUS_CONSUMER, config=agentbus_config(spec)) as bus:

        @bus.handler("bench")
        async def handle(msg: Any) -> None:
            tracker.record(msg.data["i"])

        async with anyio.create_task_group() as tg:
            tg.start_soon(bus.serve)
            side.signal_ready()
            complete = await tracker.wait(spec.stall_timeout)
            # serve() acks after the handler returns: the clock stops when that ack landed.
            acked = complete and await _agentbus_acked(spec)
            t_done = now()
            tg.cancel_scope.cancel()
    return {"t_done": t_done, "seen": tracker.seen, "complete": complete, "acked": acked}


async def agentbus_manual_consumer(side: Side) -> dict[str, Any]:
    from agentbus import AgentBus

    spec = side.spec
    tracker = IdTracker(spec.n)
    t_done = float("nan")
    async with (
        AgentBus(_AGENTBUS_CONSUMER, config=agentbus_config(spec)) as bus,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(stall_watchdog, tracker, tg.cancel_scope, spec.stall_timeout)
        side.signal_ready()
        async for msg in bus.messages():
            complete = tracker.record(msg.data["i"])
            await msg.ack()
            if complete:
                break
        t_done = now()
        tg.cancel_scope.cancel()
    return {"t_done": t_done, "seen": tracker.seen, "complete": tracker.complete, "acked": True}


async def _agentbus_acked(spec: SideSpec) -> bool:
    # Reads agentbus's key layout (mailbox stream + consumer group) to see the acks land; the
    # public API has no "pending count" yet.
    from agentbus import Keys
    from agentbus._keys import CONSUMER_GROUP

    client = redis.asyncio.Redis.from_url(spec.url)
    try:
        return await wait_acked(client, Keys(spec.ns).mailbox(_AGENTBUS_CONSUMER), CONSUMER_GROUP)
    finally:
        await client.aclose()


# ===== FastStream =============================================================================


def _faststream_broker(spec: SideSpec) -> Any:
    from faststream.redis import RedisBroker

    # FastStream logs two lines per message by default; that is a choice the user can turn off,
    # so it is off unless --faststream-logging asks for the default.
    if spec.options.get("faststream_logging"):
        return RedisBroker(spec.url)
    return RedisBroker(spec.url, logger=None)


async def faststream_producer(side: Side) -> dict[str, Any]:
    spec = side.spec
    stream = f"{spec.ns}:fs"
    broker = _faststream_broker(spec)
    # publish_batch() only targets lists; streams get one publish per message, pipelined.
    client = await broker.connect()
    side.signal_ready()
    await side.wait_go()
    t_start = now()
    for batch in batches(spec.n):
        pipe = client.pipeline(transaction=False)
        for i in batch:
            await broker.publish(make_payload(i), stream=stream, pipeline=pipe)
        await pipe.execute()
    t_end = now()
    await broker.stop()
    return {"t_start": t_start, "t_end": t_end}


async def faststream_consumer(side: Side) -> dict[str, Any]:
    from faststream.redis import StreamSub

    spec = side.spec
    stream = f"{spec.ns}:fs"
    batch = bool(spec.options["batch"])
    tracker = IdTracker(spec.n)
    broker = _faststream_broker(spec)
    sub = StreamSub(stream, group=GROUP, consumer="c1", batch=batch, max_records=BATCH)
    if batch:

        @broker.subscriber(stream=sub)
        async def handle_batch(body: list[dict[str, Any]]) -> None:
            for item in body:
                tracker.record(item["i"])

    else:

        @broker.subscriber(stream=sub)
        async def handle(body: dict[str, Any]) -> None:
            tracker.record(body["i"])

    probe = redis.asyncio.Redis.from_url(spec.url)
    # start() creates the group at "$": the producer may only begin after this.
    await broker.start()
    side.signal_ready()
    complete = await tracker.wait(spec.stall_timeout)
    acked = complete and await wait_acked(probe, stream, GROUP)  # acks follow the handler
    t_done = now()
    await broker.stop()
    await probe.aclose()
    return {"t_done": t_done, "seen": tracker.seen, "complete": complete, "acked": acked}


# ===== driver =================================================================================


@dataclass(frozen=True)
class Contender:
    name: str
    producer: SideFn
    consumer: SideFn
    options: dict[str, Any]


@dataclass(frozen=True)
class RunResult:
    rate: float  # end-to-end msg/s
    produce_rate: float  # msg/s the producer managed on its own
    lost: int
    duplicated: int
    acked: bool


def contenders(faststream_logging: bool) -> dict[str, Contender]:
    fs = {"faststream_logging": faststream_logging}
    table = [
        Contender("raw", raw_producer, raw_consumer, {}),
        Contender("agentbus", agentbus_producer, agentbus_serve_consumer, {}),
        Contender("agentbus-manual", agentbus_producer, agentbus_manual_consumer, {}),
        Contender(
            "faststream-batch", faststream_producer, faststream_consumer, fs | {"batch": True}
        ),
        Contender(
            "faststream-per-message",
            faststream_producer,
            faststream_consumer,
            fs | {"batch": False},
        ),
    ]
    return {c.name: c for c in table}


def run_once(contender: Contender, url: str, n: int, stall_timeout: float) -> RunResult:
    spec = SideSpec(
        url=url,
        ns=unique_namespace("bench"),
        n=n,
        stall_timeout=stall_timeout,
        options=contender.options,
    )
    try:
        pair = run_pair(contender.consumer, contender.producer, spec, timeout=_timeout(n, spec))
    finally:
        quiesce(url, spec.ns)
    t_start = pair.sender["t_start"]
    lost, duplicated = lost_and_duplicated(pair.receiver["seen"], n)
    return RunResult(
        rate=n / (pair.receiver["t_done"] - t_start),
        produce_rate=n / (pair.sender["t_end"] - t_start),
        lost=lost,
        duplicated=duplicated,
        acked=bool(pair.receiver["acked"]),
    )


def _timeout(n: int, spec: SideSpec) -> float:
    # Generous: even FastStream per-message (~1.6k msg/s here) finishes well inside it.
    return 60.0 + n / 200 + spec.stall_timeout


def main(argv: Sequence[str] | None = None) -> None:
    parser = base_parser(
        __doc__ or "", default_n=100_000, quick_n=QUICK_MESSAGES, count_name="messages"
    )
    parser.add_argument(
        "--faststream-logging", action="store_true", help="keep FastStream's per-message logging"
    )
    args = parser.parse_args(argv)
    if args.show_baseline:
        print(inspect.getsource(raw_producer) + "\n\n" + inspect.getsource(raw_consumer))
        return
    n, runs = (QUICK_MESSAGES, 1) if args.quick else (args.n, args.runs)
    table = contenders(args.faststream_logging)
    names = selected(CONTENDERS, args.only)

    with RedisServer.start() as server:
        print(machine_header(server.url, "bus_throughput"))
        skipped = skip_unavailable(names)
        print(f"workload   {n:,} messages of {{'i': i, 'body': 'x' * 64}}, batches of {BATCH}")
        print(f"runs       {runs}, contenders alternating: {', '.join(names)}\n")
        results: dict[str, list[RunResult | None]] = {name: [] for name in names}
        for run in range(1, runs + 1):
            for name in names:
                if name in skipped:
                    continue
                result = _run_reported(table[name], server.url, n, args.stall_timeout, run)
                results[name].append(result)
        print()
        _print_summary(names, results, skipped)


def _run_reported(
    contender: Contender, url: str, n: int, stall_timeout: float, run: int
) -> RunResult | None:
    try:
        result = run_once(contender, url, n, stall_timeout)
    except SideError as exc:
        print(f"run {run} {contender.name:<24} FAILED:\n{exc}", file=sys.stderr)
        return None
    print(
        f"run {run} {contender.name:<24} {result.rate:>9,.0f} msg/s"
        f"  (producer alone {result.produce_rate:>9,.0f} msg/s)"
        f"  lost {result.lost}  duplicated {result.duplicated}"
        f"{'' if result.acked else '  NOT ALL ACKED'}",
        flush=True,
    )
    return result


def _ratios(a: list[RunResult | None], b: list[RunResult | None]) -> list[float]:
    return [x.rate / y.rate for x, y in zip(a, b, strict=False) if x is not None and y is not None]


def _print_summary(
    names: list[str], results: dict[str, list[RunResult | None]], skipped: dict[str, str]
) -> None:
    header = f"{'contender':<24} {'msg/s':>9} {'min':>9} {'max':>9} {'vs raw':>7} {'lost':>5}"
    print(header + f" {'dup':>4} {'ok runs':>8}")
    for name in names:
        if name in skipped:
            print(f"{name:<24} skipped (see NOTE above)")
            continue
        done = [r for r in results[name] if r is not None]
        rates = [r.rate for r in done]
        ratio = median_or_nan(_ratios(results[name], results.get("raw", [])))
        print(
            f"{name:<24} {median_or_nan(rates):>9,.0f} {min(rates, default=0):>9,.0f}"
            f" {max(rates, default=0):>9,.0f} {ratio:>7.2f} {sum(r.lost for r in done):>5}"
            f" {sum(r.duplicated for r in done):>4} {len(done):>4}/{len(results[name])}"
        )
    print("(msg/s: median over runs; vs raw: median of per-run ratios; lost/dup: summed)\n")
    empty: list[RunResult | None] = []
    agentbus, raw = results.get("agentbus", empty), results.get("raw", empty)
    fs_batch = results.get("faststream-batch", empty)
    note = "agentbus skipped" if "agentbus" in skipped else ""
    print(target_line("agentbus/raw", median_or_nan(_ratios(agentbus, raw)), ">=", 0.90, note))
    print(
        target_line(
            "agentbus/faststream-batch", median_or_nan(_ratios(agentbus, fs_batch)), ">=", 1.8, note
        )
    )


if __name__ == "__main__":
    main()
