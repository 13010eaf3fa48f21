"""Presence, agent state, heartbeat locks and the dashboard snapshot.

Everything here also works without an ``AgentBus``: pass any ``redis.asyncio.Redis`` client and
``Keys(namespace)`` — that is how a read-only dashboard process uses it.
"""

from ._heartbeat import HeartbeatRun as HeartbeatRun
from ._heartbeat import last_heartbeat as last_heartbeat
from ._locks import LockLease as LockLease
from ._locks import read_fenced as read_fenced
from ._presence import (
    AgentPresence as AgentPresence,
)
from ._presence import (
    InstanceInfo as InstanceInfo,
)
from ._presence import (
    PresenceDiff as PresenceDiff,
)
from ._presence import (
    PresenceSnapshot as PresenceSnapshot,
)
from ._presence import (
    is_online as is_online,
)
from ._presence import (
    online as online,
)
from ._snapshot import (
    AgentSnapshot as AgentSnapshot,
)
from ._snapshot import (
    FamilySnapshot as FamilySnapshot,
)
from ._snapshot import (
    LockInfo as LockInfo,
)
from ._snapshot import (
    MailboxCounts as MailboxCounts,
)
from ._snapshot import (
    snapshot as snapshot,
)
from ._state import STATE_TOPIC as STATE_TOPIC
from ._state import AgentState as AgentState
from ._state import get_state as get_state
from ._watch import PresenceWatch as PresenceWatch
from ._watch import watch_presence as watch_presence

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
