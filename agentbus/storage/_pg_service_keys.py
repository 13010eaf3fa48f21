"""Service keys on PostgreSQL: per-agent secrets sealed in the application (``_crypto``).

A row holds what :func:`~agentbus.storage._crypto.seal` returns — ciphertext, the data key
wrapped by the master key, both nonces and the master key's id — plus the secret's name, version
and metadata; never a plaintext, and nothing is encrypted by the database (no pgcrypto, so no
secret ever travels in SQL text or server logs). Each ``put``/``rotate`` seals the value anew
under a fresh data key and nonce, bound to (agent, name, version) by the associated data, so a
row copied to another agent, name or version does not decrypt. Only the current version is kept.
RLS (``service_keys_own``) keeps every row to its agent.

The master key is loaded once per adapter (``PgCore.master_key``); :func:`rotate_master_key`
re-wraps every data key under a new one, as the owner role, without touching the values.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import asyncpg

from .._errors import ConfigError
from ._canonical import canonical_json, check_text, now_utc
from ._crypto import MasterKey, SealedSecret, rewrap, seal, unseal
from ._errors import NotFoundError
from ._models import MAX_NAME_CHARS, ServiceKeyInfo
from ._pg_checks import affected, new_id
from ._pg_core import Conn, Scope
from ._pg_errors import map_pg_errors
from ._pg_rows import SERVICE_KEY_COLUMNS, service_key as service_key_row
from ._secret import SecretValue, check_secret

_SEALED = "sk.key_id, sk.wrapped_key, sk.key_nonce, sk.nonce, sk.ciphertext"


def _sealed(row: asyncpg.Record) -> SealedSecret:
    return SealedSecret(
        key_id=row["key_id"], wrapped_key=row["wrapped_key"], key_nonce=row["key_nonce"],
        nonce=row["nonce"], ciphertext=row["ciphertext"],
    )  # fmt: skip


class PgServiceKeys:
    """:class:`~agentbus.storage.ServiceKeyStore` for one agent (from ``PgAdapter.for_agent``)."""

    def __init__(self, scope: Scope) -> None:
        self._scope = scope
        self._agent = scope.agent

    async def put(
        self, name: str, secret: str, *, metadata: Mapping[str, Any] | None = None
    ) -> ServiceKeyInfo:
        """Store ``secret`` under ``name`` (version 1) or replace it (the next version; metadata
        None keeps the stored metadata).

        Raises: ValidationError (the message never contains the secret).
        """
        meta = None if metadata is None else canonical_json(metadata)
        return await self._write(name, secret, metadata=meta, replace=True)

    async def rotate(self, name: str, secret: str) -> ServiceKeyInfo:
        """Replace an existing secret's value (next version; metadata kept).

        Raises: NotFoundError when this agent has no secret of that name.
        """
        return await self._write(name, secret, metadata=None, replace=False)

    async def _write(
        self, name: str, secret: str, *, metadata: str | None, replace: bool
    ) -> ServiceKeyInfo:
        name = check_text("name", name, max_chars=MAX_NAME_CHARS)
        secret = check_secret(secret)
        master = await self._scope.core.master_key()
        async with self._scope.tx("storing a service key") as conn:
            while True:  # at most twice: a concurrent first put makes the row we then update
                current = await conn.fetchrow(
                    "SELECT sk.version FROM service_keys sk"
                    " WHERE sk.agent_id = $1 AND sk.name = $2 FOR UPDATE",
                    self._agent, name,
                )  # fmt: skip
                if current is None and not replace:
                    raise NotFoundError(f"service key {name!r} not found; put() it first")
                version = 1 if current is None else current["version"] + 1
                sealed = seal(master, agent_id=self._agent, name=name, version=version,
                              secret=secret)  # fmt: skip
                row = await self._store(conn, name, version, sealed, metadata, current is None)
                if row is not None:
                    return service_key_row(row)

    async def _store(
        self, conn: Conn, name: str, version: int, sealed: SealedSecret, metadata: str | None,
        insert: bool,
    ) -> asyncpg.Record | None:  # fmt: skip
        values = (
            self._agent, name, version, sealed.key_id, sealed.wrapped_key, sealed.key_nonce,
            sealed.nonce, sealed.ciphertext, metadata, now_utc(),
        )  # fmt: skip
        if insert:
            return await conn.fetchrow(
                "INSERT INTO service_keys AS sk (id, agent_id, name, version, key_id, wrapped_key,"
                " key_nonce, nonce, ciphertext, metadata, created_at, updated_at)"
                " VALUES ($11, $1, $2, $3, $4, $5, $6, $7, $8, coalesce($9::jsonb, '{}'), $10,"
                " $10) ON CONFLICT (agent_id, name) DO NOTHING"
                f" RETURNING {SERVICE_KEY_COLUMNS}",
                *values, new_id(),
            )  # fmt: skip
        return await conn.fetchrow(
            "UPDATE service_keys sk SET version = $3, key_id = $4, wrapped_key = $5,"
            " key_nonce = $6, nonce = $7, ciphertext = $8,"
            " metadata = coalesce($9::jsonb, sk.metadata), updated_at = $10"
            f" WHERE sk.agent_id = $1 AND sk.name = $2 RETURNING {SERVICE_KEY_COLUMNS}",
            *values,
        )

    async def get(self, name: str) -> SecretValue | None:
        """The secret (``reveal()`` it deliberately), or None when there is none.

        Raises: SecretDecryptionError (wrong master key, or the stored data was altered).
        """
        name = check_text("name", name, max_chars=MAX_NAME_CHARS)
        master = await self._scope.core.master_key()
        async with self._scope.tx("reading a service key") as conn:
            row = await conn.fetchrow(
                f"SELECT sk.version, {_SEALED} FROM service_keys sk"
                " WHERE sk.agent_id = $1 AND sk.name = $2",
                self._agent, name,
            )  # fmt: skip
        if row is None:
            return None
        return unseal(master, _sealed(row), agent_id=self._agent, name=name,
                      version=row["version"])  # fmt: skip

    async def list_keys(self) -> list[ServiceKeyInfo]:
        """Names and metadata (never values), by name in byte order."""
        async with self._scope.tx("listing service keys") as conn:
            rows = await conn.fetch(
                f"SELECT {SERVICE_KEY_COLUMNS} FROM service_keys sk WHERE sk.agent_id = $1"
                ' ORDER BY sk.name COLLATE "C"',
                self._agent,
            )
        return [service_key_row(row) for row in rows]

    async def delete(self, name: str) -> bool:
        """True if this agent had a secret of that name."""
        name = check_text("name", name, max_chars=MAX_NAME_CHARS)
        async with self._scope.tx("deleting a service key") as conn:
            status = await conn.execute(
                "DELETE FROM service_keys sk WHERE sk.agent_id = $1 AND sk.name = $2",
                self._agent, name,
            )  # fmt: skip
        return affected(status) > 0


async def rotate_master_key(admin_dsn: str | None, old: MasterKey, new: MasterKey) -> int:
    """Re-wrap every agent's data keys from ``old`` to ``new`` in one transaction, as the owner
    role (it spans agents); ciphertexts and nonces of the values are untouched. Rows already
    wrapped by ``new`` are left alone, so a re-run after a lost COMMIT reply is harmless.

    Returns the number of rows re-wrapped.

    Raises: ConfigError (no admin_dsn), SecretDecryptionError (a row ``old`` cannot unwrap:
    nothing is changed), StorageUnavailableError.
    """
    if admin_dsn is None:
        raise ConfigError(
            "rotate_master_key runs as the owner role: create the PgAdapter with admin_dsn "
            "(storage.postgres.adminConnectionString)"
        )
    with map_pg_errors("connecting as the owner role to rotate the master key"):
        conn: asyncpg.Connection[asyncpg.Record] = await asyncpg.connect(admin_dsn)
    try:
        with map_pg_errors("rotating the master key"):
            async with conn.transaction():
                rows = await conn.fetch(
                    f"SELECT sk.id, sk.agent_id, sk.name, sk.version, {_SEALED}"
                    " FROM service_keys sk WHERE sk.key_id <> $1 ORDER BY sk.id FOR UPDATE",
                    new.key_id,
                )
                rewrapped = [
                    (row["id"], rewrap(old, new, _sealed(row), agent_id=row["agent_id"],
                                       name=row["name"], version=row["version"]))
                    for row in rows
                ]  # fmt: skip
                await conn.execute(
                    "UPDATE service_keys sk SET key_id = $1, wrapped_key = u.wrapped_key,"
                    " key_nonce = u.key_nonce"
                    " FROM unnest($2::text[], $3::bytea[], $4::bytea[])"
                    " AS u(id, wrapped_key, key_nonce) WHERE sk.id = u.id",
                    new.key_id, [i for i, _ in rewrapped],
                    [s.wrapped_key for _, s in rewrapped], [s.key_nonce for _, s in rewrapped],
                )  # fmt: skip
    finally:
        with map_pg_errors("closing the rotation connection"):
            await conn.close(timeout=5)
    return len(rewrapped)
