"""The one boundary where asyncpg's exceptions become agentbus's (DESIGN.md §4, STYLE "Errors").

Connection loss, a server shutting down and too many connections are
:class:`StorageUnavailableError`; refused values are :class:`ValidationError`; a policy refusing a
reference to an invisible row is :class:`NotFoundError` (never a hint that the row exists); a
missing table or function is :class:`MigrationError`. The driver's exception is the ``__cause__``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg

from ._errors import (
    DependencyCycleError,
    MigrationError,
    NotFoundError,
    StorageError,
    StorageUnavailableError,
    ValidationError,
)

CYCLE_SQLSTATE = "ZA001"  # raised by agentbus_check_dependency_cycle() (migration 0002)
SETUP_HINT = "scripts/setup-postgres.sh sets up the roles and the database"


@contextmanager
def map_pg_errors(action: str) -> Iterator[None]:
    """Translate asyncpg's exceptions into agentbus's, keeping the original as ``__cause__``.

    The one boundary between the driver and the stores: everything that talks to PostgreSQL runs
    inside it. agentbus's own errors pass through unchanged.
    """
    try:
        yield
    except StorageError:
        raise
    except asyncpg.PostgresError as exc:
        raise _from_postgres(exc, action) from exc
    except (asyncpg.InterfaceError, asyncpg.InternalClientError) as exc:
        # InternalClientError: asyncpg's protocol state machine left inconsistent when the
        # server dies while a new pooled connection is being set up ("cannot switch to state
        # …; another operation is in progress"), seen when PostgreSQL was killed mid-write.
        raise StorageUnavailableError(
            f"PostgreSQL connection lost while {action}: {exc}; if it was a write, check "
            "whether it was applied before retrying"
        ) from exc
    except (OSError, TimeoutError) as exc:
        raise StorageUnavailableError(
            f"cannot reach PostgreSQL while {action}: {exc}; is it running? ({SETUP_HINT})"
        ) from exc


def _from_postgres(exc: asyncpg.PostgresError, action: str) -> StorageError:
    state = exc.sqlstate or ""
    detail = f"{exc}"
    if state == CYCLE_SQLSTATE:
        return DependencyCycleError(detail)
    if isinstance(exc, asyncpg.PostgresConnectionError) or state in (
        "57P01", "57P02", "57P03", "53300",
    ):  # fmt: skip
        return StorageUnavailableError(
            f"PostgreSQL is unavailable while {action}: {detail}; if it was a write, it was "
            "not committed unless the connection broke during COMMIT"
        )
    if state.startswith("22") or state in ("23502", "23514"):
        return ValidationError(f"PostgreSQL refused the value while {action}: {detail}")
    if state == "23505":
        return ValidationError(f"a row with that key already exists ({action}): {detail}")
    if state == "23503":
        return NotFoundError(f"a referenced row does not exist ({action})")
    if state == "42501":
        if "row-level security" in detail:
            # A WITH CHECK policy refused a reference to a row this agent cannot see.
            return NotFoundError(f"a referenced row is not visible to this agent ({action})")
        return StorageError(
            f"permission denied while {action}: {detail}; the app role needs the grants of the "
            "migrations (open() with admin_dsn applies them)"
        )
    if state in ("42P01", "42883", "42703"):
        return MigrationError(
            f"the database schema is not what agentbus expects while {action}: {detail}; "
            "open() the adapter with admin_dsn to migrate it"
        )
    if state == "57014":
        return StorageError(f"PostgreSQL cancelled the statement while {action}: {detail}")
    return StorageError(f"PostgreSQL failed while {action}: {detail}")
