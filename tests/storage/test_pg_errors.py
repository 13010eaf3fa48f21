"""How driver failures reach callers: every asyncpg failure that means "the connection or the
server is gone" becomes StorageUnavailableError with the driver's error as ``__cause__``.

The real faults (SIGKILL mid-write, a stopped server) are exercised against a real PostgreSQL in
test_postgres_adapter.py; where a fault only shows up in a race (asyncpg's protocol state machine
left inconsistent when the server dies while a new pooled connection is being set up, seen about
one run in two of the SIGKILL test), the translation itself is checked here.
"""

from __future__ import annotations

import asyncpg
import pytest

from agentbus.storage import StorageError, StorageUnavailableError, ValidationError
from agentbus.storage._pg_errors import map_pg_errors


@pytest.mark.parametrize(
    "failure",
    [
        asyncpg.InternalClientError(
            "cannot switch to state 11; another operation (2) is in progress"
        ),
        asyncpg.InterfaceError("connection is closed"),
        ConnectionRefusedError(111, "Connect call failed"),
        TimeoutError(),
    ],
    ids=["internal-client-state", "interface", "refused", "timeout"],
)
def test_connection_failures_become_storage_unavailable(failure: Exception) -> None:
    unavailable = pytest.raises(StorageUnavailableError, match="searching items")
    with unavailable as caught, map_pg_errors("searching items"):
        raise failure
    assert caught.value.__cause__ is failure


def test_agentbus_errors_pass_through_unchanged() -> None:
    own = ValidationError("limit must be at least 1")
    with pytest.raises(ValidationError) as caught, map_pg_errors("searching items"):
        raise own
    assert caught.value is own
    assert isinstance(caught.value, StorageError)


def test_a_programming_error_is_not_disguised_as_unavailability() -> None:
    with pytest.raises(KeyError), map_pg_errors("searching items"):
        raise KeyError("keyword_rank")
