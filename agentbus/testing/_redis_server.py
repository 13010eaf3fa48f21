"""A private ``redis-server`` process for tests: its own port, its own data dir, killable.

Tests that kill, restart or reconfigure Redis get a server of their own, so nothing they do can
disturb another test (or the machine's own Redis).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from ._errors import ServerUnavailableError
from ._ports import free_port

_START_TIMEOUT = 10.0


class RedisServer:
    """A ``redis-server`` child process on 127.0.0.1.

    Configured like the project Redis (AOF ``everysec``, ``noeviction``) so tests see the same
    durability and memory behaviour as production.
    """

    def __init__(self, *, port: int, data_dir: Path, extra_args: tuple[str, ...] = ()) -> None:
        self.port = port
        self.data_dir = data_dir
        self._extra_args = extra_args
        self._process: subprocess.Popen[bytes] | None = None
        self._owns_dir = False

    @classmethod
    def start(
        cls,
        *,
        port: int | None = None,
        data_dir: str | os.PathLike[str] | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> RedisServer:
        """Start a server and wait until it answers PING.

        Raises:
            ServerUnavailableError: ``redis-server`` is not installed or did not come up.
        """
        owns_dir = data_dir is None
        directory = Path(data_dir or tempfile.mkdtemp(prefix="agentbus-redis-"))
        for attempt in range(3):
            server = cls(port=port or free_port(), data_dir=directory, extra_args=extra_args)
            server._owns_dir = owns_dir
            try:
                server._spawn()
                return server
            except ServerUnavailableError:
                server.close()
                if port is not None or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError("the server is not running")
        return self._process.pid

    def _spawn(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise ServerUnavailableError(
                "redis-server is not installed; run scripts/setup-redis.sh install"
            )
        args = [
            binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir),
            "--save", "",
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--maxmemory-policy", "noeviction",
            "--daemonize", "no",
            "--logfile", str(self.data_dir / "redis.log"),
            *self._extra_args,
        ]  # fmt: skip
        self._process = subprocess.Popen(args, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                break
            if self.ping():
                return
            time.sleep(0.02)
        log = self.data_dir / "redis.log"
        tail = log.read_text(errors="replace")[-800:] if log.exists() else ""
        self._terminate()
        raise ServerUnavailableError(f"redis-server on port {self.port} did not start:\n{tail}")

    def ping(self) -> bool:
        """True when the server answers PING with PONG (not LOADING, not refused)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final fsync (what a crash looks like)."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGKILL)
            self._process.wait()

    def stop(self) -> None:
        """Graceful shutdown: Redis flushes the AOF before it exits."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self, *, graceful: bool = True) -> None:
        """Stop (gracefully or with SIGKILL) and start again on the same port and data dir."""
        if graceful:
            self.stop()
        else:
            self.kill()
        self._spawn()

    def _terminate(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()

    def close(self) -> None:
        """Stop the server and remove its data dir (if this object created it). Idempotent."""
        self._terminate()
        if self._owns_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
