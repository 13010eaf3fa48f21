"""SQLite service keys: one agent's secrets, encrypted in the application by ``_crypto``.

A row holds only what :func:`seal` returns (the wrapped data key, two nonces, the ciphertext,
the id of the master key that wrapped it) plus the name, version and metadata; the plaintext
never reaches SQLite, a log, a repr or an exception. Values come back as :class:`SecretValue`.
A secret bound to another agent, name or version (a copied or altered row), or wrapped by
another master key, raises :class:`SecretDecryptionError`, never garbage.

The master key is resolved once per adapter (shared by its views), on first use: the key given
to the adapter, else :meth:`MasterKey.load` (``AGENTBUS_MASTER_KEY``, else the configured key
file, created with mode 0600). :meth:`SQLiteAdapter.rotate_master_key` re-wraps every row.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from .._config import Config
from .._errors import ConfigError
from ._canonical import canonical_json, check_text, now_utc, parse_json
from ._crypto import MasterKey, SealedSecret, rewrap, seal, unseal
from ._errors import NotFoundError, SecretDecryptionError, StorageError
from ._models import MAX_NAME_CHARS, ServiceKeyInfo
from ._secret import SecretValue, check_secret
from ._sqlite_codec import parse_ts, ts
from ._sqlite_db import Database, Scoped

INFO_COLUMNS = "name, agent_id, version, metadata, created_at, updated_at"
SEALED_COLUMNS = "key_id, wrapped_key, key_nonce, nonce, ciphertext"
# Read back as BLOBs whatever their stored type: a value altered to TEXT by another client must
# fail decryption (SecretDecryptionError), not the text decoder.
SEALED_READ = (
    "key_id, CAST(wrapped_key AS BLOB), CAST(key_nonce AS BLOB), CAST(nonce AS BLOB),"
    " CAST(ciphertext AS BLOB)"
)


class MasterKeySource:
    """The adapter's master key: given, or loaded once on first use (thread-safe)."""

    def __init__(self, key: MasterKey | None = None, config: Config | None = None) -> None:
        if key is not None and not isinstance(key, MasterKey):
            raise ConfigError(f"master_key must be a MasterKey, got {type(key).__name__}")
        self._key = key
        self._config = config
        self._retired: dict[str, MasterKey] = {}
        self._lock = threading.Lock()

    def use_config(self, config: Config) -> None:
        self._config = config

    def get(self) -> MasterKey:
        """Raises: ValidationError (a bad key, a key file readable by others)."""
        with self._lock:
            if self._key is None:
                self._key = MasterKey.load(self._config)
            return self._key

    def for_row(self, key_id: str) -> MasterKey:
        """The key that wrapped a row: the current one, or the one it replaced in this process
        (a read whose snapshot predates a rotation committed meanwhile still decrypts)."""
        current = self.get()
        with self._lock:
            return self._retired.get(key_id, current)

    def replace(self, key: MasterKey) -> None:
        with self._lock:
            if self._key is not None and self._key.key_id != key.key_id:
                self._retired = {self._key.key_id: self._key}  # only the one just replaced
            self._key = key


def _info(row: Sequence[Any]) -> ServiceKeyInfo:
    return ServiceKeyInfo(
        name=row[0],
        agent_id=row[1],
        version=row[2],
        metadata=parse_json(row[3]),
        created_at=parse_ts(row[4]),
        updated_at=parse_ts(row[5]),
    )


@contextlib.contextmanager
def malformed_is_undecryptable(name: str) -> Iterator[None]:
    """A stored nonce of the wrong length (an altered row) makes AES-GCM raise ValueError:
    report it like every other altered row."""
    try:
        yield
    except ValueError as exc:
        if isinstance(exc, StorageError):
            raise
        raise SecretDecryptionError(
            f"service key {name!r} cannot be decrypted: its stored data is malformed ({exc})"
        ) from None


def _sealed(row: Sequence[Any]) -> SealedSecret:
    return SealedSecret(
        key_id=row[0], wrapped_key=bytes(row[1]), key_nonce=bytes(row[2]), nonce=bytes(row[3]),
        ciphertext=bytes(row[4]),
    )  # fmt: skip


class SQLiteServiceKeyStore(Scoped):
    """One agent's secrets in SQLite (see the module docstring)."""

    def __init__(self, db: Database, agent_id: str, keys: MasterKeySource) -> None:
        super().__init__(db, agent_id)
        self._keys = keys

    async def put(
        self, name: str, secret: str, *, metadata: Mapping[str, Any] | None = None
    ) -> ServiceKeyInfo:
        """Store (version 1) or replace (next version) a secret. On replace, ``metadata``
        None keeps the stored metadata.

        Raises: ValidationError (name, secret, metadata; the message never shows the secret).
        """
        check_text("name", name, max_chars=MAX_NAME_CHARS)
        check_secret(secret)
        meta = None if metadata is None else canonical_json(metadata)
        return await self._db.write(lambda conn: self._store(conn, name, secret, meta, False))

    async def rotate(self, name: str, secret: str) -> ServiceKeyInfo:
        """Replace an existing secret's value (next version; metadata kept).

        Raises: NotFoundError (no secret of that name), ValidationError.
        """
        check_text("name", name, max_chars=MAX_NAME_CHARS)
        check_secret(secret)
        return await self._db.write(lambda conn: self._store(conn, name, secret, None, True))

    def _store(
        self, conn: sqlite3.Connection, name: str, secret: str, metadata: str | None,
        must_exist: bool,
    ) -> ServiceKeyInfo:  # fmt: skip
        current = conn.execute(
            "SELECT version, metadata FROM service_keys WHERE agent_id = ? AND name = ?",
            (self._agent, name),
        ).fetchone()
        if current is None and must_exist:
            raise NotFoundError(f"service key {name!r} not found")
        version = 1 if current is None else current[0] + 1
        metadata = metadata or ("{}" if current is None else current[1])
        sealed = seal(
            self._keys.get(), agent_id=self._agent, name=name, version=version, secret=secret
        )
        now = ts(now_utc())
        row = conn.execute(
            f"INSERT INTO service_keys (agent_id, name, version, {SEALED_COLUMNS}, metadata,"
            " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (agent_id, name) DO UPDATE SET version = excluded.version,"
            " key_id = excluded.key_id, wrapped_key = excluded.wrapped_key,"
            " key_nonce = excluded.key_nonce, nonce = excluded.nonce,"
            " ciphertext = excluded.ciphertext, metadata = excluded.metadata,"
            f" updated_at = excluded.updated_at RETURNING {INFO_COLUMNS}",
            (
                self._agent, name, version, sealed.key_id, sealed.wrapped_key, sealed.key_nonce,
                sealed.nonce, sealed.ciphertext, metadata, now, now,
            ),
        ).fetchone()  # fmt: skip
        return _info(row)

    async def get(self, name: str) -> SecretValue | None:
        """The secret, or None when this agent has none of that name.

        Raises: SecretDecryptionError (another master key, or the stored data was altered),
        ValidationError (the name).
        """
        check_text("name", name, max_chars=MAX_NAME_CHARS)

        def read(conn: sqlite3.Connection) -> SecretValue | None:
            row = conn.execute(
                f"SELECT version, {SEALED_READ} FROM service_keys WHERE agent_id = ? AND name = ?",
                (self._agent, name),
            ).fetchone()
            if row is None:
                return None
            master = self._keys.for_row(row[1])
            with malformed_is_undecryptable(name):
                return unseal(
                    master, _sealed(row[1:]), agent_id=self._agent, name=name, version=row[0]
                )

        return await self._db.read(read)

    async def list_keys(self) -> list[ServiceKeyInfo]:
        """This agent's secrets' names and metadata (never values), by name."""

        def read(conn: sqlite3.Connection) -> list[ServiceKeyInfo]:
            rows = conn.execute(
                f"SELECT {INFO_COLUMNS} FROM service_keys WHERE agent_id = ? ORDER BY name",
                (self._agent,),
            )
            return [_info(row) for row in rows]

        return await self._db.read(read)

    async def delete(self, name: str) -> bool:
        """True when a secret of that name was deleted.

        Raises: ValidationError (the name).
        """
        check_text("name", name, max_chars=MAX_NAME_CHARS)

        def write(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "DELETE FROM service_keys WHERE agent_id = ? AND name = ?", (self._agent, name)
            )
            return cursor.rowcount > 0

        return await self._db.write(write)

    def __repr__(self) -> str:
        return f"<SQLiteServiceKeyStore agent={self._agent!r}>"


def rewrap_all(conn: sqlite3.Connection, old: MasterKey, new: MasterKey) -> int:
    """Re-wrap every row's data key with ``new`` (values untouched), in the caller's
    transaction; rows already wrapped by ``new`` are left alone. The number re-wrapped.

    Raises: SecretDecryptionError (a row ``old`` did not wrap: nothing is changed).
    """
    rows = conn.execute(
        f"SELECT agent_id, name, version, {SEALED_READ} FROM service_keys WHERE key_id != ?",
        (new.key_id,),
    ).fetchall()
    for agent_id, name, version, *sealed_row in rows:
        with malformed_is_undecryptable(name):
            sealed = rewrap(
                old, new, _sealed(sealed_row), agent_id=agent_id, name=name, version=version
            )
        conn.execute(
            "UPDATE service_keys SET key_id = ?, wrapped_key = ?, key_nonce = ?"
            " WHERE agent_id = ? AND name = ?",
            (sealed.key_id, sealed.wrapped_key, sealed.key_nonce, agent_id, name),
        )
    return len(rows)
