"""A bus agent in a process of its own, for tests that talk across processes.

Run as ``python tests/bus_echo_server.py REDIS_URL NAMESPACE AGENT``: it serves ``echo`` requests
(answering with the data and its process id) until it is terminated.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import anyio

from agentbus import AgentBus, Message, load_config


async def main(redis_url: str, namespace: str, agent: str) -> None:
    config = load_config(
        redis_url=redis_url, overrides={"bus": {"namespace": namespace, "leaseTtl": 2}}
    )
    async with AgentBus(agent, config=config) as bus:

        @bus.handler("echo")
        async def echo(message: Message) -> dict[str, Any]:
            return {"data": message.data, "pid": os.getpid(), "sender": message.sender}

        await bus.serve()


if __name__ == "__main__":
    anyio.run(main, *sys.argv[1:4])
