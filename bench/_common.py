"""Shared plumbing for the bus benchmarks: machine header, process pairs, id accounting, stats.

Every benchmark runs one *receiver* process (a consumer, or the reply server) and one *sender*
process (a producer, or the requester) against a private ``redis-server``. Each side is an async
function ``side(side: Side) -> report`` defined at module level in the benchmark script, so the
``spawn`` start method can import it in the child. The parent starts the receiver, waits until
it is ready, starts the sender, waits until it is connected, then releases both with ``go``:
process start-up and imports never count.

Timestamps come from ``time.perf_counter``, which is ``CLOCK_MONOTONIC`` on Linux: one clock for
the whole machine, so a producer's start and a consumer's finish can be subtracted.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import multiprocessing as mp
import os
import platform
import queue
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import redis
import redis.asyncio

BODY = "x" * 64
BATCH = 100
GROUP = "bench"
_READY_TIMEOUT = 60.0
_AOF_REWRITE_TIMEOUT = 60.0
_ACK_WAIT = 10.0

now = time.perf_counter


def make_payload(i: int) -> dict[str, Any]:
    """The message every contender sends: a unique id plus a small body."""
    return {"i": i, "body": BODY}


def batches(n: int, size: int = BATCH) -> list[range]:
    return [range(start, min(start + size, n)) for start in range(0, n, size)]


# --- id accounting ---------------------------------------------------------------------------


class IdTracker:
    """Records handled ids; ``done`` fires once every id in ``range(n)`` was seen at least once.

    Every contender pays the same bookkeeping (one list append, one bytearray check).
    """

    __slots__ = ("_flags", "_unique", "done", "last_progress", "n", "seen")

    def __init__(self, n: int) -> None:
        self.n = n
        self.seen: list[int] = []
        self._flags = bytearray(n)
        self._unique = 0
        self.done = anyio.Event()
        self.last_progress = now()

    def record(self, i: int) -> bool:
        """Note one handled id; True once all ids have been seen."""
        self.seen.append(i)
        if 0 <= i < self.n and not self._flags[i]:
            self._flags[i] = 1
            self._unique += 1
            self.last_progress = now()
            if self._unique == self.n:
                self.done.set()
        return self._unique == self.n

    @property
    def complete(self) -> bool:
        return self._unique == self.n

    def stalled(self, stall_timeout: float) -> bool:
        return now() - self.last_progress > stall_timeout

    async def wait(self, stall_timeout: float) -> bool:
        """Wait until complete (True) or until no new id arrived for ``stall_timeout`` (False)."""
        while not self.complete:
            with anyio.move_on_after(0.5):
                await self.done.wait()
            if not self.complete and self.stalled(stall_timeout):
                return False
        return True


async def stall_watchdog(
    tracker: IdTracker, scope: anyio.CancelScope, stall_timeout: float
) -> None:
    """Cancel ``scope`` once no new id arrived for ``stall_timeout``: lost ids must not hang us."""
    if not await tracker.wait(stall_timeout):
        scope.cancel()


def lost_and_duplicated(seen: Sequence[int], n: int) -> tuple[int, int]:
    unique = set(seen)
    lost = sum(1 for i in range(n) if i not in unique)
    return lost, len(seen) - len(unique)


async def wait_acked(client: redis.asyncio.Redis, stream: str, group: str) -> bool:
    """Poll until the group has no pending entries: handler-driven consumers ack after return.

    Polled only after the last id was handled, so it costs nothing during the run and adds at
    most one poll interval to the measured time.
    """
    with anyio.move_on_after(_ACK_WAIT):
        while True:
            summary = await client.xpending(stream, group)
            if int(summary["pending"]) == 0:
                return True
            await anyio.sleep(0.0005)
    return False


# --- processes -------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class SideSpec:
    """What both sides of one run need to know; pickled into each child."""

    url: str
    ns: str
    n: int
    stall_timeout: float
    options: Mapping[str, Any] = field(default_factory=dict)


class Side:
    """A child's view of its run: the spec and the start/stop protocol.

    The mp events are shared with the parent: ``ready`` is this side's own, ``go`` releases the
    sender, and ``finished`` is set once the sender has reported (a reply server runs until then).
    """

    def __init__(self, spec: SideSpec, ready: Any, go: Any, finished: Any) -> None:
        self.spec = spec
        self._ready = ready
        self._go = go
        self._finished = finished

    def signal_ready(self) -> None:
        self._ready.set()

    async def wait_go(self) -> None:
        # mp.Event.wait blocks; in a thread it leaves the event loop (and any
        # background tasks of the library under test) running.
        await anyio.to_thread.run_sync(self._go.wait)

    async def wait_sender_finished(self) -> None:
        await anyio.to_thread.run_sync(self._finished.wait)


SideFn = Callable[[Side], Awaitable[dict[str, Any]]]


def _child_main(fn: SideFn, spec: SideSpec, events: tuple[Any, Any, Any], results: Any) -> None:
    async def main() -> dict[str, Any]:
        return await fn(Side(spec, *events))

    try:
        results.put(("ok", anyio.run(main, backend="asyncio")))
    except BaseException:
        results.put(("error", traceback.format_exc()))


class SideError(RuntimeError):
    """A benchmark child failed; the message carries its traceback."""


@dataclass(frozen=True)
class PairResult:
    receiver: dict[str, Any]
    sender: dict[str, Any]


def run_pair(receiver: SideFn, sender: SideFn, spec: SideSpec, timeout: float) -> PairResult:
    """Run one receiver and one sender process to completion.

    Raises:
        SideError: a side raised, died, or did not finish within ``timeout`` seconds.
    """
    ctx = mp.get_context("spawn")
    go, finished = ctx.Event(), ctx.Event()
    procs: list[tuple[Any, Any]] = []
    try:
        for fn in (receiver, sender):
            ready, results = ctx.Event(), ctx.Queue()
            proc = ctx.Process(target=_child_main, args=(fn, spec, (ready, go, finished), results))
            proc.start()
            procs.append((proc, results))
            _await_ready(proc, ready, results)
        go.set()
        deadline = time.monotonic() + timeout
        # Read the queues before join(): a child blocks on exit until its queue is drained.
        sender_report = _collect(*procs[1], deadline)
        finished.set()
        return PairResult(receiver=_collect(*procs[0], deadline), sender=sender_report)
    finally:
        finished.set()  # on failure too: a reply server must not wait for a dead requester
        for proc, _ in procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
                proc.join()


def _await_ready(proc: Any, ready: Any, results: Any) -> None:
    deadline = time.monotonic() + _READY_TIMEOUT
    while not ready.wait(0.1):
        if not proc.is_alive() or not results.empty() or time.monotonic() > deadline:
            raise SideError(_failure(results, f"{proc.name} never became ready"))


def _collect(proc: Any, results: Any, deadline: float) -> dict[str, Any]:
    while True:
        try:
            status, payload = results.get(timeout=0.5)
        except queue.Empty:
            if not proc.is_alive():
                raise SideError(f"{proc.name} died (exit code {proc.exitcode})") from None
            if time.monotonic() > deadline:
                raise SideError(f"{proc.name} did not finish in time") from None
            continue
        if status != "ok":
            raise SideError(payload)
        report: dict[str, Any] = payload
        return report


def _failure(results: Any, fallback: str) -> str:
    try:
        _, payload = results.get(timeout=1.0)
    except queue.Empty:
        return fallback
    return str(payload)


# --- server housekeeping ---------------------------------------------------------------------


def quiesce(url: str, prefix: str) -> None:
    """Drop a run's keys and compact the AOF, so every run starts from the same server state.

    Without it the AOF grows by every run and Redis forks a rewrite at a random point of a later
    run, which shows up as noise in whichever contender is unlucky.
    """
    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.unlink(*keys)
        _rewrite_aof(client)
    finally:
        client.close()


def _rewrite_aof(client: redis.Redis) -> None:
    deadline = time.monotonic() + _AOF_REWRITE_TIMEOUT
    while _aof_busy(client):  # a rewrite Redis started itself must end before we ask for one
        if time.monotonic() > deadline:
            return
        time.sleep(0.05)
    client.bgrewriteaof()
    while _aof_busy(client) and time.monotonic() < deadline:
        time.sleep(0.05)


def _aof_busy(client: redis.Redis) -> bool:
    info = client.info("persistence")
    return bool(info["aof_rewrite_in_progress"] or info["aof_rewrite_scheduled"])


# --- machine header --------------------------------------------------------------------------


def machine_header(url: str, title: str) -> str:
    info = redis.Redis.from_url(url).info("server")
    lines = [
        f"== {title} ==",
        f"cpu        {_cpu_model()}",
        f"cores      {os.cpu_count()} ({len(os.sched_getaffinity(0))} usable)",
        f"ram        {_ram_gib():.1f} GiB",
        f"os         {platform.platform()}",
        f"python     {platform.python_implementation()} {platform.python_version()}",
        f"redis      redis-server {info['redis_version']} (private, AOF everysec, loopback)",
        f"packages   {_versions('agentbus', 'redis', 'hiredis', 'msgspec', 'anyio', 'faststream')}",
        f"agentbus   git {_git_revision()}",
    ]
    return "\n".join(lines)


def _cpu_model() -> str:
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        return platform.processor() or "unknown"
    # Virtual CPUs often report a bare brand ("AMD EPYC"); family/model pin the generation.
    model = f"{fields.get('model name', 'unknown')} (family {fields.get('cpu family', '?')}"
    model += f" model {fields.get('model', '?')}"
    return model + (", VM guest)" if "hypervisor" in fields.get("flags", "").split() else ")")


def _ram_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return float("nan")


def _versions(*names: str) -> str:
    parts = []
    for name in names:
        try:
            parts.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            parts.append(f"{name} (not installed)")
    return ", ".join(parts)


def _git_revision() -> str:
    repo = Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{rev}{' (dirty)' if dirty else ''}"


# --- command line and reporting --------------------------------------------------------------


def base_parser(
    description: str, *, default_n: int, quick_n: int, count_name: str
) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(f"--{count_name}", type=int, default=default_n, dest="n", metavar="N")
    parser.add_argument("--runs", type=int, default=5, help="runs per contender (median taken)")
    parser.add_argument(
        "--quick", action="store_true", help=f"smoke run: {quick_n:,} {count_name}, 1 run"
    )
    parser.add_argument("--only", default="", help="comma-separated contenders to run")
    parser.add_argument(
        "--stall-timeout",
        type=float,
        default=20.0,
        help="a receiver that sees no new id for this long gives up and reports what it has",
    )
    parser.add_argument(
        "--show-baseline", action="store_true", help="print the raw baseline's code and exit"
    )
    return parser


def selected(all_names: Sequence[str], only: str) -> list[str]:
    if not only:
        return list(all_names)
    wanted = [name.strip() for name in only.split(",") if name.strip()]
    unknown = sorted(set(wanted) - set(all_names))
    if unknown:
        sys.exit(f"unknown contender(s) {unknown}; choose from {list(all_names)}")
    return [name for name in all_names if name in wanted]


def agentbus_config(spec: SideSpec) -> Any:
    """The contract's way to point agentbus at the private server and a fresh namespace."""
    from agentbus import load_config

    return load_config(redis_url=spec.url, overrides={"bus": {"namespace": spec.ns}})


def agentbus_missing() -> str | None:
    """Why the agentbus contender cannot run (None when it can): the API may not exist yet."""
    try:
        from agentbus import AgentBus  # noqa: F401
    except ImportError as exc:
        return f"agentbus.AgentBus is not importable yet ({exc})"
    return None


def skip_unavailable(names: Sequence[str]) -> dict[str, str]:
    """The agentbus contenders that cannot run, with the reason (printed as a NOTE)."""
    reason = agentbus_missing()
    skipped = {name: reason for name in names if name.startswith("agentbus") and reason}
    for name, why in skipped.items():
        print(f"NOTE       skipping {name}: {why}")
    return skipped


def median_or_nan(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (q in 0..100)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, -(-len(sorted_values) * q // 100))
    return sorted_values[int(rank) - 1]


def target_line(label: str, value: float, op: str, target: float, note: str = "") -> str:
    if value != value:  # NaN: the contender did not run
        return f"{label:<28} n/a   (target {op} {target:g}){f'  {note}' if note else ''}"
    met = value >= target if op == ">=" else value <= target
    return f"{label:<28} {value:5.2f} (target {op} {target:g})  {'MET' if met else 'MISSED'}"
