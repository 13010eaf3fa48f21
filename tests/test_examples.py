"""The demo and the examples run against real servers and say what they should."""

from __future__ import annotations

import base64
import importlib.util
import os
import sys
from pathlib import Path

import pytest

from agentbus._cli import main as cli_main
from agentbus.testing import RedisServer

ROOT = Path(__file__).resolve().parents[1]


def test_demo_runs_on_the_embedded_default(
    redis_server: RedisServer, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """`agentbus demo` exchanges messages, shows presence/state/heartbeat and uses storage."""
    monkeypatch.delenv("AGENTBUS_CONFIG", raising=False)
    # The demo stores a service key: a master key of the test's own, not one in ~/.agentbus.
    monkeypatch.setenv("AGENTBUS_MASTER_KEY", base64.b64encode(os.urandom(32)).decode())
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "demo.db"
    assert cli_main(["--redis-url", redis_server.url, "--sqlite-path", str(db), "demo"]) == 0
    out = capsys.readouterr().out
    assert "request/reply: {'answer': 'meaning -> 42'}" in out
    assert "reason=error after 5 attempts" in out
    assert "a failing request answers at once with RemoteError" in out
    assert "online: demo-planner" in out
    assert "is now pending" in out
    assert "team broadcast to ['demo-researcher']" in out
    assert "finds 0 hits for 'roll back release'" in out
    assert "after grant(read): 1 hit(s)" in out
    assert "after revoke: 0 hits" in out
    assert "read back as SecretValue('***'), matches: True" in out
    assert "s3cr3t-value" not in out
    assert db.exists()


def test_status_command_shows_the_family(
    redis_server: RedisServer, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """`agentbus status` prints every registered agent with its status and mailbox counters."""
    monkeypatch.delenv("AGENTBUS_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    db = str(tmp_path / "demo.db")
    assert cli_main(["--redis-url", redis_server.url, "--sqlite-path", db, "demo"]) == 0
    capsys.readouterr()
    assert cli_main(["--redis-url", redis_server.url, "status"]) == 0
    out = capsys.readouterr().out
    assert "demo-researcher" in out
    assert "family heartbeat demo-beat: ok" in out
    with pytest.raises(SystemExit):
        cli_main(["status", "--limit", "0"])


def test_config_command_prints_the_resolved_configuration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`agentbus config` prints JSON with the environment applied; bad config exits 1."""
    monkeypatch.delenv("AGENTBUS_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AGENTBUS_REDIS_URL", "redis://127.0.0.1:7777/2")
    assert cli_main(["config"]) == 0
    assert '"port": 7777' in capsys.readouterr().out
    bad = tmp_path / "bad.json"
    bad.write_text('{"storage": {"backend": "mongo"}}')
    assert cli_main(["--config", str(bad), "config"]) == 1
    assert "storage.backend 'mongo' is unknown" in capsys.readouterr().err


@pytest.mark.anyio
async def test_request_reply_example(redis_server: RedisServer) -> None:
    """examples/request_reply.py answers a question and delivers a task."""
    spec = importlib.util.spec_from_file_location(
        "request_reply", ROOT / "examples" / "request_reply.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["request_reply"] = module
    spec.loader.exec_module(module)
    seen = await module.main(redis_server.url)
    assert seen == ["you asked: why?", "task t1 from planner"]
