"""Hydra as real processes for end-to-end tests, on top of :mod:`harness`: the
tests' lease timing and log level, logs shown when a test fails, and nothing
left running afterwards (PostgreSQL of a killed ``hydra dev`` included)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from harness import hydra, processes
from harness.hydra import Coordinator, Hydractl, LeaseTiming, wait_agent_state
from harness.postgres import EmbeddedServer
from harness.processes import Process

#: Lease timing of the brief: failures show within seconds.
FAST_TIMING = LeaseTiming(ttl="2s", heartbeat="400ms", kill_grace="1s")
#: Generous: a loaded 2-core machine starts Python, gRPC and PostgreSQL slowly.
START_TIMEOUT_S = 30.0


class Processes(processes.Processes):
    """The harness's `Processes`, starting coordinators and agents as tests want them;
    `close` prints every log (pytest shows them if the test failed)."""

    def coordinator(
        self, conninfo: str, name: str = "coordinator", *, insecure: bool = True
    ) -> Coordinator:
        """A `hydra coordinator` on `conninfo` and a free local port, once it serves
        (without authentication unless `insecure` is off)."""
        return hydra.start_coordinator(
            self,
            conninfo,
            name=name,
            timing=FAST_TIMING,
            log_level="debug",
            timeout=START_TIMEOUT_S,
            insecure=insecure,
        )

    def agent(
        self,
        coordinator: Coordinator,
        agent_id: str,
        *,
        capacity: int = 2,
        drain_grace: str = "2s",
        wait: bool = True,
    ) -> Process:
        """A `hydra agent`; with `wait`, once the coordinator lists it connected."""
        process = hydra.start_agent(
            self,
            coordinator,
            agent_id,
            capacity=capacity,
            drain_grace=drain_grace,
            log_level="debug",
        )
        if wait:
            wait_agent_state(coordinator.hydractl, agent_id, "connected", START_TIMEOUT_S)
        return process

    def close(self) -> None:
        """Stop everything started, newest first; print the logs."""
        super().close()
        for process in self.started:
            print(process.log_tail())


@dataclass
class Cluster:
    """A `hydra coordinator` process on the test's database; start agents with `processes`."""

    processes: Processes
    coordinator: Coordinator
    conninfo: str

    @property
    def hydractl(self) -> Hydractl:
        return self.coordinator.hydractl

    def agent(
        self, agent_id: str, *, capacity: int = 2, drain_grace: str = "2s", wait: bool = True
    ) -> Process:
        """Start a `hydra agent`; with `wait`, return once it is connected."""
        return self.processes.agent(
            self.coordinator, agent_id, capacity=capacity, drain_grace=drain_grace, wait=wait
        )


@contextlib.contextmanager
def processes_in(log_dir: Path, home: Path | None = None) -> Iterator[Processes]:
    """`Processes` that are all stopped on exit, then any PostgreSQL left in `home`."""
    try:
        with Processes(log_dir) as started:
            yield started
    finally:
        if home is not None:
            EmbeddedServer(home).stop()
