"""Presence, agent state, heartbeat locks and the dashboard snapshot.

Everything here also works without an ``AgentBus``: pass any ``redis.asyncio.Redis`` client and
``Keys(namespace)`` — that is how a read-only dashboard process uses it.
"""

from ._heartbeat import HeartbeatRun as HeartbeatRun, last_heartbeat as last_heartbeat
from ._locks import LockLease as LockLease, read_fenced as read_fenced
from ._presence import (
    AgentPresence as AgentPresence,
    InstanceInfo as InstanceInfo,
    PresenceDiff as PresenceDiff,
    PresenceSnapshot as PresenceSnapshot,
    is_online as is_online,
    online as online,
)
from ._snapshot import (
    AgentSnapshot as AgentSnapshot,
    FamilySnapshot as FamilySnapshot,
    LockInfo as LockInfo,
    MailboxCounts as MailboxCounts,
    snapshot as snapshot,
)
from ._state import STATE_TOPIC as STATE_TOPIC, AgentState as AgentState, get_state as get_state
from ._watch import PresenceWatch as PresenceWatch, watch_presence as watch_presence

__all__ = [
    "AgentPresence",
    "AgentSnapshot",
    "AgentState",
    "FamilySnapshot",
    "HeartbeatRun",
    "InstanceInfo",
    "LockInfo",
    "LockLease",
    "MailboxCounts",
    "PresenceDiff",
    "PresenceSnapshot",
    "PresenceWatch",
    "STATE_TOPIC",
    "get_state",
    "is_online",
    "last_heartbeat",
    "online",
    "read_fenced",
    "snapshot",
    "watch_presence",
]
