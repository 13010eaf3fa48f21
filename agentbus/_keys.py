"""Every Redis key agentbus uses, in one place.

Layout (``ns`` is ``bus.namespace``, default ``agentbus``)::

    ns:{agent}:mbox               stream; one consumer group "workers" for all instances
    ns:{agent}:dlq                stream of dead letters
    ns:{agent}:delayed            sorted set: retries due later (score = due time in ms)
    ns:{agent}:dedup:{key}        string: idempotency key -> first envelope id (expires, dedupTtl)
    ns:{agent}:effect:{key}       string: effect key already applied (expires)
    ns:{agent}:state              hash: the agent's state fields + updated_at
    ns:{agent}:lease:{instance}   string with TTL: the instance is alive
    ns:{agent}:instances          sorted set: live instance -> lease expiry (ms)
    ns:{agent}:reply:{instance}   stream: answers to the instance's requests (expires)
    ns:{agent}:lock:{name}        string with TTL: holder token
    ns:{agent}:fence:{name}       integer: fencing-token counter of the lock
    ns:{agent}:fenced:{name}      hash: highest fencing token seen + the fenced value
    ns:{agent}:locks              hash: lock name -> JSON (holder, token, expiry) for the dashboard
    ns:{agent}:heartbeat:{name}   hash: the heartbeat's last window and last run
    ns:{agent}:running:{name}     string with TTL: a heartbeat run is in progress
    ns:{agent}:heartbeats         hash: heartbeat name -> JSON of its last run (dashboard)
    ns:registry                   hash: agent id -> JSON (last seen)
    ns:{~presence}:index          sorted set: "agent/instance" -> lease expiry (ms)
    ns:{~presence}:info           hash: "agent/instance" -> JSON instance info
    ns:{~presence}:version        integer: bumped by every join / leave / update
    ns:{~presence}:diffs          pub/sub channel of presence diffs
    ns:{~presence}:sweep          string with TTL: one sweep per interval, family-wide
    ns:{~family}:...              family-wide locks and heartbeats (same suffixes as an agent)
    ns:events:{topic}             pub/sub channel

The braces are a Redis Cluster hash tag on the agent id: all keys of one agent live in one slot, so
every Lua script (which touches one agent's keys) works on a cluster. ``~`` cannot occur in an
agent id, so ``{~presence}`` and ``{~family}`` never collide with an agent. No script touches keys
of two tags.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._ids import validate_agent_id

CONSUMER_GROUP = "workers"

FAMILY = "~family"
"""The scope of family-wide locks and heartbeats: used where an agent id goes in a key."""


@dataclass(frozen=True, slots=True)
class Keys:
    """Key names for one namespace."""

    namespace: str = "agentbus"

    def _agent(self, agent: str, suffix: str) -> str:
        return f"{self.namespace}:{{{self._tag(agent)}}}:{suffix}"

    def mailbox(self, agent: str) -> str:
        return self._agent(agent, "mbox")

    def dead_letters(self, agent: str) -> str:
        return self._agent(agent, "dlq")

    def delayed(self, agent: str) -> str:
        return self._agent(agent, "delayed")

    def dedup(self, agent: str, idempotency_key: str) -> str:
        return self._agent(agent, f"dedup:{idempotency_key}")

    def effect(self, agent: str, effect_key: str) -> str:
        return self._agent(agent, f"effect:{effect_key}")

    def state(self, agent: str) -> str:
        return self._agent(agent, "state")

    def lease(self, agent: str, instance: str) -> str:
        return self._agent(agent, f"lease:{instance}")

    def instances(self, agent: str) -> str:
        return self._agent(agent, "instances")

    def reply(self, agent: str, instance: str) -> str:
        return self._agent(agent, f"reply:{instance}")

    def lock(self, agent: str, name: str) -> str:
        return self._agent(agent, f"lock:{name}")

    def fence(self, agent: str, name: str) -> str:
        return self._agent(agent, f"fence:{name}")

    def fenced(self, agent: str, name: str) -> str:
        return self._agent(agent, f"fenced:{name}")

    def locks(self, agent: str) -> str:
        return self._agent(agent, "locks")

    def heartbeat(self, agent: str, name: str) -> str:
        return self._agent(agent, f"heartbeat:{name}")

    def heartbeats(self, agent: str) -> str:
        return self._agent(agent, "heartbeats")

    def running(self, agent: str, name: str) -> str:
        return self._agent(agent, f"running:{name}")

    def _tag(self, agent: str) -> str:
        return agent if agent == FAMILY else validate_agent_id(agent)

    @property
    def presence_index(self) -> str:
        return f"{self.namespace}:{{~presence}}:index"

    @property
    def presence_info(self) -> str:
        return f"{self.namespace}:{{~presence}}:info"

    @property
    def presence_version(self) -> str:
        return f"{self.namespace}:{{~presence}}:version"

    @property
    def presence_diffs(self) -> str:
        return f"{self.namespace}:{{~presence}}:diffs"

    @property
    def presence_sweep(self) -> str:
        return f"{self.namespace}:{{~presence}}:sweep"

    @property
    def registry(self) -> str:
        return f"{self.namespace}:registry"

    def events(self, topic: str) -> str:
        return f"{self.namespace}:events:{topic}"

    @property
    def events_prefix(self) -> str:
        return f"{self.namespace}:events:"
