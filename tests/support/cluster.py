"""Real Hydra parts for integration tests: coordinators in background threads
(each with its own event loop and gRPC server on 127.0.0.1), agents as real
`hydra agent` processes (started by :mod:`harness`), and direct SQL to check
invariants."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from harness.hydra import agent_argv, wait_agents
from harness.processes import Process
from harness.wait import wait_for
from hydra.coordinator.api.auth import OnRefused
from hydra.coordinator.server import CoordinatorConfig, CoordinatorServer
from hydra.coordinator.store.records import LeaseTimes
from hydra.coordinator.tls import ServerTls
from hydra.coordinator.webhooks import DeliveryConfig

#: Short lease timing so that failure tests finish in seconds.
FAST_TIMES = LeaseTimes(
    ttl=timedelta(seconds=2),
    heartbeat_interval=timedelta(milliseconds=400),
    kill_grace=timedelta(seconds=1),
)


#: How long `AgentProcess.stop_now` gives an agent to act on SIGTERM before SIGINT.
DRAIN_BEGUN_S = 0.3
#: How long a coordinator may take to start, and to stop.
START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 30


class CoordinatorThread:
    """A coordinator running in its own thread and event loop."""

    def __init__(
        self,
        conninfo: str,
        *,
        times: LeaseTimes = FAST_TIMES,
        name: str = "c",
        insecure: bool = True,
        on_refused: OnRefused | None = None,
        tls: ServerTls | None = None,
        metrics_listen: str | None = None,
        notify: DeliveryConfig | None = None,
        **settings: Any,
    ) -> None:
        """`insecure` (the default, so that tests need no credentials) serves without
        authentication; tests of security turn it off (see support.credentials).
        `metrics_listen` serves `/metrics` there (e.g. ``127.0.0.1:0``).
        `notify`: how it delivers notifications (default: DeliveryConfig's).
        `settings` are more fields of the CoordinatorConfig (retention, ...)."""
        self.config = CoordinatorConfig(
            conninfo=conninfo,
            listen="127.0.0.1:0",
            pool_size=4,
            times=times,
            coordinator_id=name,
            insecure=insecure,
            tls=tls,
            metrics_listen=metrics_listen,
            notify=notify or DeliveryConfig(),
            **settings,
        )
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name=name)
        self.coordinator = CoordinatorServer(self.config, on_refused=on_refused)

    def start(self) -> CoordinatorThread:
        self._thread.start()
        starting = asyncio.run_coroutine_threadsafe(self.coordinator.start(), self._loop)
        try:
            starting.result(START_TIMEOUT_S)
        except BaseException:
            # A start that ran out of time is cancelled where it is, so that it opens
            # nothing after the stop has closed everything; what it opened is closed,
            # not left to the garbage collector.
            starting.cancel()
            self.stop()
            raise
        return self

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.coordinator.port}"

    def stop(self) -> None:
        """Stop the coordinator and close its loop. A stop that fails or runs out of
        time is said on stderr (pytest shows it with the test that fails): what it did
        not close would warn later, in whichever test is running then."""
        if not self._thread.is_alive():
            return
        name = self.config.coordinator_id
        stopping = asyncio.run_coroutine_threadsafe(self.coordinator.stop(grace=1.0), self._loop)
        try:
            try:
                stopping.result(STOP_TIMEOUT_S)
            except concurrent.futures.TimeoutError:
                print(f"coordinator {name}: stopping for {STOP_TIMEOUT_S}s", file=sys.stderr)
                stopping.result(STOP_TIMEOUT_S)  # cancelled half way, it would leave things open
        except BaseException as error:
            print(f"coordinator {name}: stop failed: {error!r}", file=sys.stderr)
        # Whatever still runs on the loop ends before it closes.
        with contextlib.suppress(Exception):
            self._call(_cancel_the_rest(), timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def _call(self, coroutine: Any, timeout: float) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)


async def _cancel_the_rest() -> None:
    """Cancels the loop's other tasks and waits for them."""
    current = asyncio.current_task()
    rest = [task for task in asyncio.all_tasks() if task is not current]
    for task in rest:
        task.cancel()
    await asyncio.gather(*rest, return_exceptions=True)
    await asyncio.get_running_loop().shutdown_asyncgens()


class AgentProcess(Process):
    """A real `hydra agent` process (the harness's `Process`) with the integration
    tests' settings: debug log, 5 s drain grace."""

    def __init__(
        self,
        agent_id: str,
        targets: Sequence[str],
        *,
        log_path: Path,
        capacity: int = 4,
        labels: Mapping[str, str] | None = None,
        token: str | None = None,
        token_file: Path | None = None,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        """Args:
        token: set as ``HYDRA_TOKEN`` in its environment.
        token_file: passed as ``--token-file`` (the credential is then not in its environment).
        extra_args: more ``hydra agent`` flags, e.g. ``--run-as nobody``.
        env: added to this process's environment (which it otherwise gets as it is).
        """
        argv = agent_argv(
            targets, agent_id, capacity=capacity, drain_grace="5s", labels=labels, log_level="debug"
        )
        argv += ["--token-file", str(token_file)] if token_file is not None else []
        # This environment as it is, HYDRA_TOKEN when a token is given, and `env`.
        environment = {**os.environ, **({"HYDRA_TOKEN": token} if token is not None else {})}
        super().__init__(
            agent_id, [*argv, *extra_args], log_path, env={**environment, **(env or {})}
        )
        self.agent_id = agent_id

    def stop_now(self, timeout: float = 30) -> int | None:
        """Stop without waiting for the drain grace (a test's teardown, not a test of
        draining): SIGTERM begins the drain, a SIGINT once it began kills what still
        runs, and the agent exits. A SIGINT that comes before the drain began only
        begins it, so at worst this waits the grace as `stop` does."""
        self.terminate()
        try:
            return self.popen.wait(DRAIN_BEGUN_S)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGINT)
        return self.wait_or_kill(timeout)


class Database:
    """Direct SQL on a test database, for checking what Hydra recorded."""

    def __init__(self, conninfo: str) -> None:
        self.conninfo = conninfo

    def rows(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        with psycopg.connect(self.conninfo, autocommit=True, row_factory=dict_row) as conn:
            conn.execute("SET TIME ZONE 'UTC'")
            return conn.execute(sql, params).fetchall()

    def value(self, sql: str, *params: Any) -> Any:
        rows = self.rows(sql, *params)
        return next(iter(rows[0].values())) if rows else None

    def runs(self, task: str) -> list[dict[str, Any]]:
        return self.rows(
            "SELECT r.* FROM hydra_runs r JOIN hydra_tasks t ON t.id = r.task_id "
            "WHERE t.name = %s ORDER BY r.occurrence",
            task,
        )

    def attempts(self, run_id: Any) -> list[dict[str, Any]]:
        return self.rows("SELECT * FROM hydra_attempts WHERE run_id = %s ORDER BY number", run_id)

    def counts(self) -> dict[str, int]:
        """Row counts of every Hydra table (to show a bad request changed nothing)."""
        tables = [
            "hydra_tasks",
            "hydra_task_versions",
            "hydra_triggers",
            "hydra_runs",
            "hydra_attempts",
            "hydra_attempt_output",
        ]
        return {t: int(self.value(f"SELECT count(*) FROM {t}")) for t in tables}

    def wait_run_state(self, run_id: Any, states: set[str], timeout: float = 20) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            rows = self.rows("SELECT * FROM hydra_runs WHERE id = %s", run_id)
            return rows[0] if rows and rows[0]["state"] in states else None

        return wait_for(reached, timeout=timeout, message=f"run {run_id} never reached {states}")


@contextlib.contextmanager
def cluster(
    conninfo: str,
    tmp_path: Path,
    *,
    coordinators: int = 1,
    agents: int = 1,
    capacity: int = 4,
) -> Iterator[tuple[list[CoordinatorThread], list[AgentProcess]]]:
    """Coordinators and agents on one database; everything stops at the end."""
    started: list[CoordinatorThread] = []
    workers: list[AgentProcess] = []
    try:
        for index in range(coordinators):
            started.append(CoordinatorThread(conninfo, name=f"coordinator-{index}").start())
        targets = [c.address for c in started]
        for index in range(agents):
            workers.append(
                AgentProcess(
                    agent_id=f"agent-{index}",
                    targets=targets,
                    capacity=capacity,
                    log_path=tmp_path / f"agent-{index}.log",
                ).start()
            )
        wait_agents(conninfo, [w.agent_id for w in workers], watched=workers, timeout=20)
        yield started, workers
    finally:
        for worker in workers:
            worker.stop_now()
        for coordinator in started:
            coordinator.stop()
