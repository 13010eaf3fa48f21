"""An agent in a process of its own for the presence, lock and heartbeat tests that SIGKILL it.

Run as ``python tests/presence_process.py MODE --url URL --namespace NS --agent AGENT
--instance ID --records FILE [options]``. Every event is one JSON line appended to ``--records``,
flushed and fsynced before the agent goes on, so a SIGKILL loses nothing that was recorded::

    {"event": ..., "instance": ..., "pid": ..., "t": unix time, ...event fields}

Modes:

- ``presence``: join, ``set_state(status=--status)``, record ``ready``, then idle.
- ``lock``: record ``ready``; then, over and over: ``async with bus.lock(--lock-name,
  ttl=--lock-ttl)``, record ``start`` (with ``token``), ``fenced_write`` the token, hold
  ``--hold`` seconds, record ``end``, pause ``--gap`` seconds. The first holder that finds
  ``--hold-file`` renames it away (only one can) and, instead of ending, records ``holding`` and
  holds the lock until it is killed.
- ``heartbeat``: record ``ready``; ``run_heartbeat(every=--every)``, whose function records
  ``run`` (window, token, runner). Its ``--sleep-on-run``-th run records ``sleeping`` and never
  returns.

The test side is :class:`Processes` / :class:`AgentProcess`: start the script, read its records.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any, TypeVar

import anyio

from agentbus import AgentBus, load_config
from agentbus.presence import HeartbeatRun

SCRIPT = Path(__file__)
POLL = 0.02
"""How often a condition is re-checked while waiting on a deadline."""
T = TypeVar("T")
MODES = ("presence", "lock", "heartbeat")


class Recorder:
    """Appends JSON lines, each one durable before the agent goes on."""

    def __init__(self, path: str, instance: str) -> None:
        self._file: IO[str] = open(path, "a", encoding="utf-8")  # noqa: SIM115 (lives with the process)
        self._instance = instance

    def record(self, event: str, **fields: Any) -> None:
        line = {"event": event, "instance": self._instance, "pid": os.getpid(), **fields}
        line["t"] = time.time()
        self._file.write(json.dumps(line) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())


async def run_lock_loop(bus: AgentBus, args: argparse.Namespace, recorder: Recorder) -> None:
    while True:
        async with bus.lock(args.lock_name, ttl=args.lock_ttl) as lease:
            token = lease.fencing_token
            recorder.record("start", token=token)
            await bus.fenced_write(args.lock_name, token, {"writer": args.instance})
            if args.hold_file and _claim(args.hold_file):
                recorder.record("holding", token=token)
                await anyio.sleep_forever()
            await anyio.sleep(args.hold)
            recorder.record("end", token=token)
        await anyio.sleep(args.gap)


def _claim(path: str) -> bool:
    """True for the one process whose rename of ``path`` succeeds."""
    try:
        os.rename(path, f"{path}.claimed-{os.getpid()}")
    except FileNotFoundError:
        return False
    return True


async def run_heartbeat_loop(bus: AgentBus, args: argparse.Namespace, recorder: Recorder) -> None:
    runs = 0

    async def beat(run: HeartbeatRun) -> None:
        nonlocal runs
        runs += 1
        recorder.record(
            "run", window=run.window, token=run.fencing_token, runner=run.runner,
            started_at=run.started_at,
        )  # fmt: skip
        if runs == args.sleep_on_run:
            recorder.record("sleeping", window=run.window, token=run.fencing_token)
            await anyio.sleep_forever()

    await bus.run_heartbeat(beat, every=args.every, name="beat")


async def main(args: argparse.Namespace) -> None:
    config = load_config(
        redis_url=args.url,
        overrides={"bus": {"namespace": args.namespace, "leaseTtl": args.lease_ttl}},
    )
    recorder = Recorder(args.records, args.instance)
    async with AgentBus(args.agent, config=config, instance_id=args.instance) as bus:
        if args.mode == "presence":
            await bus.set_state(status=args.status)
            recorder.record("ready")
            await anyio.sleep_forever()
        recorder.record("ready")
        if args.mode == "lock":
            await run_lock_loop(bus, args, recorder)
        else:
            await run_heartbeat_loop(bus, args, recorder)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("mode", choices=MODES)
    parser.add_argument("--url", required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--agent", default="worker")
    parser.add_argument("--instance", required=True)
    parser.add_argument("--records", required=True)
    parser.add_argument("--lease-ttl", type=float, default=2.0)
    parser.add_argument("--status", default="busy")
    parser.add_argument("--lock-name", default="nightly")
    parser.add_argument("--lock-ttl", type=float, default=2.0)
    parser.add_argument("--hold", type=float, default=0.1)
    parser.add_argument("--gap", type=float, default=0.1)
    parser.add_argument("--hold-file", default="")
    parser.add_argument("--every", type=float, default=0.4)
    parser.add_argument("--sleep-on-run", type=int, default=0)
    return parser.parse_args(argv)


# ---- the test side ----------------------------------------------------------------------------


class AgentProcess:
    """A running ``presence_process.py`` and the records it wrote."""

    def __init__(self, instance: str, process: subprocess.Popen[bytes], records: Path) -> None:
        self.instance = instance
        self.process = process
        self.records_path = records
        self.killed_at: float | None = None  # wall time of the SIGKILL

    def records(self, event: str | None = None) -> list[dict[str, Any]]:
        if not self.records_path.exists():
            return []
        lines = self.records_path.read_text("utf-8").splitlines()
        # A line is complete once it ends with "}" (the writer fsyncs whole lines).
        parsed = [json.loads(line) for line in lines if line.endswith("}")]
        return [r for r in parsed if event is None or r["event"] == event]

    async def wait_records(
        self, event: str, count: int = 1, *, timeout: float = 10.0
    ) -> list[dict[str, Any]]:
        """Wait until ``count`` records of ``event`` exist; fail if the process dies first."""

        def enough() -> list[dict[str, Any]]:
            found = self.records(event)
            return found if len(found) >= count else []

        what = f"{count} {event!r} record(s) of {self.instance}"
        return await wait_for(enough, timeout=timeout, what=what, agents=[self])

    def check_alive(self) -> None:
        if self.killed_at is None and self.process.poll() is not None:
            log = self.records_path.with_suffix(".log").read_text("utf-8", "replace")[-2000:]
            raise AssertionError(f"agent process {self.instance} exited:\n{log}")

    def kill(self) -> float:
        """SIGKILL the process; returns the wall time of the kill (as the records use)."""
        if self.process.poll() is None:
            self.killed_at = time.time()
            self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        return self.killed_at if self.killed_at is not None else time.time()


async def wait_for(
    check: Callable[[], T | None], *, timeout: float, what: str, agents: Iterable[AgentProcess] = ()
) -> T:
    """Re-run ``check`` until it returns something truthy; fail after ``timeout`` seconds (or
    at once when one of ``agents`` died unexpectedly)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        for agent in agents:
            agent.check_alive()
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await anyio.sleep(POLL)


class Processes:
    """Starts ``presence_process.py`` agents in ``directory``; ``kill_all()`` ends them."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.started: list[AgentProcess] = []

    def start(
        self, mode: str, url: str, namespace: str, *, instance: str, **options: Any
    ) -> AgentProcess:
        """Start ``presence_process.py MODE``; ``options`` are its flags (``lock_ttl=2``...)."""
        records = self.directory / f"{instance}.jsonl"
        command = [
            sys.executable, str(SCRIPT), mode, "--url", url, "--namespace", namespace,
            "--instance", instance, "--records", str(records),
        ]  # fmt: skip
        for name, value in options.items():
            command += [f"--{name.replace('_', '-')}", str(value)]
        with records.with_suffix(".log").open("wb") as log:
            process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        agent = AgentProcess(instance, process, records)
        self.started.append(agent)
        return agent

    def kill_all(self) -> None:
        for agent in self.started:
            agent.kill()


if __name__ == "__main__":
    anyio.run(main, parse_args(), backend="asyncio")
