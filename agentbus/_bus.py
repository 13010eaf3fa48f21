"""``AgentBus``: one agent's connection to the family — mailbox, requests, events, leases."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, cast

import anyio
import redis.asyncio as aioredis
from anyio.abc import TaskGroup

from ._config import Config, load_config
from ._errors import BackendError, BusClosedError, RemoteError, RequestTimeoutError
from ._ids import new_instance_id, validate_agent_id, validate_name
from ._keys import CONSUMER_GROUP, FAMILY, Keys
from .presence._heartbeat import HeartbeatRun, HeartbeatScripts, last_heartbeat, run_heartbeat
from .presence._lease import InstanceLease
from .presence._locks import Lock, LockKeeper, LockScripts, fenced_write, read_fenced
from .presence._presence import (
    SWEEP_INTERVAL,
    PresenceScripts,
    PresenceSnapshot,
    is_online,
    online,
    sweep,
)
from .presence._snapshot import FamilySnapshot, snapshot
from .presence._state import AgentState, get_state, set_state
from .presence._watch import PresenceWatch
from .storage._factory import acquire_storage_adapter, release_storage_adapter
from .storage._lazy import LazyStorage
from .storage._protocol import StorageAdapter
from .streams._consumer import ConsumerSettings, MailboxConsumer, Sink
from .streams._dead_letters import DeadLetter
from .streams._envelope import Envelope
from .streams._events import Subscription, publish
from .streams._handlers import EffectKey, Handler, HandlerPool, HandlerSpec, MessageStream
from .streams._mailbox_admin import (
    MailboxStats,
    list_dead_letters,
    mailbox_stats,
    purge_dead_letters,
    replay_dead_letter,
)
from .streams._maintenance import run_delayed_mover, run_reclaimer, run_trimmer
from .streams._message import Message
from .streams._redis import make_client, map_redis_errors
from .streams._replies import ReplyListener
from .streams._scripts import Scripts
from .streams._sender import ERROR_MESSAGE_HEADER, ERROR_TYPE_HEADER, Sender

OutgoingMessage = tuple[str, str, Any]


class AgentBus:
    """One running instance of an agent on the bus.

    Use as ``async with AgentBus("planner", config=cfg) as bus: ...``. Entering connects, takes the
    instance lease (refreshed every TTL/3) and registers the agent; leaving releases the lease at
    once, flushes acks and removes the reply stream.

    Args:
        agent_id: the agent (lower-case letters, digits, ``-``, ``_``, ``.``; 1-64 characters).
        config: defaults to :func:`agentbus.load_config()`.
        redis: use this client instead of creating one (the bus then does not close it, and its
            retry settings are the caller's: redis-py retries commands by default, which can
            duplicate an XADD).
        instance_id: defaults to a random id; must follow the agent-id rule.
        metadata: shown with the instance in presence and the dashboard.
        batch_size / prefetch: how many entries one read takes / how many unsettled messages
            this instance holds at most.
        retry_base / retry_cap: retry backoff in seconds (doubling per attempt, with jitter).
        reclaim_interval / trim_interval: seconds between reclaim rounds / retention trims.
    """

    def __init__(
        self,
        agent_id: str,
        *,
        config: Config | None = None,
        redis: aioredis.Redis | None = None,
        instance_id: str | None = None,
        metadata: Mapping[str, str] | None = None,
        batch_size: int = 100,
        prefetch: int = 200,
        retry_base: float = 0.5,
        retry_cap: float = 60.0,
        reclaim_interval: float | None = None,
        trim_interval: float = 10.0,
    ) -> None:
        self.agent_id = validate_agent_id(agent_id)
        self.instance_id = validate_agent_id(instance_id or new_instance_id())
        self.config = config if config is not None else load_config()
        for name, value in (("batch_size", batch_size), ("prefetch", prefetch)):
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value!r}")
        if prefetch < batch_size:
            raise ValueError(f"prefetch ({prefetch}) must be at least batch_size ({batch_size})")
        bus = self.config.bus
        self.keys = Keys(bus.namespace)
        self._client = redis if redis is not None else make_client(self.config.storage.redis.url)
        self._owns_client = redis is None
        self._scripts = Scripts(self._client)
        self._lock_scripts = LockScripts(self._client)
        self._lock_keeper = LockKeeper()
        self._sender = Sender(
            self._client, self.keys, self._scripts, sender=self.agent_id,
            max_payload_bytes=bus.max_payload_bytes, dedup_ttl=bus.dedup_ttl,
        )  # fmt: skip
        self._lease = InstanceLease(
            self._client, self.keys, agent=self.agent_id, instance=self.instance_id,
            ttl=bus.lease_ttl, metadata=dict(metadata or {}),
        )  # fmt: skip
        self._settings = ConsumerSettings(
            max_deliveries=bus.max_deliveries, lease_ttl=bus.lease_ttl, dedup_ttl=bus.dedup_ttl,
            batch_size=batch_size, prefetch=prefetch, retry_base=retry_base, retry_cap=retry_cap,
        )  # fmt: skip
        self._reclaim_interval = reclaim_interval or max(0.2, bus.lease_ttl / 3)
        self._trim_interval = trim_interval
        self._handlers: dict[str, HandlerSpec] = {}
        self._replies = ReplyListener(
            self._client, self.keys.reply(self.agent_id, self.instance_id)
        )
        self._replies_started = False
        self._tg: TaskGroup | None = None
        self._background: anyio.CancelScope | None = None  # needs the event loop: made on entry
        self._consuming = False
        self._consumers: list[MailboxConsumer] = []
        self._closed = False
        self._storage: StorageAdapter | None = None

    # ---- lifecycle -----------------------------------------------------------------------

    @property
    def redis(self) -> aioredis.Redis:
        """The bus's Redis client."""
        return self._client

    async def __aenter__(self) -> AgentBus:
        if self._closed or self._tg is not None:
            raise BusClosedError("an AgentBus can be entered once; create a new one")
        try:
            await self._lease.acquire()
        except BaseException:
            await self._close_client()
            raise
        self._background = anyio.CancelScope()
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self._run_background)
        return self

    async def _run_background(self) -> None:
        assert self._background is not None
        with self._background:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._lease.run)
                tg.start_soon(self._lock_keeper.run)
                tg.start_soon(self._sender.run)
                tg.start_soon(self._sweep_presence)

    async def _sweep_presence(self) -> None:
        """Remove dead instances from presence (gated to one sweep a second family-wide)."""
        scripts = PresenceScripts(self._client)
        while True:
            await anyio.sleep(SWEEP_INTERVAL * random.uniform(0.8, 1.2))
            try:
                await sweep(self._client, self.keys, scripts)
            except BackendError:
                continue  # Redis is away; the lease loop reconnects

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closed = True
        assert self._tg is not None
        assert self._background is not None
        self._background.cancel()
        self._tg.cancel_scope.cancel()
        try:
            await self._tg.__aexit__(exc_type, exc, tb)
        except BaseExceptionGroup as group:
            # Do not leak an ExceptionGroup out of a public context manager.
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise
        finally:
            with anyio.move_on_after(3, shield=True):
                await self._cleanup()

    async def _cleanup(self) -> None:
        for consumer in self._consumers:
            try:
                await consumer.flush_acks()
            except Exception:  # best effort: unflushed acks mean redelivery, not loss
                pass
        if self._storage is not None:
            self._storage = None
            try:
                await release_storage_adapter(self.config)
            except Exception:
                pass
        try:
            await self._lease.release()
            await self._client.delete(self._replies.stream)
        except Exception:
            pass
        await self._lock_scripts.aclose()
        await self._close_client()

    async def _close_client(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def aclose(self) -> None:
        """Stop the bus's background work. Idempotent; the ``async with`` block does the rest.

        Any later call on the bus raises :class:`BusClosedError`.
        """
        self._closed = True
        if self._background is not None:
            self._background.cancel()
        if self._tg is not None:
            self._tg.cancel_scope.cancel()

    def _check_open(self) -> TaskGroup:
        if self._closed or self._tg is None:
            raise BusClosedError(
                "the bus is closed (or not started): use it inside `async with AgentBus(...)`"
            )
        return self._tg

    # ---- sending -------------------------------------------------------------------------

    async def send(
        self,
        to: str,
        type: str,
        data: Any = None,
        *,
        idempotency_key: str | None = None,
        headers: Mapping[str, str] | None = None,
        ttl: float | None = None,
    ) -> str:
        """Append a message to ``to``'s mailbox; returns its envelope id (UUIDv7).

        A repeated ``idempotency_key`` (within ``bus.dedupTtl``) writes nothing and returns the
        first message's id. Concurrent sends are pipelined together automatically.

        Raises:
            InvalidAgentIdError, InvalidNameError: bad recipient or type.
            EncodeError, MessageTooLargeError: bad payload (nothing written).
            BackendError: Redis failed. If cancelled or failed, the message may or may not have
                been written: retry with the same ``idempotency_key`` to write it exactly once.
        """
        self._check_open()
        outgoing = self._sender.build(
            to, type, data, idempotency_key=idempotency_key, headers=headers, ttl=ttl
        )
        return await self._sender.write(outgoing)

    async def send_many(
        self, messages: Iterable[OutgoingMessage], *, ttl: float | None = None
    ) -> list[str]:
        """Send ``(to, type, data)`` tuples in one round trip; returns their envelope ids.

        Every message is validated and encoded before anything is written.
        """
        self._check_open()
        batch = [self._sender.build(to, type_, data, ttl=ttl) for to, type_, data in messages]
        return await self._sender.write_many(batch)

    async def broadcast(
        self, type: str, data: Any = None, *, to: Iterable[str] | None = None,
        team: str | None = None,
    ) -> dict[str, str]:  # fmt: skip
        """One message into each mailbox of ``to`` (default: every agent in the registry but
        this one; with ``team=``: the team's active members from storage, but this one), written
        in one round trip; returns ``{agent: envelope id}``.

        Raises:
            NotFoundError: ``team`` is not a team this agent can see.
            ValidationError: ``team`` is not a well-formed id (empty, too long, NUL).
        """
        self._check_open()
        if team is not None:
            if to is not None:
                raise ValueError("broadcast() takes to= or team=, not both")
            members = await self.storage.teams.team_members(team)
            to = [member.agent_id for member in members if member.agent_id != self.agent_id]
        if to is None:
            with map_redis_errors("reading the agent registry"):
                names = await self._client.hkeys(self.keys.registry)
            recipients = sorted(n.decode() if isinstance(n, bytes) else str(n) for n in names)
            recipients = [agent for agent in recipients if agent != self.agent_id]
        else:
            recipients = list(dict.fromkeys(to))
        batch = [self._sender.build(agent, type, data) for agent in recipients]
        ids = await self._sender.write_many(batch)
        return dict(zip(recipients, ids, strict=True))

    async def request(
        self, to: str, type: str, data: Any = None, *, timeout: float = 30.0,
        headers: Mapping[str, str] | None = None,
    ) -> Message:  # fmt: skip
        """Send a request and wait for the reply (a :class:`Message`; ``reply.data``).

        The reply comes back on this instance's own reply stream. Requests are not retried:
        a handler that raises answers with its error at once.

        Raises:
            RequestTimeoutError: no reply within ``timeout`` seconds (a late reply is dropped).
            RemoteError: the remote handler raised; ``remote_type`` / ``remote_message`` say what.
        """
        tg = self._check_open()
        if not timeout > 0:
            raise ValueError(f"timeout must be positive, got {timeout!r}")
        if not self._replies_started:
            self._replies_started = True
            await tg.start(self._replies.run)
        outgoing = self._sender.build(
            to, type, data, headers=headers, ttl=timeout, reply_to=self.instance_id
        )
        future = self._replies.expect(outgoing.envelope.id)
        try:
            with anyio.fail_after(timeout):
                await self._sender.write(outgoing)
                envelope = await future
        except TimeoutError:
            raise RequestTimeoutError(
                f"no reply from {to!r} to {type!r} within {timeout} s (is an instance of {to!r} "
                "serving that type?)"
            ) from None
        finally:
            self._replies.forget(outgoing.envelope.id)
        return self._reply_message(envelope)

    def _reply_message(self, envelope: Envelope) -> Message:
        error_type = envelope.headers.get(ERROR_TYPE_HEADER)
        if error_type is not None:
            raise RemoteError(error_type, envelope.headers.get(ERROR_MESSAGE_HEADER, ""))
        return Message(envelope, "", 1, _NO_CONSUMER)

    # ---- consuming -----------------------------------------------------------------------

    def handler(
        self, type: str, *, effect_key: EffectKey | None = None
    ) -> Callable[[Handler], Handler]:
        """Register ``fn`` for messages of ``type``; its return value answers requests.

        ``effect_key(msg)`` names the handler's effect: once a delivery succeeded, a redelivery
        of a message with the same key is acked without running the handler again.
        """
        validate_name("message type", type)

        def register(fn: Handler) -> Handler:
            if type in self._handlers:
                raise ValueError(f"a handler for {type!r} is already registered")
            name = getattr(fn, "__qualname__", repr(fn))
            self._handlers[type] = HandlerSpec(type, fn, name, effect_key)
            return fn

        return register

    async def serve(self, *, concurrency: int = 16) -> None:
        """Run the registered handlers until cancelled (or the bus closes).

        Acks after each handler returns; a handler that raises is retried with backoff and, after
        ``bus.maxDeliveries`` attempts, dead-lettered with its error. Messages without a handler
        are dead-lettered as ``no-handler``.
        """
        self._check_open()
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency!r}")
        consumer = self._start_consumer()
        pool = HandlerPool(consumer, dict(self._handlers), concurrency)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(pool.run)
                await self._consume(consumer, pool.put)
        finally:
            self._stop_consumer(consumer)

    def messages(self) -> MessageStream:
        """Consume manually: ``async for msg in bus.messages(): ...; await msg.ack()``."""
        tg = self._check_open()
        consumer = self._start_consumer()
        scope = anyio.CancelScope()
        stream = MessageStream(scope.cancel)

        async def run() -> None:
            failure: BaseException | None = None
            try:
                with scope:
                    await self._consume(consumer, stream.put)
            except Exception as exc:
                failure = exc
            finally:
                self._stop_consumer(consumer)
                stream.finish(failure)

        tg.start_soon(run)
        return stream

    def _start_consumer(self) -> MailboxConsumer:
        if self._consuming:
            raise RuntimeError("this bus is already consuming (serve() or messages())")
        self._consuming = True
        consumer = MailboxConsumer(
            self._client, self.keys, self._sender, agent=self.agent_id,
            instance=self.instance_id, settings=self._settings,
        )  # fmt: skip
        self._consumers.append(consumer)
        return consumer

    def _stop_consumer(self, consumer: MailboxConsumer) -> None:
        self._consuming = False
        # A stopped consumer is kept only while it may still receive acks (a message from a
        # closed messages() stream acked late); the bus flushes those on close.
        self._consumers = [c for c in self._consumers if c is consumer or c.has_buffered_acks()]

    async def _consume(self, consumer: MailboxConsumer, sink: Sink) -> None:
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(consumer.run_acker)
                tg.start_soon(run_delayed_mover, consumer, self._scripts)
                tg.start_soon(run_reclaimer, consumer, sink, self._reclaim_interval)
                tg.start_soon(run_trimmer, consumer, self._scripts, self._trim_interval)
                await consumer.run_reader(sink)
        finally:
            with anyio.move_on_after(2, shield=True):
                try:
                    await consumer.flush_acks()
                except Exception:
                    pass  # unflushed acks mean redelivery later, never loss

    # ---- events --------------------------------------------------------------------------

    async def publish(self, topic: str, data: Any = None) -> int:
        """Publish an event (best effort); returns how many subscribers got it."""
        self._check_open()
        return await publish(
            self._client, self.keys, self.agent_id, topic, data,
            self.config.bus.max_payload_bytes,
        )  # fmt: skip

    def subscribe(self, *patterns: str) -> Subscription:
        """Subscribe to topics by glob: ``async with bus.subscribe("task.*") as events``."""
        self._check_open()
        return Subscription(self._client, self.keys, patterns)

    # ---- mailbox administration ----------------------------------------------------------

    async def mailbox_stats(self, agent: str | None = None) -> MailboxStats:
        self._check_open()
        return await mailbox_stats(
            self._client, self.keys, validate_agent_id(agent or self.agent_id)
        )

    async def dead_letters(self, agent: str | None = None, *, count: int = 100) -> list[DeadLetter]:
        self._check_open()
        target = validate_agent_id(agent or self.agent_id)
        return await list_dead_letters(self._client, self.keys, target, count=count)

    async def replay_dead_letter(self, envelope_id: str, *, agent: str | None = None) -> bool:
        """Deliver a dead letter again (fresh attempts, no expiry; idempotency keys bypassed)."""
        self._check_open()
        target = validate_agent_id(agent or self.agent_id)
        return await replay_dead_letter(self._client, self.keys, target, envelope_id)

    async def purge_dead_letters(
        self, *, agent: str | None = None, older_than: float | None = None
    ) -> int:
        self._check_open()
        target = validate_agent_id(agent or self.agent_id)
        return await purge_dead_letters(self._client, self.keys, target, older_than=older_than)

    async def trim_mailbox(self) -> int:
        """Drop acked entries now (retention also runs by itself while consuming)."""
        self._check_open()
        with map_redis_errors("trimming the mailbox"):
            result = await self._scripts.trim(
                keys=[self.keys.mailbox(self.agent_id)], args=[CONSUMER_GROUP]
            )
        return int(result)

    # ---- presence, state, locks, heartbeats, snapshot --------------------------------------

    async def online(self) -> PresenceSnapshot:
        """Every online agent with its instances (since, last seen, metadata); one round trip."""
        self._check_open()
        return await online(self._client, self.keys)

    async def is_online(self, agent: str) -> bool:
        self._check_open()
        return await is_online(self._client, self.keys, validate_agent_id(agent))

    def watch_presence(self) -> PresenceWatch:
        """A snapshot of who is online, then join/leave/update diffs in version order."""
        self._check_open()
        return PresenceWatch(self._client, self.keys)

    async def update_presence(self, **metadata: str) -> None:
        """Replace this instance's presence metadata; watchers get an ``update`` diff."""
        self._check_open()
        await self._lease.update({key: str(value) for key, value in metadata.items()})

    async def set_state(self, **fields: Any) -> float:
        """Merge fields into this agent's state (``status=...`` shows on the dashboard) and
        publish an ``agent.state`` event; returns ``updated_at``.

        Raises:
            EncodeError: a value JSON cannot hold. InvalidNameError: a bad field name.
        """
        self._check_open()
        return await set_state(self._client, self.keys, self.agent_id, fields)

    async def get_state(self, agent: str | None = None) -> AgentState:
        """An agent's state; ``status`` reads ``offline`` once its last lease is gone."""
        self._check_open()
        return await get_state(self._client, self.keys, agent or self.agent_id)

    def lock(
        self, name: str, ttl: float, *, blocking: bool = True, timeout: float | None = None,
        family: bool = False,
    ) -> Lock:  # fmt: skip
        """A lock held for an ``async with`` body: ``async with bus.lock("nightly", ttl=30) as
        lease`` (``lease.fencing_token``). Scoped to this agent, or family-wide. Storage writes
        under the lock take ``fence=lease.fence``, which carries that scope.

        Raises:
            LockNotAcquiredError: not acquired (``blocking=False`` or ``timeout``).
            LockLostError: renewal failed; the body was cancelled before the TTL ran out.
        """
        self._check_open()
        return Lock(
            self._client, self.keys, self._lock_scripts, scope=self._scope(family), name=name,
            ttl=ttl, holder=f"{self.agent_id}/{self.instance_id}", keeper=self._lock_keeper,
            blocking=blocking, timeout=timeout,
        )  # fmt: skip

    async def fenced_write(
        self, name: str, token: int, data: Mapping[str, Any], *, family: bool = False
    ) -> None:
        """Write ``data`` under ``name`` unless a newer fencing token was seen there.

        Raises:
            StaleFencingTokenError: ``token`` is older than one already seen.
        """
        self._check_open()
        await fenced_write(
            self._client, self.keys, self._lock_scripts, scope=self._scope(family), name=name,
            token=token, data=data,
        )  # fmt: skip

    async def read_fenced(self, name: str, *, family: bool = False) -> tuple[int, dict[str, Any]]:
        self._check_open()
        return await read_fenced(self._client, self.keys, scope=self._scope(family), name=name)

    async def run_heartbeat(
        self,
        fn: Callable[[HeartbeatRun], Awaitable[Any]],
        *,
        every: float,
        name: str = "heartbeat",
        family: bool = False,
    ) -> None:
        """Run ``fn(run)`` at most once per ``every`` seconds across every process of this
        agent (or of the family), until cancelled. ``run.fencing_token`` fences its writes
        (``fenced_write``; storage writes take ``fence=run.fence``, in the heartbeat's scope)."""
        self._check_open()
        await run_heartbeat(
            self._client, self.keys, HeartbeatScripts(self._client), fn, every=every, name=name,
            scope=self._scope(family), runner=f"{self.agent_id}/{self.instance_id}",
        )  # fmt: skip

    async def last_heartbeat(
        self, name: str = "heartbeat", *, agent: str | None = None, family: bool = False
    ) -> HeartbeatRun | None:
        self._check_open()
        scope = FAMILY if family else validate_agent_id(agent or self.agent_id)
        return await last_heartbeat(self._client, self.keys, scope=scope, name=name)

    async def snapshot(self, *, cursor: str | None = None, limit: int = 1000) -> FamilySnapshot:
        """What the dashboard shows: every registered agent with presence, state, mailbox
        counters, locks and heartbeats, in two round trips per page."""
        self._check_open()
        return await snapshot(self._client, self.keys, cursor=cursor, limit=limit)

    def _scope(self, family: bool) -> str:
        return FAMILY if family else self.agent_id

    # ---- storage -------------------------------------------------------------------------

    @property
    def storage(self) -> StorageAdapter:
        """This agent's view of the shared storage adapter (``storage.backend`` of the config),
        opened on first use: ``await bus.storage.memory.create_item(...)``. One client for
        messages and knowledge; the bus gives the adapter back when it closes."""
        self._check_open()
        return cast(StorageAdapter, LazyStorage(self._acquire_storage, self.agent_id))

    async def _acquire_storage(self) -> StorageAdapter:
        if self._storage is None:
            self._storage = await acquire_storage_adapter(self.config)
        return self._storage


class _NoConsumer:
    """Replies are messages nobody settles; settling one is a no-op."""

    def ack(self, message: Message, effect_key: str | None = None) -> None:
        return None

    async def retry_or_dead_letter(self, message: Message, **_: Any) -> None:
        return None

    async def reply(self, message: Message, data: Any) -> None:
        return None


_NO_CONSUMER: Any = _NoConsumer()
