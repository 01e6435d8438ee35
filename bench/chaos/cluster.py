"""The cluster under test: PostgreSQL, `hydra coordinator` and `hydra agent`
processes on 127.0.0.1, their start, their readiness and their stop."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from bench.chaos.options import HEARTBEAT, KILL_GRACE, Options
from bench.chaos.postgres import EmbeddedServer, ExternalServer, accepts_connections, make_fast
from bench.chaos.processes import (
    HYDRA,
    STOP_TIMEOUT_S,
    ManagedProcess,
    free_port,
    listening,
    run_checked,
)

Server = EmbeddedServer | ExternalServer
#: A coordinator or agent process takes this long to start on a loaded 2-core machine.
READY_TIMEOUT_S = 60.0


@dataclass
class Coordinator:
    """One `hydra coordinator` process on a fixed port (it comes back where agents look)."""

    coordinator_id: str
    port: int
    process: ManagedProcess

    @property
    def address(self) -> str:
        """Where it serves gRPC."""
        return f"127.0.0.1:{self.port}"


@dataclass
class Agent:
    """One `hydra agent` process; restarted with the same id."""

    agent_id: str
    process: ManagedProcess


@dataclass
class Cluster:
    """Everything a chaos run started, so that all of it can be stopped."""

    work_dir: Path
    tag: str
    server: Server
    coordinators: list[Coordinator] = field(default_factory=list)
    agents: list[Agent] = field(default_factory=list)

    @property
    def conninfo(self) -> str:
        """The database of the cluster."""
        return self.server.conninfo

    @property
    def addresses(self) -> list[str]:
        """Every coordinator address."""
        return [c.address for c in self.coordinators]

    def processes(self) -> list[ManagedProcess]:
        """Every coordinator and agent process, agents first."""
        return [a.process for a in self.agents] + [c.process for c in self.coordinators]

    def stop(self) -> None:
        """Stop everything: agents (continued first), coordinators, then PostgreSQL."""
        try:
            stop_processes([a.process for a in self.agents])
            stop_processes([c.process for c in self.coordinators])
        finally:
            self.server.stop()


def stop_processes(processes: list[ManagedProcess], timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGCONT and SIGTERM them all, then SIGKILL those still there after `timeout` s."""
    for process in processes:
        process.terminate()
    deadline = time.monotonic() + timeout
    for process in processes:
        process.wait_or_kill(max(0.0, deadline - time.monotonic()))


def open_server(options: Options, work_dir: Path) -> Server:
    """PostgreSQL: the one of ``--db``, or an embedded one started under ``work_dir/home``."""
    if options.db:
        return ExternalServer(options.db)
    embedded = EmbeddedServer(work_dir / "home", work_dir / "postgres.log")
    try:
        embedded.start()
        make_fast(embedded.conninfo)
    except BaseException:
        embedded.stop()
        raise
    return embedded


def migrate(cluster: Cluster) -> None:
    """``hydra migrate`` the cluster's database."""
    argv = [*HYDRA, "migrate", "--db", cluster.conninfo]
    run_checked(argv, timeout=120, log_path=cluster.work_dir / "migrate.log", what="hydra migrate")


def add_processes(cluster: Cluster, options: Options) -> None:
    """Describe the coordinator and agent processes (nothing starts yet)."""
    for index in range(options.coordinators):
        coordinator_id = f"{cluster.tag}-coordinator-{index}"
        port = free_port()
        argv = [*HYDRA, "--log-level", "info", "coordinator", "--db", cluster.conninfo]
        argv += ["--listen", f"127.0.0.1:{port}", "--id", coordinator_id]
        argv += ["--lease-ttl", f"{options.lease_ttl:g}s", "--heartbeat", HEARTBEAT]
        argv += ["--kill-grace", KILL_GRACE]
        process = ManagedProcess(coordinator_id, argv, cluster.work_dir / f"{coordinator_id}.log")
        cluster.coordinators.append(Coordinator(coordinator_id, port, process))
    addresses = cluster.addresses
    for index in range(options.agents):
        agent_id = f"{cluster.tag}-agent-{index}"
        # Each agent starts with a different coordinator, so all of them have agents.
        shift = index % len(addresses)
        targets = ",".join(addresses[shift:] + addresses[:shift])
        argv = [*HYDRA, "--log-level", "info", "agent", "--coordinator", targets]
        argv += ["--id", agent_id, "--capacity", str(options.capacity), "--drain-grace", "5s"]
        process = ManagedProcess(agent_id, argv, cluster.work_dir / f"{agent_id}.log")
        cluster.agents.append(Agent(agent_id, process))


def start_all(cluster: Cluster) -> None:
    """Start the coordinators, then the agents, and wait until all serve."""
    for coordinator in cluster.coordinators:
        coordinator.process.start()
    wait_coordinators(cluster)
    for agent in cluster.agents:
        agent.process.start()
    wait_agents(cluster)


def wait_coordinators(cluster: Cluster, timeout: float = READY_TIMEOUT_S) -> None:
    """Wait until every coordinator accepts connections."""

    def serving() -> bool:
        for coordinator in cluster.coordinators:
            if not coordinator.process.running:
                raise RuntimeError(
                    f"{coordinator.coordinator_id} exited:\n{coordinator.process.log_tail()}"
                )
        return all(listening(c.port) for c in cluster.coordinators)

    wait_until(serving, timeout, "every coordinator to serve")


def wait_agents(cluster: Cluster, timeout: float = READY_TIMEOUT_S) -> None:
    """Wait until the database lists every agent as connected."""
    ids = [a.agent_id for a in cluster.agents]

    def connected() -> bool:
        with psycopg.connect(cluster.conninfo, autocommit=True, connect_timeout=5) as conn:
            row = conn.execute(
                "SELECT count(*) FROM hydra_agents WHERE id = ANY(%s) AND state = 'connected'",
                (ids,),
            ).fetchone()
        return row is not None and row[0] == len(ids)

    wait_until(connected, timeout, "every agent to connect")


def wait_database(cluster: Cluster, timeout: float = READY_TIMEOUT_S) -> None:
    """Wait until PostgreSQL answers queries."""
    wait_until(lambda: accepts_connections(cluster.conninfo), timeout, "PostgreSQL")


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Call `condition` until it holds; `psycopg.Error` counts as not yet.

    Raises:
        TimeoutError: it did not hold within `timeout` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        with _database_errors_are_not_yet():
            if condition():
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.2)


@contextlib.contextmanager
def _database_errors_are_not_yet() -> Iterator[None]:
    with contextlib.suppress(psycopg.Error):
        yield
