"""One storage adapter for a family's memory, tasks, teams and agents: SQLite (embedded default)
and PostgreSQL + pgvector, behind one :class:`StorageAdapter` contract.

``get_storage_adapter(config)`` returns the opened adapter for ``storage.backend`` (one per config
and event loop); ``adapter.for_agent("scout")`` is the view that acts as one agent, and
``AgentBus.storage`` is that view for the bus's agent.
"""

from ._errors import (
    AmbiguousIdError as AmbiguousIdError,
)
from ._errors import (
    DependencyCycleError as DependencyCycleError,
)
from ._errors import (
    DimensionMismatchError as DimensionMismatchError,
)
from ._errors import (
    MigrationError as MigrationError,
)
from ._errors import (
    NotFoundError as NotFoundError,
)
from ._errors import (
    StaleWriteError as StaleWriteError,
)
from ._errors import (
    StorageError as StorageError,
)
from ._errors import (
    StorageUnavailableError as StorageUnavailableError,
)
from ._errors import (
    ValidationError as ValidationError,
)
from ._factory import (
    acquire_storage_adapter as acquire_storage_adapter,
)
from ._factory import (
    build_storage_adapter as build_storage_adapter,
)
from ._factory import (
    close_storage_adapters as close_storage_adapters,
)
from ._factory import (
    get_storage_adapter as get_storage_adapter,
)
from ._factory import (
    release_storage_adapter as release_storage_adapter,
)
from ._models import (
    PRIORITY_RANK as PRIORITY_RANK,
)
from ._models import (
    UNASSIGNED as UNASSIGNED,
)
from ._models import (
    AgentRecord as AgentRecord,
)
from ._models import (
    Category as Category,
)
from ._models import (
    Entity as Entity,
)
from ._models import (
    Lesson as Lesson,
)
from ._models import (
    MemoryItem as MemoryItem,
)
from ._models import (
    MemoryStats as MemoryStats,
)
from ._models import (
    Reflection as Reflection,
)
from ._models import (
    Resource as Resource,
)
from ._models import (
    SearchHit as SearchHit,
)
from ._models import (
    Task as Task,
)
from ._models import (
    TaskEvent as TaskEvent,
)
from ._models import (
    Team as Team,
)
from ._models import (
    TeamMember as TeamMember,
)
from ._postgres import PgAdapter as PgAdapter
from ._protocol import (
    AgentStore as AgentStore,
)
from ._protocol import (
    MemoryStore as MemoryStore,
)
from ._protocol import (
    StorageAdapter as StorageAdapter,
)
from ._protocol import (
    TaskStore as TaskStore,
)
from ._protocol import (
    TeamStore as TeamStore,
)
from ._sqlite import SQLiteAdapter as SQLiteAdapter

__all__ = [
    "AgentRecord",
    "AgentStore",
    "AmbiguousIdError",
    "Category",
    "DependencyCycleError",
    "DimensionMismatchError",
    "Entity",
    "Lesson",
    "MemoryItem",
    "MemoryStats",
    "MemoryStore",
    "MigrationError",
    "NotFoundError",
    "PRIORITY_RANK",
    "PgAdapter",
    "Reflection",
    "Resource",
    "SQLiteAdapter",
    "SearchHit",
    "StaleWriteError",
    "StorageAdapter",
    "StorageError",
    "StorageUnavailableError",
    "Task",
    "TaskEvent",
    "TaskStore",
    "Team",
    "TeamMember",
    "TeamStore",
    "UNASSIGNED",
    "ValidationError",
    "acquire_storage_adapter",
    "build_storage_adapter",
    "close_storage_adapters",
    "get_storage_adapter",
    "release_storage_adapter",
]
