"""The exceptions agentbus raises.

Every error is an ``AgentBusError``; where a builtin fits, the error inherits it too, so
``except ValueError`` keeps working for callers that do not know agentbus::

    AgentBusError
    ├── ConfigError (ValueError)                  bad agentbus.json / environment / arguments
    ├── InvalidAgentIdError (ValueError)          an agent id outside [a-z0-9._-]{1,64}
    ├── InvalidNameError (ValueError)             a lock, topic or other name that breaks a rule
    ├── BusClosedError (RuntimeError)             the bus was used after aclose()
    ├── MessageError
    │   ├── MessageTooLargeError (ValueError)     payload over bus.maxPayloadBytes
    │   ├── EncodeError (TypeError)               data msgspec cannot encode
    │   └── DecodeError (ValueError)              an entry that is not a valid envelope
    ├── RequestTimeoutError (TimeoutError)        no reply within the deadline
    ├── RemoteError                               the remote handler raised (its type, text)
    ├── LockError
    │   ├── LockNotAcquiredError                  the lock is held by somebody else
    │   └── LockLostError                         renewal could not be confirmed in time
    ├── StaleFencingTokenError                    a write carried an older fencing token
    └── BackendError                              Redis or a database failed
        ├── BackendUnavailableError (ConnectionError)
        └── BackendTimeoutError (TimeoutError)

Driver exceptions are translated at one boundary and kept as ``__cause__``.
"""

from __future__ import annotations


class AgentBusError(Exception):
    """Base class of every error agentbus raises."""


class ConfigError(AgentBusError, ValueError):
    """The configuration is invalid; the message names the source, the key and the fix."""


class InvalidAgentIdError(AgentBusError, ValueError):
    """An agent id breaks the naming rule."""


class InvalidNameError(AgentBusError, ValueError):
    """A lock, topic, message type or other name breaks its rule."""


class BusClosedError(AgentBusError, RuntimeError):
    """The bus was used after it was closed."""


class MessageError(AgentBusError):
    """A message could not be built, written or read."""


class MessageTooLargeError(MessageError, ValueError):
    """The encoded payload is larger than ``bus.maxPayloadBytes``; nothing was written."""


class EncodeError(MessageError, TypeError):
    """The data cannot be encoded (msgspec supports dicts, lists, str, int, float, bool, None,
    bytes, datetimes, UUIDs, dataclasses and msgspec Structs)."""


class DecodeError(MessageError, ValueError):
    """A stream entry is not a valid envelope."""


class RequestTimeoutError(AgentBusError, TimeoutError):
    """No reply arrived before the request's deadline."""


class RemoteError(AgentBusError):
    """The handler that served a request raised.

    Attributes:
        remote_type: the exception class name on the remote side.
        remote_message: its message.
    """

    def __init__(self, remote_type: str, remote_message: str) -> None:
        super().__init__(f"{remote_type}: {remote_message}")
        self.remote_type = remote_type
        self.remote_message = remote_message


class LockError(AgentBusError):
    """Base class of lock errors."""


class LockNotAcquiredError(LockError):
    """The lock is held by another holder and could not be acquired in time."""


class LockLostError(LockError):
    """The lock's renewal could not be confirmed, so the protected body was cancelled."""


class StaleFencingTokenError(AgentBusError):
    """A write carried a fencing token older than one already seen for the same name."""


class BackendError(AgentBusError):
    """Redis or a database failed; the driver's exception is the ``__cause__``."""


class BackendUnavailableError(BackendError, ConnectionError):
    """The backend cannot be reached."""


class BackendTimeoutError(BackendError, TimeoutError):
    """The backend did not answer in time."""
