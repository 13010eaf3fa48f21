"""One storage adapter for a family's memory, tasks, teams and agents: SQLite (embedded default)
and PostgreSQL + pgvector, behind one :class:`StorageAdapter` contract.

``get_storage_adapter(config)`` returns the opened adapter for ``storage.backend`` (one per config
and event loop); ``adapter.for_agent("scout")`` is the view that acts as one agent, and
``AgentBus.storage`` is that view for the bus's agent.
"""

from ._errors import (
    AmbiguousIdError as AmbiguousIdError,
    DependencyCycleError as DependencyCycleError,
    DimensionMismatchError as DimensionMismatchError,
    MigrationError as MigrationError,
    NotFoundError as NotFoundError,
    StaleWriteError as StaleWriteError,
    StorageError as StorageError,
    StorageUnavailableError as StorageUnavailableError,
    ValidationError as ValidationError,
)
from ._factory import (
    acquire_storage_adapter as acquire_storage_adapter,
    build_storage_adapter as build_storage_adapter,
    close_storage_adapters as close_storage_adapters,
    get_storage_adapter as get_storage_adapter,
    release_storage_adapter as release_storage_adapter,
)
from ._fence import Fence as Fence
from ._models import (
    PRIORITY_RANK as PRIORITY_RANK,
    UNASSIGNED as UNASSIGNED,
    AgentRecord as AgentRecord,
    Category as Category,
    Entity as Entity,
    Lesson as Lesson,
    MemoryItem as MemoryItem,
    MemoryStats as MemoryStats,
    Reflection as Reflection,
    Resource as Resource,
    SearchHit as SearchHit,
    Task as Task,
    TaskEvent as TaskEvent,
    Team as Team,
    TeamMember as TeamMember,
)
from ._postgres import PgAdapter as PgAdapter
from ._protocol import (
    AgentStore as AgentStore,
    MemoryStore as MemoryStore,
    StorageAdapter as StorageAdapter,
    TaskStore as TaskStore,
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
    "Fence",
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
