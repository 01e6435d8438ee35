"""The context every benchmark runs in: the PostgreSQL server and a database of
its own, Hydra's processes on 127.0.0.1 with the benchmarks' settings, and
the sweep that leaves nothing running.

Coordinators and agents are ``python -m hydra ...`` children (so their RSS
and CPU can be read from /proc and an agent can be SIGKILLed), started and
always stopped by :mod:`harness`; every one carries `MARKER_ENV`.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg.rows import dict_row

from bench.procfs import cpu_seconds, kill_pids, pids_with_env
from bench.results import Result
from bench.tls import BenchTls
from harness import hydra
from harness.hydra import Coordinator, LeaseTiming
from harness.postgres import temporary_server
from harness.processes import Process, Processes
from hydra.tls import ClientTls

#: Every process a benchmark run starts carries this variable, set to the run's
#: id; attempts inherit it from their agent, so a final sweep finds leftovers.
MARKER_ENV = "HYDRA_BENCH_RUN"


class Sql:
    """One autocommit connection (UTC) for reading and poking a database directly."""

    def __init__(self, conninfo: str) -> None:
        self._conn = psycopg.connect(conninfo, autocommit=True, row_factory=dict_row)
        self._conn.execute("SET TIME ZONE 'UTC'")

    def rows(self, query: str, *params: Any) -> list[dict[str, Any]]:
        """Every row of a query."""
        return self._conn.execute(query, params or None).fetchall()

    def value(self, query: str, *params: Any) -> Any:
        """The first column of the first row, or None."""
        rows = self.rows(query, *params)
        return next(iter(rows[0].values())) if rows else None

    def execute(self, query: str, *params: Any) -> None:
        """Run a statement for its effect."""
        self._conn.execute(query, params or None)

    def execute_params(self, query: str, params: dict[str, Any]) -> None:
        """Run a statement with named parameters for its effect."""
        self._conn.execute(query, params)

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class Postgres:
    """The benchmarks' server: the one at ``admin_conninfo``, or an embedded one
    (:func:`harness.postgres.temporary_server`, fast under ``--fast-pg``).

    Start it before this process creates any gRPC channel: the wheel's pg_ctl
    forks a child that switches user, which is unsafe in a process with gRPC
    threads.
    """

    def __init__(self, admin_conninfo: str | None, *, fast: bool, prefix: str) -> None:
        self.admin_conninfo = admin_conninfo or ""
        self.embedded = admin_conninfo is None
        self._prefix = prefix
        self._server = temporary_server(admin_conninfo, fast=fast, prefix="hydra-bench-pg-")

    def __enter__(self) -> Self:
        self.admin_conninfo = self._server.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._server.__exit__(exc_type, exc, traceback)

    def conninfo(self, database: str) -> str:
        """Conninfo of a database on this server."""
        return make_conninfo(self.admin_conninfo, dbname=database)

    def database_name(self, name: str) -> str:
        """The full name of a benchmark's database (prefixed by the run)."""
        return f"{self._prefix}_{name}"

    @contextlib.contextmanager
    def database(self, name: str) -> Iterator[str]:
        """A fresh, empty database for the block; its conninfo. Dropped afterwards."""
        full = self.database_name(name)
        self._admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)"), full)
        self._admin(sql.SQL("CREATE DATABASE {}"), full)
        try:
            yield self.conninfo(full)
        finally:
            self._admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)"), full)

    def _admin(self, statement: sql.SQL, name: str) -> None:
        with psycopg.connect(self.admin_conninfo, autocommit=True) as conn:
            conn.execute(statement.format(sql.Identifier(name)))

    def settings(self) -> dict[str, str]:
        """The server settings that matter to the figures."""
        names = ["server_version", "fsync", "synchronous_commit", "shared_buffers"]
        with psycopg.connect(self.admin_conninfo, autocommit=True) as conn:
            return {name: str(conn.execute(f"SHOW {name}").fetchone()[0]) for name in names}  # type: ignore[index]


@dataclass(kw_only=True)
class Context:
    """What a benchmark gets: the server, where to log, the mode, earlier results."""

    postgres: Postgres
    results_dir: Path
    marker: str
    smoke: bool = False
    #: Overrides the number of runs/jobs of throughput and peer.
    runs: int | None = None
    #: Results of the benchmarks already run in this invocation (ceiling, peer).
    earlier: dict[str, Result] = field(default_factory=dict)
    #: ``--tls``: coordinators serve TLS, agents and clients verify it.
    tls: BenchTls | None = None

    @property
    def client_tls(self) -> ClientTls | None:
        """How the SDK reaches the coordinators."""
        return self.tls.client() if self.tls else None

    def agent_flags(self) -> list[str]:
        """Extra ``hydra agent`` flags (TLS)."""
        return self.tls.agent_flags() if self.tls else []

    @contextlib.contextmanager
    def processes(self, name: str) -> Iterator[Processes]:
        """Children of one benchmark, marked with the run's id and logging to
        ``<results>/logs/<name>/`` (emptied first); all stopped when the block ends,
        then whatever still carries the marker."""
        # Agents pass the marker on to their attempts (they pass little of their own
        # environment), so that the sweep finds attempts a killed agent left behind.
        env = {**os.environ, MARKER_ENV: self.marker, "HYDRA_PASS_ENV": MARKER_ENV}
        log_dir = self.results_dir / "logs" / name
        try:
            with Processes(log_dir, env=env, fresh_logs=True) as started:
                yield started
        finally:
            sweep(self.marker)

    def earlier_value(self, benchmark: str, metric: str) -> float | None:
        """A metric of a benchmark run earlier in this invocation, or None."""
        result = self.earlier.get(benchmark)
        return result.value(metric) if result is not None else None

    def database(self, name: str) -> contextlib.AbstractContextManager[str]:
        """A fresh database for one benchmark (dropped afterwards); its conninfo."""
        return self.postgres.database(name)


def start_coordinator(
    processes: Processes,
    conninfo: str,
    *,
    name: str = "coordinator",
    lease_ttl: str = "10s",
    heartbeat: str = "2s",
    kill_grace: str = "10s",
    pool: int = 10,
    log_level: str = "info",
    tls: BenchTls | None = None,
) -> Coordinator:
    """A `hydra coordinator` with the benchmarks' lease timing and pool, once it
    serves (TLS with ``tls``)."""
    timing = LeaseTiming(ttl=lease_ttl, heartbeat=heartbeat, kill_grace=kill_grace)
    return hydra.start_coordinator(
        processes,
        conninfo,
        name=name,
        timing=timing,
        pool=pool,
        log_level=log_level,
        extra_args=tls.coordinator_flags() if tls else (),
        tls=tls.client() if tls else None,
    )


def sweep(marker: str) -> list[int]:
    """SIGKILL every process of this run that is still alive (attempts of killed
    agents, mostly); returns their pids."""
    leftovers = pids_with_env(MARKER_ENV, marker)
    kill_pids(leftovers)
    return leftovers


def cpu_percent(pid: int, seconds: float, watched: Sequence[Process] = ()) -> float:
    """CPU use of a process over the next `seconds`, in % of one core; the
    `watched` children must stay alive meanwhile."""
    before, start = cpu_seconds(pid), time.monotonic()
    deadline = start + seconds
    while (left := deadline - time.monotonic()) > 0:
        for child in watched:
            child.check_running()
        time.sleep(min(left, 0.5))
    return 100 * (cpu_seconds(pid) - before) / (time.monotonic() - start)
