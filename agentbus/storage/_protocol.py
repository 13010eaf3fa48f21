"""The StorageAdapter contract: one interface, implemented by SQLite and PostgreSQL (Dual later).

Every backend passes the same contract test suite (tests/storage/). An adapter is scoped to one
agent with ``for_agent(agent_id)``; every memory/task/team call then acts as that agent: it sees
its own rows, rows of visibility ``family``/``public``, and ``team`` rows of teams it belongs to;
everything else is "not found" (``get_*`` returns None, mutations raise ``NotFoundError``) —
never a leak. Views share the adapter's connections; closing a view does not close the adapter.

Rules every backend follows (the contract suite checks them):
- ids: UUIDv7 text from :func:`agentbus.uuid7`; a caller may pass ``id=`` (migration, backfill),
  but only as a canonical lower-case UUID. Every store refuses an id to look up that is not
  text, empty, longer than ``MAX_ID_CHARS`` or holding NUL (``ValidationError``, reads included);
  a well-formed id of a row the agent cannot see is "not found" like one nobody stored; another
  agent named by a call follows the agent-id rule (``ValidationError``); filters are checked like
  the values they match. One implementation: ``_rules`` (``check_ref``, ``new_id``,
  ``check_agent_ref``); tasks also take their short id (``short_task_ref``).
- ``list_*`` order: newest first (``created_at`` desc, then ``id`` desc), default limit 50,
  max 1000; tasks: priority rank (urgent first), then ``due_at`` (nulls last), then
  ``created_at``, then ``id``.
- keyword search: every query term must match (AND) after the backend's stemming — PostgreSQL
  ``to_tsvector('english', …)`` with ``plainto_tsquery``; SQLite FTS5 ``porter`` tokenizer with
  the terms ANDed. Stemming and stop words differ (PostgreSQL drops English stop words, FTS5
  keeps them): result sets agree where both stem alike; rank order may differ.
- vector search: cosine distance; score = 1 - distance; agent-scoped search returns ``k`` rows
  whenever ``k`` are visible.
- hybrid: Reciprocal Rank Fusion, k = 60, over the keyword and vector lists (filters applied
  inside each branch), ties broken by id; without an embedding, hybrid is keyword only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from ._fence import Fence
from ._models import (
    AgentRecord,
    CandidateStatus,
    Category,
    CollectionVisibility,
    Entity,
    KnowledgeCollection,
    KnowledgeDocument,
    KnowledgeGrant,
    KnowledgeHit,
    Lesson,
    LiveCandidate,
    MemoryItem,
    MemoryStats,
    MemoryType,
    ModelFeedback,
    Observation,
    Permission,
    Priority,
    RatingResult,
    Reflection,
    Resource,
    SearchHit,
    SearchMode,
    ServiceKeyInfo,
    Task,
    TaskEvent,
    TaskStatus,
    Team,
    TeamMember,
    TeamRole,
    Visibility,
)
from ._secret import SecretValue

Vector = Sequence[float]


class MemoryStore(Protocol):
    # resources
    async def create_resource(
        self, url: str, *, modality: str = "text", caption: str | None = None,
        metadata: Mapping[str, Any] | None = None, id: str | None = None,
    ) -> Resource: ...  # fmt: skip
    async def get_resource(self, resource_id: str) -> Resource | None: ...
    async def list_resources(self, *, limit: int = 50) -> list[Resource]: ...

    # items
    async def create_item(
        self, summary: str, *, memory_type: MemoryType = "knowledge",
        visibility: Visibility = "private", team_id: str | None = None,
        resource_id: str | None = None, significance: float = 0.5,
        happened_at: datetime | None = None, metadata: Mapping[str, Any] | None = None,
        embedding: Vector | None = None, id: str | None = None,
    ) -> MemoryItem:  # fmt: skip
        """Create an item; the same summary (content hash) for the same agent returns the
        existing item reinforced instead of a duplicate."""
        ...

    async def create_items(self, items: Sequence[Mapping[str, Any]]) -> list[MemoryItem]:
        """Batched create (same keyword arguments as ``create_item`` per mapping)."""
        ...

    async def get_item(self, item_id: str) -> MemoryItem | None: ...
    async def list_items(
        self, *, memory_type: MemoryType | None = None, visibility: Visibility | None = None,
        limit: int = 50, offset: int = 0,
    ) -> list[MemoryItem]: ...  # fmt: skip
    async def delete_item(self, item_id: str) -> bool: ...
    async def reinforce_item(self, item_id: str) -> MemoryItem: ...
    async def embed_item(self, item_id: str, embedding: Vector) -> None: ...
    async def search_items(
        self, query: str, *, embedding: Vector | None = None, limit: int = 10,
        mode: SearchMode = "hybrid", memory_type: MemoryType | None = None,
        visibility: Visibility | None = None, own_only: bool = False,
    ) -> list[SearchHit]: ...  # fmt: skip

    # categories
    async def create_category(self, name: str, *, description: str | None = None) -> Category:
        """Get-or-create by name (case-insensitive) for this agent."""
        ...

    async def list_categories(self) -> list[Category]: ...
    async def link_item_category(self, item_id: str, category_id: str) -> None:
        """Idempotent; both rows must be visible (else NotFoundError)."""
        ...

    async def get_item_categories(self, item_id: str) -> list[Category]: ...

    # entities
    async def create_entity(
        self, name: str, *, entity_type: str = "person", profile: str | None = None
    ) -> Entity:
        """Get-or-create by name (case-insensitive) for this agent; concurrent calls for one
        name make one row."""
        ...

    async def get_entity(self, entity_id_or_name: str) -> Entity | None: ...
    async def list_entities(self, *, limit: int = 50) -> list[Entity]: ...
    async def link_item_entity(self, item_id: str, entity_id: str) -> None:
        """Idempotent; ``memory_count`` counts distinct linked items."""
        ...

    async def get_item_entities(self, item_id: str) -> list[Entity]: ...

    # reflections and lessons
    async def create_reflection(
        self, content: str, *, period_start: datetime | None = None,
        period_end: datetime | None = None, metadata: Mapping[str, Any] | None = None,
    ) -> Reflection: ...  # fmt: skip
    async def list_reflections(self, *, limit: int = 50) -> list[Reflection]: ...
    async def create_lesson(
        self, lesson: str, *, context: str | None = None, confidence: float = 0.5
    ) -> Lesson: ...
    async def list_lessons(self, *, limit: int = 50) -> list[Lesson]: ...
    async def search_lessons(self, query: str, *, limit: int = 10) -> list[Lesson]: ...
    async def reinforce_lesson(self, lesson_id: str, *, step: float = 0.1) -> Lesson:
        """confidence = min(1, confidence + step)."""
        ...

    async def decay_lesson(self, lesson_id: str, *, step: float = 0.1) -> Lesson:
        """confidence = max(0, confidence - step)."""
        ...

    async def get_stats(self) -> MemoryStats:
        """Counts of this agent's own rows (memory, service keys, observations, feedback, live
        candidates by status) and of the knowledge it may read; see :class:`MemoryStats`."""
        ...


class TaskStore(Protocol):
    """Tasks visible to the agent: its own, ``family``/``public`` ones and ``team`` ones of its
    active teams. Only the owner (creator) or the current assignee changes a task (update,
    hand-off, dependencies); only the owner deletes it. A task the agent cannot see is
    ``NotFoundError``; one it sees but may not change ``PermissionDeniedError``."""

    async def create_task(
        self, title: str, *, description: str | None = None, priority: Priority = "normal",
        assignee: str | None = None, team_id: str | None = None, project: str | None = None,
        tags: Sequence[str] = (), visibility: Visibility = "private",
        due_at: datetime | None = None, metadata: Mapping[str, Any] | None = None,
        depends_on: Sequence[str] = (), id: str | None = None,
    ) -> Task:  # fmt: skip
        """A task with open dependencies starts ``blocked``, else ``pending``."""
        ...

    async def get_task(self, task_id: str) -> Task | None:
        """By full id or short id (``AmbiguousIdError`` when a short id matches several)."""
        ...

    async def update_task(
        self, task_id: str, *, title: str | None = None, description: str | None = None,
        status: TaskStatus | None = None, priority: Priority | None = None,
        assignee: str | None = None, project: str | None = None,
        tags: Sequence[str] | None = None, due_at: datetime | None = None,
        metadata: Mapping[str, Any] | None = None, fence: Fence | tuple[str, int] | None = None,
    ) -> Task:  # fmt: skip
        """``metadata`` is merged (keys set to None are removed), never replaced wholesale.
        Status changes stamp ``started_at``/``completed_at``; completing the last open
        dependency of a blocked task makes it ``pending``. ``fence`` refuses the write
        (``StaleWriteError``) when a newer token was already used for its name in its scope:
        ``fence=lease.fence`` (or ``run.fence``) takes the lock's scope; ``Fence(name, token,
        family=True)`` compares with every agent's writes, ``Fence(name, token)`` or ``(name,
        token)`` with this agent's own."""
        ...

    async def delete_task(self, task_id: str) -> bool: ...
    async def list_tasks(
        self, *, status: TaskStatus | Sequence[TaskStatus] | None = None,
        priority: Priority | None = None, assignee: str | None = None,
        agent_id: str | None = None, team_id: str | None = None, project: str | None = None,
        tags: Sequence[str] = (), due_before: datetime | None = None,
        due_after: datetime | None = None, limit: int = 50, offset: int = 0,
    ) -> list[Task]:  # fmt: skip
        """``assignee=UNASSIGNED`` lists unassigned tasks; ``tags`` must all be present;
        ``due_after <= due_at < due_before``."""
        ...

    async def search_tasks(self, query: str, *, limit: int = 20) -> list[Task]: ...
    async def get_tasks_by_project(self, project: str, *, limit: int = 200) -> list[Task]: ...
    async def add_dependency(self, task_id: str, depends_on: str) -> Task:
        """Raises DependencyCycleError when ``depends_on`` (transitively) depends on the task."""
        ...

    async def remove_dependency(self, task_id: str, depends_on: str) -> Task:
        """No-op when there is no such dependency; NotFoundError when either task is not
        visible."""
        ...

    async def ready_tasks(self, *, limit: int = 50) -> list[Task]:
        """Pending tasks with no open dependency, in priority order."""
        ...

    async def handoff_task(self, task_id: str, to_agent: str, *, note: str | None = None) -> Task:
        """Assign to another agent, recorded in the task's history."""
        ...

    async def task_history(self, task_id: str) -> list[TaskEvent]:
        """Oldest first; NotFoundError for a task this agent cannot see."""
        ...


class TeamStore(Protocol):
    """Teams seen by their creator and members. Only the creator or the lead adds, re-roles or
    removes members and disbands the team (``PermissionDeniedError`` for another agent that
    sees it, ``NotFoundError`` for one that does not); any member may leave. A disbanded team's
    membership is frozen (``ValidationError``)."""

    async def create_team(
        self, name: str, *, lead: str | None = None, members: Sequence[str] = (),
        metadata: Mapping[str, Any] | None = None, id: str | None = None,
    ) -> Team:  # fmt: skip
        """The lead (default: this agent) is a member with role ``lead``."""
        ...

    async def get_team(self, team_id: str) -> Team | None: ...
    async def list_teams(self, *, include_disbanded: bool = False) -> list[Team]:
        """Teams this agent belongs to."""
        ...

    async def add_member(
        self, team_id: str, agent_id: str, *, role: TeamRole = "member"
    ) -> Team: ...

    async def update_member(self, team_id: str, agent_id: str, *, role: TeamRole) -> Team: ...
    async def remove_member(self, team_id: str, agent_id: str) -> Team: ...
    async def disband_team(self, team_id: str) -> Team:
        """Status ``disbanded``; members are kept for the record but the team no longer grants
        ``team`` visibility and ``team_members()`` of it is empty."""
        ...

    async def team_members(self, team_id: str) -> list[TeamMember]:
        """Active members in join order (what ``AgentBus.broadcast(team=...)`` resolves)."""
        ...


class AgentStore(Protocol):
    async def upsert_agent(
        self, agent_id: str, *, name: str | None = None, role: str | None = None,
        status: str = "active", config: Mapping[str, Any] | None = None,
    ) -> AgentRecord: ...  # fmt: skip
    async def get_agent(self, agent_id: str) -> AgentRecord | None: ...
    async def list_agents(self) -> list[AgentRecord]: ...
    async def set_agent_status(self, agent_id: str, status: str) -> AgentRecord: ...


class KnowledgeStore(Protocol):
    """Shared knowledge: collections with per-agent grants, documents in chunks, search.

    Readable collections: the agent's own, those it holds a grant on, and ``family``/``public``
    ones (the shared library). Grants: ``read`` < ``write`` < ``owner`` (write implies read).
    The creator owns its collection for good: granting to, downgrading or revoking it is a
    ``ValidationError``, so a collection never loses its last owner; owners granted later can be
    revoked. Only an owner grants, revokes, lists the grants or deletes the collection; writers
    and owners ingest and delete documents. There are no wildcard grants and no way to claim a
    collection. A collection the agent cannot read is not found; one it reads but may not change
    raises ``PermissionDeniedError``. Search checks grants inside the query: the top k are
    computed over permitted rows only, never filtered after ranking.
    """

    async def create_collection(
        self, name: str, *, description: str | None = None,
        visibility: CollectionVisibility = "private", metadata: Mapping[str, Any] | None = None,
        id: str | None = None,
    ) -> KnowledgeCollection: ...  # fmt: skip
    async def get_collection(self, collection_id: str) -> KnowledgeCollection | None: ...
    async def list_collections(
        self, *, permission: Permission = "read", include_library: bool = True
    ) -> list[KnowledgeCollection]:
        """Collections this agent may ``read`` (or ``write``/``owner``), by name then id."""
        ...

    async def delete_collection(self, collection_id: str) -> None:
        """Owner only; removes its documents, chunks and grants."""
        ...

    async def grant(
        self, collection_id: str, agent_id: str, permission: Permission
    ) -> KnowledgeGrant: ...
    async def revoke(self, collection_id: str, agent_id: str) -> bool:
        """Owners only; False when ``agent_id`` held no grant; the creator: ValidationError."""
        ...

    async def list_grants(self, collection_id: str) -> list[KnowledgeGrant]:
        """Owners only (a reader or writer: PermissionDeniedError); the creator is not listed."""
        ...

    async def ingest_document(
        self, collection_id: str, title: str, content: str, *,
        metadata: Mapping[str, Any] | None = None, embeddings: Sequence[Vector] | None = None,
        id: str | None = None,
    ) -> KnowledgeDocument:  # fmt: skip
        """Write permission needed. The content is split by ``chunk_text``; ``embeddings`` (one
        per chunk, in order; see ``chunk_text``) make the chunks vector-searchable."""
        ...

    async def get_document(self, document_id: str) -> KnowledgeDocument | None: ...
    async def list_documents(
        self, collection_id: str, *, limit: int = 50, offset: int = 0
    ) -> list[KnowledgeDocument]: ...
    async def delete_document(self, document_id: str) -> None:
        """Write or owner permission on its collection needed, whoever ingested it."""
        ...

    async def search(
        self, query: str, *, embedding: Vector | None = None, limit: int = 10,
        mode: SearchMode = "hybrid", collection_ids: Sequence[str] | None = None,
    ) -> list[KnowledgeHit]:  # fmt: skip
        """Across every readable collection (or the readable ones among ``collection_ids``),
        keyword / vector / RRF hybrid over chunks; k hits whenever k permitted chunks match."""
        ...


class ServiceKeyStore(Protocol):
    """Per-agent secrets, encrypted in the application (AES-GCM, envelope encryption: a data key
    per secret wrapped by the master key; associated data binds agent, name and version). Values
    come back as :class:`SecretValue` and never appear in logs, reprs or exceptions."""

    async def put(
        self, name: str, secret: str, *, metadata: Mapping[str, Any] | None = None
    ) -> ServiceKeyInfo:
        """Store (version 1) or replace (next version) a secret."""
        ...

    async def get(self, name: str) -> SecretValue | None: ...
    async def list_keys(self) -> list[ServiceKeyInfo]:
        """Names and metadata only, by name."""
        ...

    async def delete(self, name: str) -> bool: ...
    async def rotate(self, name: str, secret: str) -> ServiceKeyInfo:
        """Replace an existing secret's value (NotFoundError when there is none)."""
        ...


class ObservationStore(Protocol):
    async def record(
        self, session_id: str, kind: str, summary: str, *,
        detail: Mapping[str, Any] | None = None, tool: str | None = None,
        started_at: datetime | None = None, ended_at: datetime | None = None,
    ) -> Observation: ...  # fmt: skip
    async def list_observations(
        self, *, session_id: str | None = None, kind: str | None = None, limit: int = 50
    ) -> list[Observation]:
        """Newest first."""
        ...

    async def search(self, query: str, *, limit: int = 20) -> list[Observation]:
        """Keyword (AND of terms) over summaries."""
        ...


class FeedbackStore(Protocol):
    async def record(
        self, session_id: str, model: str, *, task: str | None = None,
        self_evaluation: float | None = None, metadata: Mapping[str, Any] | None = None,
    ) -> ModelFeedback: ...  # fmt: skip
    async def rate(
        self, feedback_id: str, rating: int, *, comment: str | None = None
    ) -> RatingResult:
        """Set the user's rating (1..5) once; a second call changes nothing (applied=False)."""
        ...

    async def latest(self, session_id: str) -> ModelFeedback | None: ...
    async def list_feedback(
        self, *, model: str | None = None, limit: int = 50
    ) -> list[ModelFeedback]: ...


class LiveCandidateStore(Protocol):
    async def create(
        self, summary: str, *, similar_item_id: str | None = None,
        similarity: float | None = None, metadata: Mapping[str, Any] | None = None,
    ) -> LiveCandidate: ...  # fmt: skip
    async def list_candidates(
        self, *, status: CandidateStatus | None = "pending", limit: int = 50
    ) -> list[LiveCandidate]: ...
    async def merge(self, candidate_id: str, *, into: str | None = None) -> LiveCandidate:
        """Fold into one of this agent's own items (default: ``similar_item_id``), which is
        reinforced; another agent's item, even a visible one, is ``NotFoundError``."""
        ...

    async def promote(
        self, candidate_id: str, *, visibility: Visibility = "private"
    ) -> LiveCandidate:
        """Create a memory item from the candidate (``resolved_item_id``)."""
        ...

    async def reject(self, candidate_id: str) -> LiveCandidate: ...


class StorageAdapter(Protocol):
    """One storage backend. ``memory``/``tasks``/``teams`` need an agent: use ``for_agent``."""

    @property
    def memory(self) -> MemoryStore: ...
    @property
    def tasks(self) -> TaskStore: ...
    @property
    def teams(self) -> TeamStore: ...
    @property
    def agents(self) -> AgentStore: ...
    @property
    def knowledge(self) -> KnowledgeStore: ...
    @property
    def service_keys(self) -> ServiceKeyStore: ...
    @property
    def observations(self) -> ObservationStore: ...
    @property
    def feedback(self) -> FeedbackStore: ...
    @property
    def live_candidates(self) -> LiveCandidateStore: ...
    @property
    def agent_id(self) -> str | None: ...
    def for_agent(self, agent_id: str) -> StorageAdapter: ...
    def is_ready(self) -> bool: ...
    async def open(self) -> None:
        """Connect and bring the schema up to date (idempotent)."""
        ...

    async def aclose(self) -> None:
        """Close the adapter (a view's aclose() does nothing)."""
        ...
