"""A private PostgreSQL cluster (with pgvector) for tests: its own data dir and port, killable.

Tests get a cluster of their own instead of the developer's, so killing or reconfiguring it
cannot disturb anything else. The database and roles are made by the same SQL file as
``scripts/setup-postgres.sh`` uses, so tests see the production role layout.

Linux only: PostgreSQL refuses to run as root, so as root every server tool runs through
``runuser -u postgres --``.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
import weakref
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from types import TracebackType

from ._errors import ServerUnavailableError
from ._ports import free_port

_MIN_VECTOR = (0, 8)
_INSTALL_HINT = "run scripts/setup-postgres.sh install"
_START_TIMEOUT = 30.0
_STOP_TIMEOUT = 10.0
# Durability is worthless in a throwaway cluster and costs most of the start-up and test time.
_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "shared_buffers": "128MB",
    "max_connections": "100",
    "logging_collector": "off",
}


def _find_bindir() -> Path:
    """The server's bin directory: the highest /usr/lib/postgresql/N (Debian), else PATH."""
    debian = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_config"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else -1,
    )
    pg_config = str(debian[-1]) if debian else shutil.which("pg_config")
    if pg_config is None:
        raise ServerUnavailableError(f"PostgreSQL is not installed (no pg_config); {_INSTALL_HINT}")
    bindir = Path(_output([pg_config, "--bindir"]))
    tools = ("initdb", "pg_ctl", "postgres", "psql", "pg_config")
    missing = [tool for tool in tools if not (bindir / tool).exists()]
    if missing:
        raise ServerUnavailableError(
            f"PostgreSQL server binaries {missing} not in {bindir}; {_INSTALL_HINT}"
        )
    return bindir


def _check_pgvector(bindir: Path) -> None:
    """pgvector >= 0.8 (iterative HNSW scans) must be installed for this server."""
    control = Path(_output([str(bindir / "pg_config"), "--sharedir"])) / "extension/vector.control"
    text = control.read_text() if control.exists() else ""
    match = re.search(r"^\s*default_version\s*=\s*'([0-9.]+)'", text, re.MULTILINE)
    version = tuple(int(part) for part in match.group(1).split(".")) if match else ()
    if version < _MIN_VECTOR:
        found = match.group(1) if match else "not installed"
        raise ServerUnavailableError(
            f"pgvector >= 0.8 is needed for {bindir.parent.name}, found {found}; {_INSTALL_HINT}"
        )


def _default_base_dir() -> str:
    """/dev/shm when it is roomy, else the temp dir.

    initdb writes ~40 MB: 1.3 s on this VM's disk, 0.45 s on tmpfs, and a throwaway cluster
    loses nothing by living in RAM. A small /dev/shm (Docker's default is 64 MB) is skipped.
    """
    try:
        shm = os.statvfs("/dev/shm")
        if shm.f_bavail * shm.f_frsize >= 1 << 30 and os.access("/dev/shm", os.W_OK | os.X_OK):
            return "/dev/shm"
    except OSError:
        pass
    return tempfile.gettempdir()


def _output(args: list[str]) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout.strip()


def _clean_env() -> dict[str, str]:
    # PGHOST, PGPORT, PGDATABASE... from the developer's shell would point psql elsewhere.
    return {k: v for k, v in os.environ.items() if not k.startswith("PG")}


def _pid_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie (an unreaped one no longer runs)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _group_alive(pgid: int) -> bool:
    """True while any live process is in process group ``pgid`` (the postmaster's children)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[2] == str(pgid) and fields[0] != "Z":
            return True
    return False


def _wait(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


class PostgresServer:
    """A PostgreSQL cluster on 127.0.0.1 with database ``agentbus``, pgvector and the two roles.

    Roles (DESIGN.md §4): ``postgres`` (superuser), ``agentbus_owner`` (owns the schema, runs
    migrations, BYPASSRLS) and ``agentbus_app`` (what agents use: row-level security applies).
    Authentication is ``trust``: the cluster only listens on loopback and lives for one test run.
    """

    def __init__(self, *, bindir: Path, base_dir: Path, port: int, prefix: list[str]) -> None:
        self.port = port
        self.base_dir = base_dir
        self.data_dir = base_dir / "data"
        self.bindir = bindir  # psql and friends for callers, matching the server's version
        self._prefix = prefix
        # Removes the cluster even if a test forgets close(): a leaked postmaster would outlive
        # pytest. Calling it a second time does nothing, which makes close() idempotent.
        self._finalizer = weakref.finalize(self, _destroy, bindir, base_dir, prefix)

    @classmethod
    def start(cls, *, port: int | None = None, base_dir: str | None = None) -> PostgresServer:
        """Create and start a cluster, then create the database, extension and roles.

        Args:
            port: TCP port; a free one when omitted (retried if another process takes it first).
            base_dir: where to make the cluster's directory; /dev/shm or the temp dir by
                default. As root it must be traversable by the ``postgres`` user.

        Raises:
            ServerUnavailableError: the server binaries or pgvector >= 0.8 are missing, or the
                server did not come up.
        """
        bindir = _find_bindir()
        _check_pgvector(bindir)
        prefix: list[str] = []
        owner: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                raise ServerUnavailableError(f"no 'postgres' user; {_INSTALL_HINT}") from None
            prefix = ["runuser", "-u", "postgres", "--"]
        for attempt in range(3):
            # Not under pytest's tmp_path: that is mode 0700 under root, which the postgres user
            # cannot enter.
            base = Path(
                tempfile.mkdtemp(prefix="agentbus-pg-", dir=base_dir or _default_base_dir())
            )
            if owner is not None:
                os.chown(base, owner.pw_uid, owner.pw_gid)
            server = cls(bindir=bindir, base_dir=base, port=port or free_port(), prefix=prefix)
            try:
                server._init()
                server._pg_ctl_start()
                server._setup_roles()
                return server
            except ServerUnavailableError as exc:
                server.close()
                # A free port can be taken between choosing and binding it: choose again.
                if port is not None or attempt == 2 or "already in use" not in str(exc):
                    raise
        raise AssertionError("unreachable")

    # --- connection strings -------------------------------------------------------------------

    def dsn_for(self, user: str, database: str = "agentbus") -> str:
        return f"postgres://{user}@127.0.0.1:{self.port}/{database}"

    @property
    def superuser_dsn(self) -> str:
        return self.dsn_for("postgres")

    @property
    def owner_dsn(self) -> str:
        return self.dsn_for("agentbus_owner")

    @property
    def app_dsn(self) -> str:
        return self.dsn_for("agentbus_app")

    # --- process control ----------------------------------------------------------------------

    @property
    def pid(self) -> int:
        """The postmaster's pid (first line of postmaster.pid)."""
        pid = self._pidfile_pid()
        if pid is None or not _pid_alive(pid):
            raise RuntimeError("the server is not running")
        return pid

    def is_running(self) -> bool:
        pid = self._pidfile_pid()
        return pid is not None and _pid_alive(pid)

    def stop(self) -> None:
        """Fast shutdown: sessions are disconnected, a checkpoint is written. No-op if stopped."""
        if self.is_running():
            self._run(self._pg_ctl("stop", "-m", "fast", "-t", str(int(_STOP_TIMEOUT))))

    def kill(self) -> None:
        """SIGKILL the postmaster and every backend at once: what a crash looks like.

        pg_ctl makes the postmaster a session leader, so its process group is the whole server.
        Returns once all of them are gone, so that a restart does not find the old shared memory
        still attached.
        """
        pid = self._pidfile_pid()
        if pid is None or not _pid_alive(pid):
            return
        _kill_group(pid)

    def restart(self) -> None:
        """Start again on the same data dir and port (after stop() or kill(): crash recovery)."""
        self.stop()
        self._pg_ctl_start()

    def close(self) -> None:
        """Stop the server (if running) and remove its directory. Idempotent."""
        self._finalizer()

    def __enter__(self) -> PostgresServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- internals ----------------------------------------------------------------------------

    def _run(self, args: list[str], stdin: str | None = None) -> None:
        # cwd: as root, the caller's directory (e.g. /root) may be closed to the postgres user.
        result = subprocess.run(
            [*self._prefix, *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=_clean_env(),
            cwd=self.base_dir,
            check=False,
        )
        if result.returncode != 0:
            raise ServerUnavailableError(
                f"{Path(args[0]).name} failed ({result.returncode}): {result.stderr.strip()}"
                f"{self._log_tail()}"
            )

    def _pg_ctl(self, *args: str) -> list[str]:
        return [str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), "-w", *args]

    def _init(self) -> None:
        self._run([
            str(self.bindir / "initdb"), "-D", str(self.data_dir), "-U", "postgres",
            "--auth=trust", "--no-sync", "--encoding=UTF8", "--locale=C.UTF-8",
        ])  # fmt: skip
        settings = {
            **_SETTINGS,
            "port": str(self.port),
            # A private socket dir: nothing else on the machine can reach it, and /tmp or
            # /var/run/postgresql (the system cluster's) stay untouched.
            "unix_socket_directories": f"'{self.data_dir}'",
        }
        lines = "".join(f"{key} = {value}\n" for key, value in settings.items())
        # Written as the server's user, through the same runner as the server tools.
        self._run(["sh", "-c", 'cat >> "$1"', "sh", str(self.data_dir / "postgresql.conf")], lines)

    def _pg_ctl_start(self) -> None:
        self._clear_stale_locks()
        log = self.base_dir / "server.log"
        self._run(self._pg_ctl("start", "-t", str(int(_START_TIMEOUT)), "-l", str(log)))

    def _setup_roles(self) -> None:
        sql = resources.files("agentbus.testing").joinpath("postgres_roles.sql").read_text()
        psql = [
            str(self.bindir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1",
            "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", "postgres",
        ]  # fmt: skip
        self._run(psql, stdin=sql)

    def _clear_stale_locks(self) -> None:
        """Remove the lock files a killed server left behind, once none of its processes runs.

        PostgreSQL would clean them up itself, but it tests the old pid with kill(pid, 0), which
        succeeds on a zombie, and a killed postmaster stays a zombie until init reaps it (1-2 s
        here, never under an init that does not reap). The shared memory segment needs nothing:
        PostgreSQL removes an old one that no process is attached to.
        """
        pid = self._pidfile_pid()
        if pid is None or _pid_alive(pid):
            return
        if not _wait(lambda: not _group_alive(pid), _STOP_TIMEOUT):
            raise ServerUnavailableError(f"backends of the killed postmaster {pid} still run")
        (self.data_dir / "postmaster.pid").unlink(missing_ok=True)
        (self.data_dir / f".s.PGSQL.{self.port}.lock").unlink(missing_ok=True)

    def _pidfile_pid(self) -> int | None:
        try:
            first = (self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0]
        except OSError:
            return None
        return int(first) if first.strip().isdigit() else None

    def _log_tail(self) -> str:
        log = self.base_dir / "server.log"
        try:
            return "\nserver.log:\n" + log.read_text(errors="replace")[-800:]
        except OSError:
            return ""


def _kill_group(pid: int) -> None:
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    if not _wait(lambda: not _group_alive(pid) and not _pid_alive(pid), _STOP_TIMEOUT):
        raise RuntimeError(f"PostgreSQL processes of pid {pid} survived SIGKILL")


def _destroy(bindir: Path, base_dir: Path, prefix: list[str]) -> None:
    """Stop the cluster without a checkpoint (its data is thrown away) and remove its files.

    A module function, not a method: weakref.finalize must not hold the server object.
    """
    data_dir = base_dir / "data"
    pid_file = data_dir / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        pid = None
    if pid is not None and _pid_alive(pid):
        stop = [str(bindir / "pg_ctl"), "-D", str(data_dir), "-w", "-m", "immediate", "stop"]
        done = subprocess.run(
            [*prefix, *stop], capture_output=True, env=_clean_env(), cwd=base_dir, check=False
        )
        if done.returncode != 0:
            _kill_group(pid)
    shutil.rmtree(base_dir, ignore_errors=True)
