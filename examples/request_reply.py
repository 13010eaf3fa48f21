"""Two agents: a planner asks a researcher a question and hands it a task.

    python examples/request_reply.py [redis-url]

Needs a Redis (``bash scripts/setup-redis.sh`` starts the project's on 6380).
"""

from __future__ import annotations

import sys

import anyio

from agentbus import AgentBus, Message, load_config


async def main(redis_url: str | None = None) -> list[str]:
    config = load_config(redis_url=redis_url, overrides={"bus": {"namespace": "example"}})
    seen: list[str] = []
    async with (
        AgentBus("planner", config=config) as planner,
        AgentBus("researcher", config=config) as researcher,
    ):
        done = anyio.Event()

        @researcher.handler("question")
        async def answer(msg: Message) -> dict[str, str]:
            return {"answer": f"you asked: {msg.data['q']}"}

        @researcher.handler("task.assign")
        async def work(msg: Message) -> None:
            seen.append(f"task {msg.data['task']} from {msg.sender}")
            done.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(researcher.serve)
            reply = await planner.request("researcher", "question", {"q": "why?"}, timeout=5)
            seen.append(reply.data["answer"])
            await planner.send("researcher", "task.assign", {"task": "t1"}, idempotency_key="t1")
            await done.wait()
            tg.cancel_scope.cancel()
    for line in seen:
        print(line)
    return seen


if __name__ == "__main__":
    anyio.run(main, sys.argv[1] if len(sys.argv) > 1 else None)
