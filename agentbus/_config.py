"""Configuration: ``agentbus.json`` + environment + explicit arguments, validated once.

Precedence, lowest first: built-in defaults < the file < environment variables < arguments to
:func:`load_config`. The ``storage`` section keeps ArgentOS's shape, so the storage section of an
``argent.json`` works unchanged; agentbus adds ``adminConnectionString``, ``statementCacheSize``
(0 behind PgBouncer in transaction mode), ``embeddingDim``, ``serviceKeys`` and the ``bus``
section.

Every problem is a :class:`ConfigError` that names where the value came from, the key and the fix,
raised here and never mid-flight.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast
from urllib.parse import urlsplit

from ._errors import ConfigError

Backend = Literal["sqlite", "postgres", "dual"]
Target = Literal["sqlite", "postgres"]

CONFIG_ENV = "AGENTBUS_CONFIG"
DEFAULT_REDIS_PORT = 6380
DEFAULT_POSTGRES_PORT = 5433
DEFAULT_APP_URL = "postgres://agentbus_app@127.0.0.1:5433/agentbus"
DEFAULT_OWNER_URL = "postgres://agentbus_owner@127.0.0.1:5433/agentbus"


@dataclass(frozen=True, kw_only=True, slots=True)
class RedisConfig:
    host: str = "127.0.0.1"
    port: int = DEFAULT_REDIS_PORT
    db: int = 0
    password: str | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/{self.db}"


@dataclass(frozen=True, kw_only=True, slots=True)
class SQLiteConfig:
    path: Path = Path("~/.agentbus/agentbus.db").expanduser()


@dataclass(frozen=True, kw_only=True, slots=True)
class PostgresConfig:
    connection_string: str = DEFAULT_APP_URL
    # Migrations and maintenance run as the owner role; agents are served by the app role.
    admin_connection_string: str | None = None
    max_connections: int = 10
    # asyncpg's prepared-statement cache; 0 behind PgBouncer in transaction mode. None: default.
    statement_cache_size: int | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class ServiceKeysConfig:
    master_key_file: Path = Path("~/.agentbus/master.key").expanduser()


@dataclass(frozen=True, kw_only=True, slots=True)
class StorageConfig:
    backend: Backend = "sqlite"
    read_from: Target = "sqlite"
    write_to: tuple[Target, ...] = ("sqlite",)
    sqlite: SQLiteConfig = field(default_factory=SQLiteConfig)
    postgres: PostgresConfig | None = None
    redis: RedisConfig = field(default_factory=RedisConfig)
    embedding_dim: int = 768
    service_keys: ServiceKeysConfig = field(default_factory=ServiceKeysConfig)


@dataclass(frozen=True, kw_only=True, slots=True)
class BusConfig:
    namespace: str = "agentbus"
    lease_ttl: float = 30.0
    max_deliveries: int = 5
    max_payload_bytes: int = 1_048_576
    dedup_ttl: float = 86_400.0


@dataclass(frozen=True, kw_only=True, slots=True)
class Config:
    """The whole configuration; ``source`` says which file (if any) it was read from."""

    storage: StorageConfig = field(default_factory=StorageConfig)
    bus: BusConfig = field(default_factory=BusConfig)
    source: str = "<defaults>"


# The JSON shape: section -> key -> expected type. Unknown keys are typos, hence errors.
_SCHEMA: dict[str, dict[str, Any]] = {
    "": {"storage": dict, "bus": dict},
    "storage": {
        "backend": str,
        "readFrom": str,
        "writeTo": list,
        "sqlite": dict,
        "postgres": dict,
        "redis": dict,
        "embeddingDim": int,
        "serviceKeys": dict,
    },
    "storage.sqlite": {"path": str},
    "storage.postgres": {
        "connectionString": str,
        "adminConnectionString": str,
        "maxConnections": int,
        "statementCacheSize": int,
    },
    "storage.redis": {"host": str, "port": int, "db": int, "password": str},
    "storage.serviceKeys": {"masterKeyFile": str},
    "bus": {
        "namespace": str,
        "leaseTtl": (int, float),
        "maxDeliveries": int,
        "maxPayloadBytes": int,
        "dedupTtl": (int, float),
    },
}


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    redis_url: str | None = None,
    postgres_url: str | None = None,
    postgres_admin_url: str | None = None,
    sqlite_path: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Read, merge and validate the configuration.

    The file is ``path``, else ``$AGENTBUS_CONFIG``, else ``./agentbus.json``, else
    ``~/.agentbus/agentbus.json``; with none of them the defaults apply (SQLite + Redis on 6380).
    ``AGENTBUS_REDIS_URL``, ``AGENTBUS_PG_URL``, ``AGENTBUS_PG_ADMIN_URL`` and
    ``AGENTBUS_SQLITE_PATH`` override single values; the keyword arguments override both, and
    ``overrides`` (same shape as the file) is merged over everything.

    Raises:
        ConfigError: the file is unreadable or invalid; the message names file, key and fix.
    """
    env = os.environ if environ is None else environ
    file_path = _find_file(path, env)
    raw: dict[str, Any] = _read_file(file_path) if file_path else {}
    source = str(file_path) if file_path else "<defaults>"

    env_values = {
        "redis_url": env.get("AGENTBUS_REDIS_URL"),
        "postgres_url": env.get("AGENTBUS_PG_URL"),
        "postgres_admin_url": env.get("AGENTBUS_PG_ADMIN_URL"),
        "sqlite_path": env.get("AGENTBUS_SQLITE_PATH"),
    }
    arg_values = {
        "redis_url": redis_url,
        "postgres_url": postgres_url,
        "postgres_admin_url": postgres_admin_url,
        "sqlite_path": None if sqlite_path is None else os.fspath(sqlite_path),
    }
    for origin, values in (("environment", env_values), ("argument", arg_values)):
        _apply_single_values(raw, values, origin)
    if overrides:
        raw = _deep_merge(raw, overrides)
    return parse_config(raw, source=source)


def parse_config(raw: Mapping[str, Any], *, source: str = "<dict>") -> Config:
    """Validate a mapping shaped like ``agentbus.json`` and build the :class:`Config`.

    Raises:
        ConfigError: naming ``source``, the key and the fix.
    """
    _check_shape(raw, "", source)
    storage_raw = raw.get("storage", {})
    bus_raw = raw.get("bus", {})
    storage = _parse_storage(storage_raw, source)
    bus = BusConfig(
        namespace=bus_raw.get("namespace", "agentbus"),
        lease_ttl=float(_positive(bus_raw, "leaseTtl", 30.0, "bus", source)),
        max_deliveries=int(_positive(bus_raw, "maxDeliveries", 5, "bus", source)),
        max_payload_bytes=int(_positive(bus_raw, "maxPayloadBytes", 1_048_576, "bus", source)),
        dedup_ttl=float(_positive(bus_raw, "dedupTtl", 86_400.0, "bus", source)),
    )
    if not bus.namespace or any(c in bus.namespace for c in "{}: \t*?[]"):
        raise ConfigError(
            f"{source}: bus.namespace {bus.namespace!r} is invalid; use a non-empty name without "
            "spaces, braces, ':' or glob characters, e.g. \"agentbus\""
        )
    return Config(storage=storage, bus=bus, source=source)


def _parse_storage(raw: Mapping[str, Any], source: str) -> StorageConfig:
    backend = raw.get("backend", "sqlite")
    if backend not in ("sqlite", "postgres", "dual"):
        raise ConfigError(
            f'{source}: storage.backend {backend!r} is unknown; use "sqlite" (embedded default), '
            '"postgres", or "dual" (SQLite -> PostgreSQL migration)'
        )
    read_from, write_to = _routing(raw, cast(Backend, backend), source)
    postgres = None
    if "postgres" in raw:
        pg = raw["postgres"]
        postgres = PostgresConfig(
            connection_string=pg.get("connectionString", DEFAULT_APP_URL),
            admin_connection_string=pg.get("adminConnectionString"),
            max_connections=int(_positive(pg, "maxConnections", 10, "storage.postgres", source)),
            statement_cache_size=(
                _non_negative(pg, "statementCacheSize", 0, "storage.postgres", source)
                if "statementCacheSize" in pg
                else None
            ),
        )
        for key in ("connectionString", "adminConnectionString"):
            if key in pg:
                _check_url(pg[key], ("postgres", "postgresql"), f"storage.postgres.{key}", source)
    elif backend != "sqlite":
        raise ConfigError(
            f"{source}: storage.backend is {backend!r} but there is no storage.postgres section; "
            "add "
            f'"postgres": {{"connectionString": "{DEFAULT_APP_URL}"}} '
            "(scripts/setup-postgres.sh prints the connection strings)"
        )
    redis_raw = raw.get("redis", {})
    port = redis_raw.get("port", DEFAULT_REDIS_PORT)
    if not 1 <= port <= 65535:
        raise ConfigError(
            f"{source}: storage.redis.port {port} is out of range; use 1-65535 "
            f"(agentbus's own Redis listens on {DEFAULT_REDIS_PORT})"
        )
    redis = RedisConfig(
        host=redis_raw.get("host", "127.0.0.1"),
        port=port,
        db=int(_non_negative(redis_raw, "db", 0, "storage.redis", source)),
        password=redis_raw.get("password"),
    )
    sqlite_path = raw.get("sqlite", {}).get("path", "~/.agentbus/agentbus.db")
    keys_file = raw.get("serviceKeys", {}).get("masterKeyFile", "~/.agentbus/master.key")
    return StorageConfig(
        backend=cast(Backend, backend),
        read_from=read_from,
        write_to=write_to,
        sqlite=SQLiteConfig(path=Path(sqlite_path).expanduser()),
        postgres=postgres,
        redis=redis,
        embedding_dim=int(_positive(raw, "embeddingDim", 768, "storage", source)),
        service_keys=ServiceKeysConfig(master_key_file=Path(keys_file).expanduser()),
    )


def _routing(
    raw: Mapping[str, Any], backend: Backend, source: str
) -> tuple[Target, tuple[Target, ...]]:
    """Apply DESIGN's rules: sqlite => [sqlite]; postgres => postgres/[postgres]; dual => both."""
    defaults: dict[Backend, tuple[Target, tuple[Target, ...]]] = {
        "sqlite": ("sqlite", ("sqlite",)),
        "postgres": ("postgres", ("postgres",)),
        "dual": ("sqlite", ("sqlite", "postgres")),
    }
    read_from, write_to = defaults[backend]
    read_from = raw.get("readFrom", read_from)
    given_write = raw.get("writeTo")
    if given_write is not None:
        if not all(t in ("sqlite", "postgres") for t in given_write) or len(
            set(given_write)
        ) != len(given_write):
            raise ConfigError(
                f"{source}: storage.writeTo {given_write!r} is invalid; list distinct targets "
                'from "sqlite" and "postgres"'
            )
        write_to = tuple(given_write)
    if read_from not in ("sqlite", "postgres"):
        raise ConfigError(
            f'{source}: storage.readFrom {read_from!r} is unknown; use "sqlite" or "postgres"'
        )
    allowed: dict[Backend, str] = {
        "sqlite": 'readFrom "sqlite" and writeTo ["sqlite"]',
        "postgres": 'readFrom "postgres" and writeTo ["postgres"]',
        "dual": 'writeTo ["sqlite", "postgres"] and readFrom one of them',
    }
    ok = {
        "sqlite": read_from == "sqlite" and set(write_to) == {"sqlite"},
        "postgres": read_from == "postgres" and set(write_to) == {"postgres"},
        "dual": set(write_to) == {"sqlite", "postgres"},
    }[backend]
    if not ok:
        raise ConfigError(
            f"{source}: storage.backend {backend!r} with readFrom {read_from!r} and writeTo "
            f"{list(write_to)!r} is not allowed; backend {backend!r} needs {allowed[backend]} "
            "(or leave readFrom/writeTo out to get exactly that)"
        )
    return cast(Target, read_from), write_to


def _check_shape(raw: Mapping[str, Any], section: str, source: str) -> None:
    if not isinstance(raw, Mapping):
        where = section or "the top level"
        raise ConfigError(f"{source}: {where} must be a JSON object")
    schema = _SCHEMA[section]
    for key, value in raw.items():
        dotted = f"{section}.{key}" if section else key
        if key not in schema:
            known = ", ".join(sorted(schema))
            raise ConfigError(
                f"{source}: unknown key {dotted!r} (a typo?); keys allowed here are: {known}"
            )
        expected = schema[key]
        # bool is an int in Python; a boolean where a number belongs is still a mistake.
        if not isinstance(value, expected) or (isinstance(value, bool) and expected is not bool):
            names = expected.__name__ if isinstance(expected, type) else "number"
            raise ConfigError(f"{source}: {dotted} must be {_json_type(names)}, got {value!r}")
        if expected is dict:
            _check_shape(value, dotted, source)


def _json_type(python_name: str) -> str:
    names = {"str": "a string", "int": "an integer", "dict": "an object", "list": "a list"}
    return names.get(python_name, "a number")


def _positive(raw: Mapping[str, Any], key: str, default: float, section: str, source: str) -> float:
    value = raw.get(key, default)
    if value <= 0:
        raise ConfigError(
            f"{source}: {section}.{key} must be greater than 0, got {value!r}; "
            f"leave it out for the default {default!r}"
        )
    return float(value)


def _non_negative(raw: Mapping[str, Any], key: str, default: int, section: str, source: str) -> int:
    value = raw.get(key, default)
    if value < 0:
        raise ConfigError(f"{source}: {section}.{key} must be 0 or more, got {value!r}")
    return int(value)


def _check_url(url: str, schemes: tuple[str, ...], key: str, source: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in schemes or not parts.hostname:
        raise ConfigError(
            f"{source}: {key} {url!r} is not a {schemes[0]}:// URL; "
            f"e.g. {schemes[0]}://user@127.0.0.1:{DEFAULT_POSTGRES_PORT}/agentbus"
        )
    try:
        port = parts.port
    except ValueError:
        port = -1
    if port is not None and not 1 <= port <= 65535:
        raise ConfigError(f"{source}: {key} {url!r} has a port out of range; use 1-65535")


def _find_file(path: str | os.PathLike[str] | None, env: Mapping[str, str]) -> Path | None:
    if path is not None:
        return Path(path).expanduser()
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV]).expanduser()
    for candidate in (Path("agentbus.json"), Path("~/.agentbus/agentbus.json").expanduser()):
        if candidate.is_file():
            return candidate
    return None


def _read_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such config file; create it or unset {CONFIG_ENV} to use the defaults"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror}") from exc
    try:
        data = json.loads(text, object_pairs_hook=_reject_duplicates)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{path}: not valid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from exc
    except ValueError as exc:  # a duplicate key
        raise ConfigError(f"{path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a JSON object")
    return data


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"key {key!r} appears twice; keep one")
        result[key] = value
    return result


def _apply_single_values(
    raw: dict[str, Any], values: Mapping[str, str | None], origin: str
) -> None:
    """Write environment / argument values into the raw mapping (later calls win)."""
    storage = raw.setdefault("storage", {})
    if not isinstance(storage, dict):
        return  # parse_config reports the bad shape with the file name
    if values["redis_url"]:
        storage["redis"] = _parse_redis_url(values["redis_url"], origin)
    if values["postgres_url"]:
        _check_url(values["postgres_url"], ("postgres", "postgresql"), "AGENTBUS_PG_URL", origin)
        storage.setdefault("postgres", {})["connectionString"] = values["postgres_url"]
    if values["postgres_admin_url"]:
        url = values["postgres_admin_url"]
        _check_url(url, ("postgres", "postgresql"), "AGENTBUS_PG_ADMIN_URL", origin)
        storage.setdefault("postgres", {})["adminConnectionString"] = url
    if values["sqlite_path"]:
        storage.setdefault("sqlite", {})["path"] = values["sqlite_path"]


def _parse_redis_url(url: str, origin: str) -> dict[str, Any]:
    parts = urlsplit(url)
    if parts.scheme != "redis" or not parts.hostname:
        raise ConfigError(
            f"{origin}: redis URL {url!r} is invalid; use redis://host:port/db, "
            f"e.g. redis://127.0.0.1:{DEFAULT_REDIS_PORT}/0"
        )
    try:
        port = parts.port or DEFAULT_REDIS_PORT
    except ValueError:
        raise ConfigError(
            f"{origin}: redis URL {url!r} has a port out of range; use 1-65535"
        ) from None
    db_text = parts.path.lstrip("/") or "0"
    if not db_text.isdigit():
        raise ConfigError(f"{origin}: redis URL {url!r} has a bad db number {db_text!r}")
    result: dict[str, Any] = {"host": parts.hostname, "port": port, "db": int(db_text)}
    if parts.password:
        result["password"] = parts.password
    return result


def _deep_merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged
