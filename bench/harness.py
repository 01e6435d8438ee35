"""What every benchmark shares: statistics, result tables, PostgreSQL, and
child processes that are always stopped.

Nothing here knows about one benchmark in particular; readings from /proc are
in :mod:`bench.procfs`, and Hydra's own processes (coordinator, agents) are
started by :mod:`bench.stack` on top of this."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg.rows import dict_row

from bench.procfs import cpu_seconds, kill_pids, pids_with_env

T = TypeVar("T")

#: Every process a benchmark run starts carries this variable, set to the run's
#: id; attempts inherit it from their agent, so a final sweep finds leftovers.
MARKER_ENV = "HYDRA_BENCH_RUN"
#: Default home of the JSON results (gitignored).
RESULTS_DIR = Path(__file__).resolve().parent / "results"
#: SIGTERM to SIGKILL, when stopping a child.
STOP_TIMEOUT_S = 15.0
#: Settings of a throwaway embedded server under ``--fast-pg`` (not durable).
FAST_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


class BenchError(RuntimeError):
    """A benchmark could not complete (a process died, a wait timed out)."""


# --- statistics ---------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), linearly interpolated between closest ranks."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def distribution(values: Sequence[float]) -> dict[str, float]:
    """Count, mean, p50, p95, p99 and max of a sample."""
    return {
        "n": len(values),
        "mean": sum(values) / len(values) if values else math.nan,
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "max": max(values) if values else math.nan,
    }


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, or None when either is missing or the denominator is 0."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    if math.isnan(numerator) or math.isnan(denominator):
        return None
    return numerator / denominator


# --- metrics and tables -------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class Target:
    """A goal for a metric: ``value <op> bound``."""

    op: str  # one of "<=", ">=", "<"
    bound: float
    text: str = ""

    def met(self, value: float) -> bool:
        """Whether `value` reaches the goal."""
        if self.op == "<=":
            return value <= self.bound
        if self.op == "<":
            return value < self.bound
        return value >= self.bound

    def __str__(self) -> str:
        return self.text or f"{self.op} {self.bound:g}"


@dataclass(frozen=True, kw_only=True, slots=True)
class Metric:
    """One figure of a benchmark, with its goal if it has one."""

    name: str
    value: float | None
    unit: str = ""
    target: Target | None = None
    note: str = ""

    @property
    def ok(self) -> bool | None:
        """True/False against the target; None without a target or a value."""
        if self.target is None or self.value is None or math.isnan(self.value):
            return None
        return self.target.met(self.value)

    def to_json(self) -> dict[str, Any]:
        """Plain data for the results file."""
        return {
            "name": self.name,
            "value": self.value,
            "unit": self.unit,
            "target": str(self.target) if self.target else None,
            "ok": self.ok,
            "note": self.note,
        }


@dataclass(kw_only=True)
class Result:
    """What one benchmark measured."""

    name: str
    metrics: list[Metric] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    skipped: str = ""
    duration_s: float = 0.0

    def value(self, metric_name: str) -> float | None:
        """The value of a metric by name, or None."""
        found = next((m for m in self.metrics if m.name == metric_name), None)
        return found.value if found else None

    def to_json(self) -> dict[str, Any]:
        """Plain data for the results file."""
        return {
            "name": self.name,
            "skipped": self.skipped,
            "duration_s": round(self.duration_s, 1),
            "metrics": [m.to_json() for m in self.metrics],
            "details": self.details,
        }


def format_value(value: float | None, unit: str) -> str:
    """A figure for people: 3 significant digits, the unit after it."""
    if value is None or math.isnan(value):
        return "n/a"
    text = f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return f"{text} {unit}".strip()


def _mark(ok: bool | None) -> str:
    return {True: "pass", False: "MISS", None: ""}[ok]


def table_rows(results: Sequence[Result]) -> list[list[str]]:
    """One row per metric: benchmark, metric, value, target, mark, note."""
    rows = []
    for result in results:
        if result.skipped:
            rows.append([result.name, "(skipped)", "", "", "", result.skipped])
        for metric in result.metrics:
            target = str(metric.target) if metric.target else ""
            value = format_value(metric.value, metric.unit)
            rows.append([result.name, metric.name, value, target, _mark(metric.ok), metric.note])
    return rows


HEADER = ["benchmark", "metric", "value", "target", "", "note"]


def format_table(results: Sequence[Result]) -> str:
    """An aligned plain-text table of every metric."""
    rows = [HEADER, *table_rows(results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def format_markdown(results: Sequence[Result]) -> str:
    """The same table in Markdown, for bench/README.md."""
    rows = table_rows(results)
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write `data` as indented JSON (NaN as null), creating the directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_finite(data), indent=2, default=str, allow_nan=False) + "\n")


def _finite(data: Any) -> Any:
    """`data` with every NaN or infinite float replaced by None (valid JSON)."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, Mapping):
        return {key: _finite(value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [_finite(value) for value in data]
    return data


# --- waiting ------------------------------------------------------------------


def wait_for(
    predicate: Callable[[], T | None],
    *,
    timeout: float,
    interval: float = 0.05,
    message: str = "condition",
) -> T:
    """Call `predicate` until it returns something truthy, and return that.

    Raises:
        BenchError: `timeout` seconds passed first.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise BenchError(f"timed out after {timeout:g}s waiting for {message}")
        time.sleep(interval)


# --- PostgreSQL ---------------------------------------------------------------


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

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class Postgres:
    """The benchmarks' server: the one at ``admin_conninfo``, or an embedded one.

    The embedded server lives in a temporary directory and is stopped and
    removed on exit. Start it before this process creates any gRPC channel:
    the wheel's pg_ctl forks a child that switches user, which is unsafe in a
    process with gRPC threads.
    """

    def __init__(self, admin_conninfo: str | None, *, fast: bool, prefix: str) -> None:
        self.admin_conninfo = admin_conninfo or ""
        self.embedded = admin_conninfo is None
        self._fast = fast
        self._prefix = prefix
        self._home: Path | None = None
        self._server: Any = None

    def __enter__(self) -> Self:
        if self.embedded:
            from hydra.coordinator.embedded import EmbeddedPostgres

            self._home = Path(tempfile.mkdtemp(prefix="hydra-bench-pg-"))
            self._server = EmbeddedPostgres.for_home(self._home, database="postgres")
            try:
                self.admin_conninfo = self._server.start()
                if self._fast:
                    self._apply(FAST_SETTINGS)
            except BaseException:
                self._stop()
                raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop()

    def _stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
        if self._home is not None:
            shutil.rmtree(self._home, ignore_errors=True)
            self._home = None

    def _apply(self, settings: Mapping[str, str]) -> None:
        with psycopg.connect(self.admin_conninfo, autocommit=True) as conn:
            for name, value in settings.items():
                conn.execute(
                    sql.SQL("ALTER SYSTEM SET {} = {}").format(
                        sql.Identifier(name), sql.Literal(value)
                    )
                )
            conn.execute("SELECT pg_reload_conf()")

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


# --- child processes ----------------------------------------------------------


class Child:
    """One child process in a session of its own, its output in a log file."""

    def __init__(self, name: str, popen: subprocess.Popen[bytes], log_path: Path) -> None:
        self.name = name
        self.popen = popen
        self.log_path = log_path

    @property
    def pid(self) -> int:
        """The process id."""
        return self.popen.pid

    @property
    def alive(self) -> bool:
        """Whether it still runs."""
        return self.popen.poll() is None

    def check_alive(self) -> None:
        """Raise, with the log's tail, if the process has exited."""
        if not self.alive:
            raise BenchError(f"{self.name} exited with {self.popen.returncode}\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL the process alone (its children, in other sessions, survive)."""
        if self.alive:
            self.popen.kill()
        self.popen.wait(STOP_TIMEOUT_S)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM, then SIGKILL to its group after `timeout` seconds."""
        if self.alive:
            self.popen.terminate()
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            self.popen.wait()

    def log(self) -> str:
        """Everything it printed so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        """The last lines it printed, headed by its name."""
        tail = "\n".join(self.log().splitlines()[-lines:])
        return f"--- {self.name} ({self.log_path}) ---\n{tail}"


class Processes:
    """Starts children marked with the run's id; :meth:`stop_all` stops every one."""

    def __init__(self, log_dir: Path, marker: str) -> None:
        self.log_dir = log_dir
        self.marker = marker
        self.started: list[Child] = []
        log_dir.mkdir(parents=True, exist_ok=True)

    def start(
        self, name: str, argv: Sequence[str], *, env: Mapping[str, str] | None = None
    ) -> Child:
        """Start `argv` now, its output in ``<log_dir>/<name>.log``."""
        environ = {**os.environ, **(env or {}), MARKER_ENV: self.marker}
        log_path = self.log_dir / f"{name}.log"
        with open(log_path, "wb") as log:  # the child keeps its own descriptor
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=environ,
                start_new_session=True,
            )
        child = Child(name, popen, log_path)
        self.started.append(child)
        return child

    def stop_all(self) -> None:
        """Stop every child, newest first; then SIGKILL whatever still carries the marker."""
        for child in reversed(self.started):
            with contextlib.suppress(Exception):
                child.stop()
        sweep(self.marker)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop_all()


def sweep(marker: str) -> list[int]:
    """SIGKILL every process of this run that is still alive (attempts of killed
    agents, mostly); returns their pids."""
    leftovers = pids_with_env(MARKER_ENV, marker)
    kill_pids(leftovers)
    return leftovers


def cpu_percent(pid: int, seconds: float, watched: Sequence[Child] = ()) -> float:
    """CPU use of a process over the next `seconds`, in % of one core; the
    `watched` children must stay alive meanwhile."""
    before, start = cpu_seconds(pid), time.monotonic()
    deadline = start + seconds
    while (left := deadline - time.monotonic()) > 0:
        for child in watched:
            child.check_alive()
        time.sleep(min(left, 0.5))
    return 100 * (cpu_seconds(pid) - before) / (time.monotonic() - start)
