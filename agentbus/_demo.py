"""What ``agentbus demo`` shows: the embedded default, end to end.

It grows with the project. Now: the resolved configuration, the project Redis (and that it is
configured for a bus), the SQLite file, and two agents on the bus — a message, a request/reply,
an event, a poison message that ends in the dead letters, presence and agent state, a fenced
family-wide lock, a heartbeat two agents race for, and the dashboard snapshot.
"""

from __future__ import annotations

import json
import sqlite3
from functools import partial

import anyio
import redis.asyncio as aioredis

from ._bus import AgentBus
from ._config import Config
from ._errors import RemoteError
from ._ids import uuid7
from .presence import HeartbeatRun
from .streams import DeadLetter, Message


def _say(text: str = "") -> None:
    print(text, flush=True)


async def _check_redis(config: Config) -> dict[str, str]:
    client = aioredis.Redis.from_url(config.storage.redis.url, socket_timeout=5)
    try:
        await client.ping()
        info = await client.info("server")
        settings = await client.config_get("appendonly")
        settings |= await client.config_get("maxmemory-policy")
        return {
            "redis_version": str(info.get("redis_version")),
            "appendonly": str(settings["appendonly"]),
            "maxmemory-policy": str(settings["maxmemory-policy"]),
        }
    finally:
        await client.aclose()


def _create_sqlite(config: Config) -> str:
    path = config.storage.sqlite.path
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path)
    try:
        mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        return str(mode)
    finally:
        connection.close()


async def _two_agents(config: Config) -> None:
    """A planner and a researcher: a task, a question, an event, and a poison message."""
    planner_id, researcher_id = "demo-planner", "demo-researcher"
    task_key = f"task-{uuid7()}"  # a new task per run; resending it within the run is a no-op
    handled = anyio.Event()
    async with (
        AgentBus(planner_id, config=config) as planner,
        AgentBus(researcher_id, config=config, retry_base=0.05) as researcher,
    ):

        @researcher.handler("task.assign")
        async def on_task(msg: Message) -> None:
            _say(f"  {researcher_id} got {msg.type} {msg.data} from {msg.sender}")
            handled.set()

        @researcher.handler("question")
        async def on_question(msg: Message) -> dict[str, str]:
            return {"answer": f"{msg.data['q']} -> 42"}

        @researcher.handler("poison")
        async def on_poison(msg: Message) -> None:
            raise ValueError(f"cannot digest {msg.data!r} (attempt {msg.deliveries})")

        async with anyio.create_task_group() as tg, planner.subscribe("task.*") as events:
            tg.start_soon(researcher.serve)
            task_id = await planner.send(
                researcher_id,
                "task.assign",
                {"task": "read the changelog"},
                idempotency_key=task_key,
            )
            again = await planner.send(
                researcher_id,
                "task.assign",
                {"task": "read the changelog"},
                idempotency_key=task_key,
            )
            _say(f"  {planner_id} sent task.assign {task_id} (resent with the same "
                 f"idempotency key: same id {again == task_id})")  # fmt: skip
            await handled.wait()
            reply = await planner.request(researcher_id, "question", {"q": "meaning"}, timeout=5)
            _say(f"  request/reply: {reply.data}")
            await researcher.publish("task.done", {"task_id": task_id})
            with anyio.fail_after(5):
                async for event in events:
                    _say(f"  event {event.topic} from {event.sender}: {event.data}")
                    break
            poison_id = await planner.send(researcher_id, "poison", {"bad": True})
            letters: list[DeadLetter] = []
            with anyio.fail_after(10):
                while not letters:
                    letters = [d for d in await researcher.dead_letters()
                               if d.envelope_id == poison_id]  # fmt: skip
                    await anyio.sleep(0.05)
            letter = letters[0]
            _say(f"  dead letter {letter.envelope_id}: reason={letter.reason} after "
                 f"{letter.attempts} attempts, {letter.error_type}: "
                 f"{letter.error_message}")  # fmt: skip
            stats = await researcher.mailbox_stats()
            _say(f"  {researcher_id} mailbox: depth={stats.depth} pending={stats.pending} "
                 f"dead_letters={stats.dead_letters}")  # fmt: skip
            try:
                await planner.request(researcher_id, "poison", {}, timeout=5)
            except RemoteError as exc:
                _say(f"  a failing request answers at once with RemoteError: {exc}")
            await researcher.purge_dead_letters()
            await _presence_and_heartbeat(planner, researcher)
            await _shared_storage(planner, researcher)
            await _shared_knowledge(planner, researcher)
            tg.cancel_scope.cancel()


async def _shared_storage(planner: AgentBus, researcher: AgentBus) -> None:
    """Memory, tasks with dependencies and a team, in the SQLite file, through ``bus.storage``."""
    memory = researcher.storage.memory
    await memory.create_item("The deploy key rotates every Monday at 09:00 UTC",
                             visibility="family")  # fmt: skip
    await memory.create_item("Backups of the build cache are kept for 14 days")
    again = await memory.create_item("The deploy key rotates every Monday at 09:00 UTC",
                                     visibility="family")  # fmt: skip
    _say(f"  memory: the same fact twice is one item, reinforced {again.reinforcement_count}x")
    hits = await planner.storage.memory.search_items("deploy key", mode="keyword")
    _say(f"  {planner.agent_id} searches 'deploy key' and sees the researcher's family memory: "
         f"{[hit.item.summary for hit in hits][:1]}")  # fmt: skip
    private = await planner.storage.memory.search_items("backups", mode="keyword")
    _say(f"  ...but not its private one: {len(private)} hits for 'backups'")
    tasks = planner.storage.tasks
    project = f"demo-{uuid7()[-8:]}"
    worker = researcher.agent_id
    fetch = await tasks.create_task(
        "Fetch the changelog", priority="high", project=project, assignee=worker,
        visibility="family",
    )  # fmt: skip
    summarise = await tasks.create_task(
        "Summarise it", depends_on=[fetch.id], project=project, assignee=worker,
        visibility="family",
    )  # fmt: skip
    _say(f"  tasks: {fetch.short_id} {fetch.status}, {summarise.short_id} {summarise.status} "
         f"(waits for {fetch.short_id})")  # fmt: skip
    await researcher.storage.tasks.update_task(fetch.id, status="completed")
    after = await tasks.get_task(summarise.id)
    _say(f"  {researcher.agent_id} completes {fetch.short_id}: {summarise.short_id} is now "
         f"{after.status if after else '?'}")  # fmt: skip
    team = await planner.storage.teams.create_team(f"demo-team-{project}",
                                                   members=[researcher.agent_id])  # fmt: skip
    sent = await planner.broadcast("task.assign", {"project": project}, team=team.id)
    _say(f"  team broadcast to {sorted(sent)}")
    for task in (summarise, fetch):
        await tasks.delete_task(task.id)
    await planner.storage.teams.disband_team(team.id)


async def _shared_knowledge(planner: AgentBus, researcher: AgentBus) -> None:
    """A collection shared by grant (checked inside the search), then a service key."""
    kb = researcher.storage.knowledge
    runbooks = await kb.create_collection(f"runbooks-{uuid7()[-8:]}")
    await kb.ingest_document(
        runbooks.id,
        "Deploys",
        "Deploys roll out in three waves. "
        "Roll back with the release tool if the error rate doubles.",
    )
    query = "roll back release"

    async def planner_sees() -> int:
        return len(await planner.storage.knowledge.search(query, mode="keyword"))

    _say(f"  knowledge: {researcher.agent_id} owns a collection; {planner.agent_id} finds "
         f"{await planner_sees()} hits for '{query}'")  # fmt: skip
    await kb.grant(runbooks.id, planner.agent_id, "read")
    _say(f"  after grant(read): {await planner_sees()} hit(s)")
    await kb.revoke(runbooks.id, planner.agent_id)
    _say(f"  after revoke: {await planner_sees()} hits")
    await kb.delete_collection(runbooks.id)
    keys = planner.storage.service_keys
    await keys.put("demo-token", "s3cr3t-value")
    secret = await keys.get("demo-token")
    _say(f"  service key stored AES-GCM encrypted; read back as {secret!r}, "
         f"matches: {secret is not None and secret.reveal() == 's3cr3t-value'}")  # fmt: skip
    await keys.delete("demo-token")


async def _presence_and_heartbeat(planner: AgentBus, researcher: AgentBus) -> None:
    """Who is online, what they are doing, a fenced lock and a heartbeat that runs once."""
    await researcher.set_state(status="busy", task="read the changelog")
    state = await planner.get_state(researcher.agent_id)
    _say(f"  state of {state.agent}: {state.status} {state.fields} (online={state.online})")
    snap = await planner.online()
    for agent in snap.agents.values():
        if agent.agent in (planner.agent_id, researcher.agent_id):
            hosts = ", ".join(f"{i.instance}@{i.host}" for i in agent.instances)
            _say(f"  online: {agent.agent} ({hosts})")
    async with planner.lock("nightly-report", ttl=5, family=True) as lease:
        _say(f"  lock nightly-report held with fencing token {lease.fencing_token}")
        await planner.fenced_write("report", lease.fencing_token, {"by": planner.agent_id},
                                   family=True)  # fmt: skip
    runs: list[str] = []

    async def beat(run: HeartbeatRun) -> None:
        runs.append(run.runner.split("/")[0])

    # Two agents race for the same family-wide heartbeat: each window runs once, not twice.
    with anyio.move_on_after(1.3):
        async with anyio.create_task_group() as beats:
            for bus in (planner, researcher):
                beats.start_soon(partial(bus.run_heartbeat, beat, every=0.5, name="demo-beat",
                                         family=True))  # fmt: skip
    last = await planner.last_heartbeat("demo-beat", family=True)
    _say(f"  heartbeat every 0.5 s raced by two agents: {len(runs)} runs ({', '.join(runs)}); "
         f"last: token {last.fencing_token if last else '-'}, outcome "
         f"{last.outcome if last else '-'}")  # fmt: skip
    family = await planner.snapshot()
    for agent_snap in family.agents:
        if agent_snap.agent in (planner.agent_id, researcher.agent_id):
            _say(f"  dashboard: {agent_snap.agent} online={agent_snap.online} "
                 f"status={agent_snap.state.status} depth={agent_snap.mailbox.depth} "
                 f"dead_letters={agent_snap.mailbox.dead_letters}")  # fmt: skip
    await researcher.set_state(status="idle", task=None)


def run_demo(config: Config) -> int:
    _say(f"agentbus demo — configuration from {config.source}")
    summary = {
        "backend": config.storage.backend,
        "redis": config.storage.redis.url,
        "sqlite": str(config.storage.sqlite.path),
        "namespace": config.bus.namespace,
    }
    _say(json.dumps(summary, indent=2))
    redis_facts = anyio.run(_check_redis, config)
    _say(
        f"redis {config.storage.redis.url} answers PING: version {redis_facts['redis_version']}, "
        f"appendonly={redis_facts['appendonly']}, "
        f"maxmemory-policy={redis_facts['maxmemory-policy']}"
    )
    if redis_facts["maxmemory-policy"] != "noeviction":
        _say("  warning: a bus needs maxmemory-policy noeviction, or Redis may drop messages")
    journal = _create_sqlite(config)
    _say(f"sqlite {config.storage.sqlite.path} ready (journal_mode={journal})")
    _say("two agents on the bus:")
    anyio.run(_two_agents, config)
    _say("done: mailboxes, requests, events, presence, locks and heartbeats on this Redis; "
         f"memory, tasks, teams, knowledge and service keys in "
         f"{config.storage.sqlite.path}")  # fmt: skip
    return 0
