"""Storage errors (part of the AgentBusError tree)::

StorageError (AgentBusError)
├── ValidationError (ValueError)           bad input; nothing was written
│   └── DimensionMismatchError             an embedding of the wrong length
├── NotFoundError (LookupError)            no such row *visible to this agent*
├── AmbiguousIdError (LookupError)         a short task id matching several tasks
├── DependencyCycleError (ValueError)      a task dependency that would close a cycle
├── StaleWriteError                        a write carrying an older fencing token
├── MigrationError                         the schema cannot be brought up to date
└── StorageUnavailableError (ConnectionError)
"""

from __future__ import annotations

from .._errors import AgentBusError, StaleFencingTokenError


class StorageError(AgentBusError):
    """Base class of storage errors; the driver's exception is the ``__cause__``."""


class ValidationError(StorageError, ValueError):
    """The input is invalid; the message names the field and the rule."""


class DimensionMismatchError(ValidationError):
    """An embedding's length differs from ``storage.embeddingDim``."""


class NotFoundError(StorageError, LookupError):
    """No row with that id is visible to this agent (another agent's private row included)."""


class AmbiguousIdError(StorageError, LookupError):
    """A short id matches more than one row."""


class DependencyCycleError(StorageError, ValueError):
    """The dependency would make a task depend on itself."""


class StaleWriteError(StorageError, StaleFencingTokenError):
    """The write carried a fencing token older than one already seen for that name."""


class MigrationError(StorageError):
    """Migrations could not be applied."""


class StorageUnavailableError(StorageError, ConnectionError):
    """The database cannot be reached."""


class PermissionDeniedError(StorageError, PermissionError):
    """The agent can see the row but may not do this (e.g. grant on a collection it only reads)."""


class SecretDecryptionError(StorageError):
    """A stored secret cannot be decrypted: wrong master key, or the stored data was altered.
    The message never contains the secret."""
