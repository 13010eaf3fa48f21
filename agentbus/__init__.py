"""agentbus: durable mailboxes, events, presence, locks and shared storage for AI agent families."""

from ._bus import AgentBus as AgentBus
from ._config import (
    BusConfig as BusConfig,
)
from ._config import (
    Config as Config,
)
from ._config import (
    PostgresConfig as PostgresConfig,
)
from ._config import (
    RedisConfig as RedisConfig,
)
from ._config import (
    SQLiteConfig as SQLiteConfig,
)
from ._config import (
    StorageConfig as StorageConfig,
)
from ._config import (
    load_config as load_config,
)
from ._config import (
    parse_config as parse_config,
)
from ._errors import (
    AgentBusError as AgentBusError,
)
from ._errors import (
    BackendError as BackendError,
)
from ._errors import (
    BackendTimeoutError as BackendTimeoutError,
)
from ._errors import (
    BackendUnavailableError as BackendUnavailableError,
)
from ._errors import (
    BusClosedError as BusClosedError,
)
from ._errors import (
    ConfigError as ConfigError,
)
from ._errors import (
    DecodeError as DecodeError,
)
from ._errors import (
    EncodeError as EncodeError,
)
from ._errors import (
    InvalidAgentIdError as InvalidAgentIdError,
)
from ._errors import (
    InvalidNameError as InvalidNameError,
)
from ._errors import (
    LockError as LockError,
)
from ._errors import (
    LockLostError as LockLostError,
)
from ._errors import (
    LockNotAcquiredError as LockNotAcquiredError,
)
from ._errors import (
    MessageError as MessageError,
)
from ._errors import (
    MessageTooLargeError as MessageTooLargeError,
)
from ._errors import (
    RemoteError as RemoteError,
)
from ._errors import (
    RequestTimeoutError as RequestTimeoutError,
)
from ._errors import (
    StaleFencingTokenError as StaleFencingTokenError,
)
from ._ids import uuid7 as uuid7
from ._ids import validate_agent_id as validate_agent_id
from ._keys import Keys as Keys
from .streams import (
    DeadLetter as DeadLetter,
)
from .streams import (
    MailboxStats as MailboxStats,
)
from .streams import (
    Message as Message,
)
from .streams import (
    MessageStream as MessageStream,
)
from .streams import (
    ReceivedEvent as ReceivedEvent,
)
from .streams import (
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
