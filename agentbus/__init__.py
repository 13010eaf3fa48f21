"""agentbus: durable mailboxes, events, presence, locks and shared storage for AI agent families."""

from ._bus import AgentBus as AgentBus
from ._config import (
    BusConfig as BusConfig,
    Config as Config,
    PostgresConfig as PostgresConfig,
    RedisConfig as RedisConfig,
    SQLiteConfig as SQLiteConfig,
    StorageConfig as StorageConfig,
    load_config as load_config,
    parse_config as parse_config,
)
from ._errors import (
    AgentBusError as AgentBusError,
    BackendError as BackendError,
    BackendTimeoutError as BackendTimeoutError,
    BackendUnavailableError as BackendUnavailableError,
    BusClosedError as BusClosedError,
    ConfigError as ConfigError,
    DecodeError as DecodeError,
    EncodeError as EncodeError,
    InvalidAgentIdError as InvalidAgentIdError,
    InvalidNameError as InvalidNameError,
    LockError as LockError,
    LockLostError as LockLostError,
    LockNotAcquiredError as LockNotAcquiredError,
    MessageError as MessageError,
    MessageTooLargeError as MessageTooLargeError,
    RemoteError as RemoteError,
    RequestTimeoutError as RequestTimeoutError,
    StaleFencingTokenError as StaleFencingTokenError,
)
from ._ids import uuid7 as uuid7, validate_agent_id as validate_agent_id
from ._keys import Keys as Keys
from .storage._fence import Fence as Fence
from .streams import (
    DeadLetter as DeadLetter,
    MailboxStats as MailboxStats,
    Message as Message,
    MessageStream as MessageStream,
    ReceivedEvent as ReceivedEvent,
    Subscription as Subscription,
)

__version__ = "0.1.0"

__all__ = [
    "AgentBus",
    "AgentBusError",
    "BackendError",
    "BackendTimeoutError",
    "BackendUnavailableError",
    "BusClosedError",
    "BusConfig",
    "Config",
    "ConfigError",
    "DeadLetter",
    "DecodeError",
    "EncodeError",
    "Fence",
    "InvalidAgentIdError",
    "InvalidNameError",
    "Keys",
    "LockError",
    "LockLostError",
    "LockNotAcquiredError",
    "MailboxStats",
    "Message",
    "MessageError",
    "MessageStream",
    "MessageTooLargeError",
    "PostgresConfig",
    "ReceivedEvent",
    "RedisConfig",
    "RemoteError",
    "RequestTimeoutError",
    "SQLiteConfig",
    "StaleFencingTokenError",
    "StorageConfig",
    "Subscription",
    "load_config",
    "parse_config",
    "uuid7",
    "validate_agent_id",
]
