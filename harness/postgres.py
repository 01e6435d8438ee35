"""PostgreSQL for Hydra's processes: an embedded server, or one given by conninfo.

`temporary_server` is a server for a while (a test session, a benchmark run):
the given conninfo, or an embedded server in a fresh directory, stopped and
removed afterwards. `EmbeddedServer` is one the caller owns for longer and may
stop and start again (the chaos tool's outages): it is always started from a
fresh ``python -c`` process, because ``pg_ctl start``, run as root, forks a
child that switches user, which is only safe in a process without gRPC
threads; and it is stopped by signal (fast shutdown, SIGINT to the postmaster),
as ``EmbeddedPostgres.stop()`` does.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import psycopg
from psycopg import sql

from harness.processes import STOP_TIMEOUT_S, clean_env, is_alive, wait_gone
from harness.wait import HarnessError

#: A throwaway server need not survive a crash; these make it several times faster.
FAST_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
#: Prints the conninfo of the server of a data directory, starting it if needed.
_START_CODE = (
    "import sys; from hydra.coordinator.embedded import EmbeddedPostgres; "
    "print(EmbeddedPostgres(sys.argv[1]).start(), flush=True)"
)
START_TIMEOUT_S = 90.0


@contextlib.contextmanager
def temporary_home(prefix: str = "hydra-home-") -> Iterator[Path]:
    """A fresh directory to serve as HYDRA_HOME, removed afterwards.

    Not under pytest's ``tmp_path``: run as root, the embedded server runs as
    another user, who must be able to traverse every parent of its data
    directory; pytest resets /tmp/pytest-of-<user> to mode 0700 whenever a
    session starts, so a second session running at the same time would lock
    that server out. Stop the servers in it before it is removed.
    """
    home = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)


@contextlib.contextmanager
def temporary_server(
    admin_conninfo: str | None = None, *, fast: bool = True, prefix: str = "hydra-home-"
) -> Iterator[str]:
    """The admin conninfo (database ``postgres``) of a server for the block.

    `admin_conninfo` if given; else an embedded server in a fresh directory,
    with `FAST_SETTINGS` if `fast`, stopped and removed at the end. It starts in
    this process: start it before this process creates any gRPC channel.
    """
    if admin_conninfo:
        yield admin_conninfo
        return
    from hydra.coordinator.embedded import EmbeddedPostgres

    with temporary_home(prefix) as home:
        server = EmbeddedPostgres.for_home(home, database="postgres")
        try:
            started = server.start()
            if fast:
                apply_settings(started, FAST_SETTINGS)
            yield started
        finally:
            server.stop()


def apply_settings(admin_conninfo: str, settings: Mapping[str, str]) -> None:
    """``ALTER SYSTEM SET`` each setting and reload (kept across restarts)."""
    with psycopg.connect(admin_conninfo, autocommit=True) as conn:
        for name, value in settings.items():
            conn.execute(
                sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name), sql.Literal(value))
            )
        conn.execute("SELECT pg_reload_conf()")


def make_fast(admin_conninfo: str) -> None:
    """Turn off the durability a throwaway server does not need."""
    apply_settings(admin_conninfo, FAST_SETTINGS)


def accepts_connections(conninfo: str) -> bool:
    """Whether the server answers a query now."""
    try:
        with psycopg.connect(conninfo, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error:
        return False
    return True


class EmbeddedServer:
    """The embedded PostgreSQL server with its data in ``home/pgdata``, started and
    stopped as often as the caller likes."""

    owned = True

    def __init__(self, home: Path, log_path: Path | None = None) -> None:
        """Describe the server; nothing starts before `start`.

        Args:
            log_path: where the starting process writes; default ``home/postgres.log``.
        """
        self.home = home.resolve()
        self.data_dir = self.home / "pgdata"
        self.log_path = log_path or home / "postgres.log"
        self.conninfo = ""
        self._starting: subprocess.Popen[str] | None = None

    def start(self) -> str:
        """Start the server and wait until it accepts connections; returns the conninfo.

        Raises:
            HarnessError: it did not start.
        """
        self.begin_start()
        assert self._starting is not None
        try:
            self._starting.wait(START_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self._starting.kill()
            self._starting.wait()
        if not self.start_finished():
            raise HarnessError(f"PostgreSQL did not start; see {self.log_path}")
        return self.conninfo

    def begin_start(self) -> None:
        """Start the server in the background; `start_finished` says when it is up."""
        with open(self.log_path, "a") as log:
            self._starting = subprocess.Popen(
                [sys.executable, "-c", _START_CODE, str(self.data_dir)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env=clean_env(),
                start_new_session=True,
            )

    @property
    def starting(self) -> bool:
        """A background start is still in progress."""
        return self._starting is not None and self._starting.poll() is None

    def start_finished(self) -> bool | None:
        """None while starting; then whether the server came up (only once per start)."""
        if self._starting is None or self._starting.poll() is None:
            return None
        starting, self._starting = self._starting, None
        output, _ = starting.communicate()  # closes the pipe, too
        if starting.returncode != 0 or not output.strip():
            return False
        self.conninfo = output.strip().splitlines()[-1]
        return True

    def postmaster_pid(self) -> int | None:
        """The pid of the running postmaster of this data directory, if any."""
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
            # A pid file left by a crash may name a process that is not ours now.
            ours = is_alive(pid) and str(self.home) in os.readlink(f"/proc/{pid}/cwd")
        except (FileNotFoundError, ProcessLookupError, PermissionError, ValueError):
            return None
        return pid if ours else None

    def begin_stop(self) -> bool:
        """Ask the postmaster for a fast shutdown; False if it was not running."""
        pid = self.postmaster_pid()
        if pid is None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGINT)
        return True

    @property
    def down(self) -> bool:
        """No postmaster runs."""
        return self.postmaster_pid() is None

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Fast shutdown and wait; immediate shutdown, then SIGKILL, if it takes too long.

        Also stops a server that another (perhaps killed) process started here.
        """
        if self._starting is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._starting.wait(START_TIMEOUT_S)
        pid = self.postmaster_pid()
        if pid is None:
            return
        for signum in (signal.SIGINT, signal.SIGQUIT, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)
            if wait_gone(pid, timeout):
                return


class ExternalServer:
    """A PostgreSQL server given by conninfo; never started, stopped or restarted."""

    owned = False
    down = False
    starting = False

    def __init__(self, conninfo: str) -> None:
        self.conninfo = conninfo

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Nothing to do: the server is not ours."""
