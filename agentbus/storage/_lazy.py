"""``bus.storage``: the bus agent's StorageAdapter view, opened on first use.

The bus connects to storage only when an agent first touches it, so agents that only message
never open a database. Every call of a lazy store opens (once) and forwards to the real view.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from ._protocol import StorageAdapter


class LazyStorage:
    """Looks like a :class:`StorageAdapter` view; opens the shared adapter on first use."""

    def __init__(
        self, acquire: Callable[[], Awaitable[StorageAdapter]], agent_id: str | None
    ) -> None:
        self._acquire = acquire
        self._agent_id = agent_id
        self._adapter: StorageAdapter | None = None

    async def view(self) -> StorageAdapter:
        """The real (opened) adapter view."""
        if self._adapter is None:
            self._adapter = await self._acquire()
        adapter = self._adapter
        return adapter if self._agent_id is None else adapter.for_agent(self._agent_id)

    @property
    def memory(self) -> Any:
        return _LazyStore(self, "memory")

    @property
    def tasks(self) -> Any:
        return _LazyStore(self, "tasks")

    @property
    def teams(self) -> Any:
        return _LazyStore(self, "teams")

    @property
    def agents(self) -> Any:
        return _LazyStore(self, "agents")

    @property
    def knowledge(self) -> Any:
        return _LazyStore(self, "knowledge")

    @property
    def service_keys(self) -> Any:
        return _LazyStore(self, "service_keys")

    @property
    def observations(self) -> Any:
        return _LazyStore(self, "observations")

    @property
    def feedback(self) -> Any:
        return _LazyStore(self, "feedback")

    @property
    def live_candidates(self) -> Any:
        return _LazyStore(self, "live_candidates")

    @property
    def agent_id(self) -> str | None:
        return self._agent_id

    def for_agent(self, agent_id: str) -> LazyStorage:
        return LazyStorage(self._acquire, agent_id)

    def is_ready(self) -> bool:
        return self._adapter is not None and self._adapter.is_ready()

    async def open(self) -> None:
        await self.view()

    async def aclose(self) -> None:
        """A view's close does nothing: the bus gives the shared adapter back on exit."""


class _LazyStore:
    def __init__(self, owner: LazyStorage, store: str) -> None:
        self._owner = owner
        self._store = store

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        if name.startswith("_"):
            raise AttributeError(name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            view = await self._owner.view()
            return await getattr(getattr(view, self._store), name)(*args, **kwargs)

        call.__name__ = name
        return call
