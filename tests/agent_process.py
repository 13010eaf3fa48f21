"""A consumer agent in a process of its own, for fault tests that SIGKILL it.

Run as ``python tests/agent_process.py --url URL --namespace NS --agent AGENT --instance ID
--records FILE [--mode MODE] [--lease-ttl S] [--slow S] [--effects-prefix PREFIX]``.

It serves messages of type ``job`` (``data = {"task": str, "mode": MODE?}``) and appends one JSON
line per event to ``--records``, flushed and fsynced line by line, so a SIGKILL loses nothing that
was recorded::

    {"event": "ready" | "started" | "effect" | "done", "id": envelope id, "task": ...,
     "deliveries": n, "instance": ..., "pid": ..., "t": unix time}

What the handler does with a message (``data["mode"]``, else ``--mode``):

- ``work``: apply the effect (``INCR {effects-prefix}{task}``), record ``done``, return (acked).
- ``hold``: record ``started`` and never return: the entry stays pending, un-acked.
- ``effect-then-hold``: apply the effect, record ``effect``, then never return (a crash now falls
  in the window where an effect can repeat).
- ``slow``: sleep ``--slow`` seconds (awaiting, so the lease keeps being refreshed), record
  ``done``, return.

The handler's ``effect_key`` is the task, so a task whose effect was recorded is not run again.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import IO, Any

import anyio

from agentbus import AgentBus, Message, load_config

MODES = ("work", "hold", "effect-then-hold", "slow")


class Recorder:
    """Appends JSON lines and makes each one durable before the handler goes on."""

    def __init__(self, path: str, instance: str) -> None:
        self._file: IO[str] = open(path, "a", encoding="utf-8")  # noqa: SIM115 (lives as long as the process)
        self._instance = instance

    def record(self, event: str, message: Message | None = None) -> None:
        line: dict[str, Any] = {"event": event, "instance": self._instance, "pid": os.getpid()}
        if message is not None:
            line |= {"id": message.id, "task": message.data["task"],
                     "deliveries": message.deliveries}  # fmt: skip
        line["t"] = time.time()
        self._file.write(json.dumps(line) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())


async def main(args: argparse.Namespace) -> None:
    config = load_config(
        redis_url=args.url,
        overrides={"bus": {"namespace": args.namespace, "leaseTtl": args.lease_ttl}},
    )
    recorder = Recorder(args.records, args.instance)
    async with AgentBus(
        args.agent, config=config, instance_id=args.instance, retry_base=0.05,
        reclaim_interval=0.2, trim_interval=3600,
    ) as bus:  # fmt: skip

        async def apply_effect(task: str) -> None:
            await bus.redis.incr(f"{args.effects_prefix}{task}")

        @bus.handler("job", effect_key=lambda m: str(m.data["task"]))
        async def job(message: Message) -> None:
            mode = message.data.get("mode", args.mode)
            recorder.record("started", message)
            if mode == "work":
                await apply_effect(message.data["task"])
            elif mode == "hold":
                await anyio.sleep_forever()
            elif mode == "effect-then-hold":
                await apply_effect(message.data["task"])
                recorder.record("effect", message)
                await anyio.sleep_forever()
            elif mode == "slow":
                await anyio.sleep(args.slow)
            else:
                raise ValueError(f"unknown mode {mode!r}")
            recorder.record("done", message)

        recorder.record("ready")
        await bus.serve(concurrency=64)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--agent", default="worker")
    parser.add_argument("--instance", required=True)
    parser.add_argument("--records", required=True)
    parser.add_argument("--mode", choices=MODES, default="work")
    parser.add_argument("--lease-ttl", type=float, default=2.0)
    parser.add_argument("--slow", type=float, default=3.0)
    parser.add_argument("--effects-prefix", default="effects:")
    return parser.parse_args(argv)


if __name__ == "__main__":
    anyio.run(main, parse_args(), backend="asyncio")
