"""Hydra as real processes on 127.0.0.1, and the context every benchmark runs in.

Coordinators and agents are ``python -m hydra ...`` children (so their RSS
and CPU can be read from /proc and an agent can be SIGKILLed), started
through :class:`bench.harness.Processes`, which stops them whatever happens.
"""

from __future__ import annotations

import contextlib
import socket
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.harness import BenchError, Child, Postgres, Processes, Result, Sql, wait_for

HYDRA = (sys.executable, "-m", "hydra")
#: A loaded 2-core machine starts Python, gRPC and the migrations slowly.
START_TIMEOUT_S = 60.0


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

    @contextlib.contextmanager
    def processes(self, name: str) -> Iterator[Processes]:
        """Children of one benchmark, logging to ``<results>/logs/<name>/``; all
        stopped when the block ends."""
        with Processes(self.results_dir / "logs" / name, self.marker) as started:
            yield started

    def earlier_value(self, benchmark: str, metric: str) -> float | None:
        """A metric of a benchmark run earlier in this invocation, or None."""
        result = self.earlier.get(benchmark)
        return result.value(metric) if result is not None else None

    def database(self, name: str) -> contextlib.AbstractContextManager[str]:
        """A fresh database for one benchmark (dropped afterwards); its conninfo."""
        return self.postgres.database(name)


@dataclass(frozen=True)
class Coordinator:
    """A `hydra coordinator` process and where it serves."""

    child: Child
    address: str


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


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
) -> Coordinator:
    """A `hydra coordinator` on a free local port, once gRPC health says SERVING."""
    for attempt in range(3):  # another process may take the port before we bind it
        address = f"127.0.0.1:{free_port()}"
        argv = [*HYDRA, "--log-level", log_level, "coordinator", "--db", conninfo]
        argv += ["--listen", address, "--pool", str(pool), "--lease-ttl", lease_ttl]
        argv += ["--heartbeat", heartbeat, "--kill-grace", kill_grace]
        child = processes.start(f"{name}-{attempt}" if attempt else name, argv)
        try:
            wait_serving(child, address)
        except BenchError:
            if child.alive or "bind" not in child.log().lower():
                raise
            continue
        return Coordinator(child, address)
    raise BenchError(f"{name} found no free port")


def wait_serving(child: Child, address: str, timeout: float = START_TIMEOUT_S) -> None:
    """Wait until gRPC health says SERVING at `address`; fail early if the child exits."""
    with grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)

        def serving() -> bool:
            child.check_alive()
            try:
                status = health.Check(health_pb2.HealthCheckRequest(), timeout=1).status
            except grpc.RpcError:
                return False
            return bool(status == health_pb2.HealthCheckResponse.SERVING)

        wait_for(serving, timeout=timeout, interval=0.1, message=f"{child.name} serving")


def start_agent(
    processes: Processes,
    coordinator: Coordinator,
    agent_id: str,
    *,
    capacity: int,
    drain_grace: str = "2s",
    log_level: str = "info",
) -> Child:
    """A `hydra agent` process (not waited for: see :func:`wait_agents`)."""
    argv = [*HYDRA, "--log-level", log_level, "agent", "--coordinator", coordinator.address]
    argv += ["--id", agent_id, "--capacity", str(capacity), "--drain-grace", drain_grace]
    return processes.start(agent_id, argv)


def wait_agents(
    db: Sql, agents: Sequence[Child], ids: Sequence[str], timeout: float = START_TIMEOUT_S
) -> None:
    """Wait until the coordinators record every one of `ids` as connected."""

    def connected() -> bool:
        for agent in agents:
            agent.check_alive()
        count = db.value(
            "SELECT count(*) FROM hydra_agents WHERE state = 'connected' AND id = ANY(%s)",
            list(ids),
        )
        return int(count) == len(ids)

    wait_for(connected, timeout=timeout, interval=0.1, message=f"agents {list(ids)} connected")
