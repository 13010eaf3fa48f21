"""Every Redis key agentbus uses, in one place.

Layout (``ns`` is ``bus.namespace``, default ``agentbus``)::

    ns:{agent}:mbox               stream; one consumer group "workers" for all instances
    ns:{agent}:dlq                stream of dead letters
    ns:{agent}:delayed            sorted set: retries due later (score = due time in ms)
    ns:{agent}:dedup:{key}        string: idempotency key -> first envelope id (expires, dedupTtl)
    ns:{agent}:effect:{key}       string: effect key already applied (expires)
    ns:{agent}:state              hash: the agent's state fields + updated_at
    ns:{agent}:lease:{instance}   string with TTL: the instance is alive
    ns:{agent}:instances          hash: instance -> JSON metadata (since, host, pid)
    ns:{agent}:reply:{instance}   stream: answers to the instance's requests (expires)
    ns:{agent}:lock:{name}        string with TTL: holder token
    ns:{agent}:fence:{name}       integer: fencing-token counter / highest token seen
    ns:registry                   hash: agent id -> JSON (first seen, last seen)
    ns:presence                   sorted set: "agent/instance" -> lease expiry (ms)
    ns:events:{topic}             pub/sub channel

The braces are a Redis Cluster hash tag on the agent id: all keys of one agent live in one slot, so
every Lua script (which touches one agent's keys) works on a cluster. Global keys are never touched
by the same script as per-agent keys.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._ids import validate_agent_id

CONSUMER_GROUP = "workers"


@dataclass(frozen=True, slots=True)
class Keys:
    """Key names for one namespace."""

    namespace: str = "agentbus"

    def _agent(self, agent: str, suffix: str) -> str:
        return f"{self.namespace}:{{{validate_agent_id(agent)}}}:{suffix}"

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

    @property
    def registry(self) -> str:
        return f"{self.namespace}:registry"

    @property
    def presence(self) -> str:
        return f"{self.namespace}:presence"

    def events(self, topic: str) -> str:
        return f"{self.namespace}:events:{topic}"

    @property
    def events_prefix(self) -> str:
        return f"{self.namespace}:events:"
