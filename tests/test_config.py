"""Configuration: defaults, precedence (file < env < argument) and one clear error per mistake."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agentbus import ConfigError, load_config, parse_config


def write(tmp_path: Path, data: Any, name: str = "agentbus.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


@pytest.fixture(autouse=True)
def _no_ambient_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Tests must not read the developer's ~/.agentbus or ./agentbus.json or AGENTBUS_* vars."""
    for var in ("AGENTBUS_CONFIG", "AGENTBUS_REDIS_URL", "AGENTBUS_PG_URL",
                "AGENTBUS_PG_ADMIN_URL", "AGENTBUS_SQLITE_PATH"):  # fmt: skip
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)


def test_defaults_are_the_embedded_setup() -> None:
    """Without any file the defaults are SQLite storage and the project Redis on 6380."""
    config = load_config()
    assert config.source == "<defaults>"
    assert config.storage.backend == "sqlite"
    assert config.storage.read_from == "sqlite"
    assert config.storage.write_to == ("sqlite",)
    assert config.storage.redis.url == "redis://127.0.0.1:6380/0"
    assert config.storage.postgres is None
    assert config.storage.embedding_dim == 768
    assert config.storage.sqlite.path == Path.home() / ".agentbus" / "agentbus.db"
    assert config.bus.namespace == "agentbus"
    assert (config.bus.lease_ttl, config.bus.max_deliveries) == (30.0, 5)
    assert (config.bus.max_payload_bytes, config.bus.dedup_ttl) == (1_048_576, 86_400.0)


def test_file_lookup_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """$AGENTBUS_CONFIG beats ./agentbus.json, which beats ~/.agentbus/agentbus.json."""
    home_dir = Path.home() / ".agentbus"
    home_dir.mkdir(parents=True)
    write(home_dir, {"bus": {"namespace": "home"}})
    assert load_config().bus.namespace == "home"
    write(tmp_path, {"bus": {"namespace": "cwd"}})
    assert load_config().bus.namespace == "cwd"
    env_file = write(tmp_path, {"bus": {"namespace": "env"}}, "other.json")
    monkeypatch.setenv("AGENTBUS_CONFIG", str(env_file))
    assert load_config().bus.namespace == "env"
    explicit = write(tmp_path, {"bus": {"namespace": "explicit"}}, "explicit.json")
    assert load_config(explicit).bus.namespace == "explicit"


def test_precedence_file_then_environment_then_argument(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each layer overrides the one before it, value by value."""
    path = write(tmp_path, {"storage": {"redis": {"host": "10.0.0.1", "port": 7000, "db": 2},
                                        "sqlite": {"path": "/file.db"}}})  # fmt: skip
    config = load_config(path)
    assert config.storage.redis.url == "redis://10.0.0.1:7000/2"
    assert config.storage.sqlite.path == Path("/file.db")

    monkeypatch.setenv("AGENTBUS_REDIS_URL", "redis://127.0.0.2:7001/3")
    monkeypatch.setenv("AGENTBUS_SQLITE_PATH", "/env.db")
    config = load_config(path)
    assert config.storage.redis.url == "redis://127.0.0.2:7001/3"
    assert config.storage.sqlite.path == Path("/env.db")

    config = load_config(path, redis_url="redis://127.0.0.3:7002/4", sqlite_path="/arg.db")
    assert config.storage.redis.url == "redis://127.0.0.3:7002/4"
    assert config.storage.sqlite.path == Path("/arg.db")


def test_postgres_urls_from_environment_and_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    """AGENTBUS_PG_URL / AGENTBUS_PG_ADMIN_URL fill the postgres section; arguments win."""
    monkeypatch.setenv("AGENTBUS_PG_URL", "postgres://app@127.0.0.1:5433/agentbus")
    monkeypatch.setenv("AGENTBUS_PG_ADMIN_URL", "postgres://owner@127.0.0.1:5433/agentbus")
    config = load_config(overrides={"storage": {"backend": "postgres"}})
    assert config.storage.postgres is not None
    assert config.storage.postgres.connection_string == "postgres://app@127.0.0.1:5433/agentbus"
    assert config.storage.postgres.admin_connection_string == (
        "postgres://owner@127.0.0.1:5433/agentbus"
    )
    config = load_config(postgres_url="postgres://other@127.0.0.1:5434/x")
    assert config.storage.postgres is not None
    assert config.storage.postgres.connection_string == "postgres://other@127.0.0.1:5434/x"


def test_argentos_storage_section_works_unchanged() -> None:
    """The storage section of an ArgentOS argent.json parses as it is."""
    argentos = {
        "storage": {
            "backend": "dual",
            "readFrom": "postgres",
            "writeTo": ["sqlite", "postgres"],
            "postgres": {"connectionString": "postgres://localhost:5433/argentos"},
            "redis": {"host": "localhost", "port": 6380, "db": 0},
        }
    }
    config = parse_config(argentos)
    assert config.storage.backend == "dual"
    assert config.storage.read_from == "postgres"
    assert config.storage.write_to == ("sqlite", "postgres")


@pytest.mark.parametrize(
    ("storage", "expected_read", "expected_write"),
    [
        ({"backend": "postgres", "postgres": {}}, "postgres", ("postgres",)),
        ({"backend": "dual", "postgres": {}}, "sqlite", ("sqlite", "postgres")),
        ({"backend": "dual", "readFrom": "postgres", "postgres": {}}, "postgres",
         ("sqlite", "postgres")),
    ],
)  # fmt: skip
def test_routing_defaults_follow_backend(
    storage: dict[str, Any], expected_read: str, expected_write: tuple[str, ...]
) -> None:
    """readFrom / writeTo left out take the only values the backend allows."""
    config = parse_config({"storage": storage})
    assert config.storage.read_from == expected_read
    assert config.storage.write_to == expected_write


BAD_CONFIGS = [
    ({"storage": {"backend": "mysql"}}, "storage.backend 'mysql' is unknown"),
    ({"storage": {"backend": "sqlite", "readFrom": "postgres"}}, "needs readFrom \"sqlite\""),
    ({"storage": {"backend": "sqlite", "writeTo": ["sqlite", "postgres"]}}, "is not allowed"),
    ({"storage": {"backend": "postgres", "postgres": {}, "writeTo": ["sqlite"]}},
     "needs readFrom \"postgres\""),
    ({"storage": {"backend": "dual", "postgres": {}, "writeTo": ["postgres"]}},
     "writeTo [\"sqlite\", \"postgres\"]"),
    ({"storage": {"backend": "dual", "postgres": {}, "readFrom": "redis"}},
     "readFrom 'redis' is unknown"),
    ({"storage": {"writeTo": ["sqlite", "sqlite"]}}, "distinct targets"),
    ({"storage": {"backend": "dual"}}, "no storage.postgres section"),
    ({"storage": {"backend": "postgres"}}, "no storage.postgres section"),
    ({"storage": {"redis": {"port": 70000}}}, "port 70000 is out of range"),
    ({"storage": {"redis": {"port": 0}}}, "out of range"),
    ({"storage": {"postgres": {"connectionString": "postgres://h:99999/db"}}},
     "port out of range"),
    ({"storage": {"postgres": {"connectionString": "mysql://h/db"}}}, "is not a postgres:// URL"),
    ({"storage": {"backnd": "sqlite"}}, "unknown key 'storage.backnd'"),
    ({"bus": {"leaseTTL": 5}}, "unknown key 'bus.leaseTTL'"),
    ({"storge": {}}, "unknown key 'storge'"),
    ({"bus": {"leaseTtl": 0}}, "bus.leaseTtl must be greater than 0"),
    ({"bus": {"dedupTtl": -1}}, "bus.dedupTtl must be greater than 0"),
    ({"bus": {"maxDeliveries": 0}}, "bus.maxDeliveries must be greater than 0"),
    ({"bus": {"maxPayloadBytes": -5}}, "bus.maxPayloadBytes must be greater than 0"),
    ({"storage": {"postgres": {"maxConnections": 0}}}, "maxConnections must be greater than 0"),
    ({"storage": {"embeddingDim": 0}}, "embeddingDim must be greater than 0"),
    ({"bus": {"leaseTtl": "30"}}, "bus.leaseTtl must be a number"),
    ({"bus": {"maxDeliveries": True}}, "bus.maxDeliveries must be an integer"),
    ({"bus": {"namespace": "a:b"}}, "bus.namespace 'a:b' is invalid"),
    ({"storage": []}, "storage must be an object"),
]  # fmt: skip


@pytest.mark.parametrize(("raw", "message"), BAD_CONFIGS)
def test_bad_config_names_file_key_and_fix(tmp_path: Path, raw: Any, message: str) -> None:
    """Every mistake is a ConfigError (a ValueError) naming the file and the key."""
    path = write(tmp_path, raw)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert isinstance(caught.value, ValueError)
    text = str(caught.value)
    assert str(path) in text
    assert message in text


def test_missing_and_malformed_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A named file that is missing, not JSON or has a duplicate key is a ConfigError."""
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.json")
    monkeypatch.setenv("AGENTBUS_CONFIG", str(tmp_path / "gone.json"))
    with pytest.raises(ConfigError, match=r"gone\.json: no such config file"):
        load_config()
    broken = tmp_path / "broken.json"
    broken.write_text('{"bus": {')
    with pytest.raises(ConfigError, match="not valid JSON at line 1"):
        load_config(broken)
    duplicated = tmp_path / "dup.json"
    duplicated.write_text('{"bus": {"namespace": "a", "namespace": "b"}}')
    with pytest.raises(ConfigError, match="'namespace' appears twice"):
        load_config(duplicated)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("AGENTBUS_REDIS_URL", "http://x:6380", "redis URL 'http://x:6380' is invalid"),
        ("AGENTBUS_REDIS_URL", "redis://x:99999/0", "port out of range"),
        ("AGENTBUS_REDIS_URL", "redis://x:6380/zero", "bad db number"),
        ("AGENTBUS_PG_URL", "localhost:5433", "AGENTBUS_PG_URL 'localhost:5433' is not a"),
    ],
)
def test_bad_environment_values(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    """A malformed URL in the environment is a ConfigError naming the variable."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match="environment") as caught:
        load_config()
    assert message in str(caught.value)
