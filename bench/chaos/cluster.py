"""The cluster under test: PostgreSQL, `hydra coordinator` and `hydra agent`
processes on 127.0.0.1, their start, their readiness and their stop."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from bench.chaos.options import HEARTBEAT, KILL_GRACE, Options
from harness import hydra
from harness.hydra import HYDRA, LeaseTiming, agent_argv, coordinator_argv
from harness.net import free_port, listening
from harness.postgres import EmbeddedServer, ExternalServer, accepts_connections, make_fast
from harness.processes import Process, run_checked, stop_together
from harness.wait import wait_for

Server = EmbeddedServer | ExternalServer
#: A coordinator or agent process takes this long to start on a loaded 2-core machine.
READY_TIMEOUT_S = 60.0
#: How often the waits of a chaos run look; a database error means "not yet"
#: (PostgreSQL may be restarting).
POLL_S = 0.2
NOT_YET = (psycopg.Error,)


@dataclass
class Coordinator:
    """One `hydra coordinator` process on a fixed port (it comes back where agents look)."""

    coordinator_id: str
    port: int
    process: Process

    @property
    def address(self) -> str:
        """Where it serves gRPC."""
        return f"127.0.0.1:{self.port}"


@dataclass
class Agent:
    """One `hydra agent` process; restarted with the same id."""

    agent_id: str
    process: Process


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

    def processes(self) -> list[Process]:
        """Every coordinator and agent process, agents first."""
        return [a.process for a in self.agents] + [c.process for c in self.coordinators]

    def stop(self) -> None:
        """Stop everything: agents (continued first), coordinators, then PostgreSQL."""
        try:
            stop_together([a.process for a in self.agents])
            stop_together([c.process for c in self.coordinators])
        finally:
            self.server.stop()


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
    timing = LeaseTiming(ttl=f"{options.lease_ttl:g}s", heartbeat=HEARTBEAT, kill_grace=KILL_GRACE)
    for index in range(options.coordinators):
        coordinator_id = f"{cluster.tag}-coordinator-{index}"
        port = free_port()
        argv = coordinator_argv(
            cluster.conninfo, f"127.0.0.1:{port}", timing=timing, coordinator_id=coordinator_id
        )
        process = Process(coordinator_id, argv, cluster.work_dir / f"{coordinator_id}.log")
        cluster.coordinators.append(Coordinator(coordinator_id, port, process))
    addresses = cluster.addresses
    for index in range(options.agents):
        agent_id = f"{cluster.tag}-agent-{index}"
        # Each agent starts with a different coordinator, so all of them have agents.
        shift = index % len(addresses)
        targets = addresses[shift:] + addresses[:shift]
        argv = agent_argv(targets, agent_id, capacity=options.capacity, drain_grace="5s")
        process = Process(agent_id, argv, cluster.work_dir / f"{agent_id}.log")
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
                    f"{coordinator.coordinator_id} exited:\n{coordinator.process.last_lines(30)}"
                )
        return all(listening(c.port) for c in cluster.coordinators)

    message = "every coordinator to serve"
    wait_for(serving, timeout=timeout, interval=POLL_S, message=message, not_yet=NOT_YET)


def wait_agents(cluster: Cluster, timeout: float = READY_TIMEOUT_S) -> None:
    """Wait until the database lists every agent as connected."""
    ids = [a.agent_id for a in cluster.agents]
    hydra.wait_agents(cluster.conninfo, ids, timeout=timeout, interval=POLL_S)


def wait_database(cluster: Cluster, timeout: float = READY_TIMEOUT_S) -> None:
    """Wait until PostgreSQL answers queries."""
    up = functools.partial(accepts_connections, cluster.conninfo)
    wait_for(up, timeout=timeout, interval=POLL_S, message="PostgreSQL", not_yet=NOT_YET)
