"""The PostgreSQL server of a chaos run: an embedded one it owns (and may
restart), or one given with ``--db`` (never restarted).

The embedded server is always started from a fresh ``python -c`` process:
run as root, ``pg_ctl start`` forks a child that switches user, which is only
safe in a process without gRPC threads. It is stopped by signal (fast
shutdown, SIGINT to the postmaster), as ``EmbeddedPostgres.stop()`` does.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import psycopg
from psycopg import sql

from bench.chaos.processes import PYTHON, STOP_TIMEOUT_S, clean_env

#: Prints the conninfo of the server of a data directory, starting it if needed.
_START_CODE = (
    "import sys; from hydra.coordinator.embedded import EmbeddedPostgres; "
    "print(EmbeddedPostgres(sys.argv[1]).start(), flush=True)"
)
#: A throwaway server need not survive a power cut; these make it several times faster.
FAST_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
START_TIMEOUT_S = 90.0


class EmbeddedServer:
    """The embedded PostgreSQL server with its data in ``home/pgdata``."""

    owned = True

    def __init__(self, home: Path, log_path: Path) -> None:
        self.data_dir = (home / "pgdata").resolve()
        self.log_path = log_path
        self.conninfo = ""
        self._starting: subprocess.Popen[str] | None = None

    def start(self) -> str:
        """Start the server and wait until it accepts connections; returns the conninfo."""
        self.begin_start()
        assert self._starting is not None
        try:
            self._starting.wait(START_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self._starting.kill()
            self._starting.wait()
        if not self.start_finished():
            raise RuntimeError(f"PostgreSQL did not start; see {self.log_path}")
        return self.conninfo

    def begin_start(self) -> None:
        """Start the server in the background; `start_finished` says when it is up."""
        with open(self.log_path, "a") as log:
            self._starting = subprocess.Popen(
                [PYTHON, "-c", _START_CODE, str(self.data_dir)],
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
        output = starting.stdout.read() if starting.stdout else ""
        if starting.returncode != 0 or not output.strip():
            return False
        self.conninfo = output.strip().splitlines()[-1]
        return True

    def postmaster_pid(self) -> int | None:
        """The pid of the running postmaster, if any."""
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (FileNotFoundError, ValueError):
            return None
        return pid if _alive(pid) else None

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
        """Fast shutdown and wait; immediate shutdown, then SIGKILL, if it takes too long."""
        if self._starting is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._starting.wait(START_TIMEOUT_S)
        pid = self.postmaster_pid()
        if pid is None:
            return
        for signum in (signal.SIGINT, signal.SIGQUIT, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)
            if _wait_gone(pid, timeout):
                return


class ExternalServer:
    """A PostgreSQL server given by conninfo; the chaos run never restarts it."""

    owned = False
    down = False
    starting = False

    def __init__(self, conninfo: str) -> None:
        self.conninfo = conninfo

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Nothing to do: the server is not ours."""


def make_fast(conninfo: str) -> None:
    """Turn off durability the test does not need (kept across restarts)."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for name, value in FAST_SETTINGS.items():
            conn.execute(
                sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name), sql.Literal(value))
            )
        conn.execute("SELECT pg_reload_conf()")


def accepts_connections(conninfo: str) -> bool:
    """Whether the server answers a query now."""
    try:
        with psycopg.connect(conninfo, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error:
        return False
    return True


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[-1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
