"""A hung database is reported in seconds, not suffered in silence (issue 11, fault 6:
with PostgreSQL's processes stopped, `hydractl tasks list` took 39 s and health
stayed SERVING).

A real coordinator process on a PostgreSQL server of the test's own: every
process of that server is frozen with SIGSTOP (the kernel keeps its sockets
open, so nothing but a deadline can notice), then thawed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from harness.postgres import EmbeddedServer
from harness.wait import wait_for
from hydra.client import Client, RunState, Task

from support.processes import processes_in

#: What "within a few seconds" means here: the probe's interval and deadline plus
#: hydractl's start-up and retries; before the fix it was 39 s.
PROMPTLY_S = 10.0

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture
def own_postgres(hydra_home: Path, tmp_path: Path) -> Iterator[EmbeddedServer]:
    """A PostgreSQL server of this test's own, so it can be frozen."""
    server = EmbeddedServer(hydra_home, tmp_path / "postgres.log")
    server.start()
    yield server
    server.stop()


def _server_pids(server: EmbeddedServer) -> list[int]:
    """The postmaster of the server's data directory and all its children."""
    postmaster = server.postmaster_pid()
    assert postmaster is not None, "the server is not running"
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            # The parent pid is the second field after the parenthesised command.
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == postmaster:
                children.append(int(entry.name))
    return [postmaster, *children]


@contextlib.contextmanager
def frozen(server: EmbeddedServer) -> Iterator[None]:
    """Every process of the server stopped (SIGSTOP) for the block, then continued."""
    pids = _server_pids(server)
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def _health(address: str) -> int | None:
    with grpc.insecure_channel(address) as channel:
        try:
            request = health_pb2.HealthCheckRequest()
            return int(health_pb2_grpc.HealthStub(channel).Check(request, timeout=2).status)
        except grpc.RpcError:
            return None


def test_a_frozen_database_gives_unavailable_and_not_serving_within_seconds(
    own_postgres: EmbeddedServer, tmp_path: Path
) -> None:
    with processes_in(tmp_path / "logs") as processes:
        coordinator = processes.coordinator(own_postgres.conninfo)
        processes.agent(coordinator, "steady")
        client = Client(coordinator.address)
        client.apply(Task(name="healthy", command=["echo", "still here"]))
        assert coordinator.hydractl.run("tasks", "list").returncode == 0

        with frozen(own_postgres):
            started = time.monotonic()
            listed = coordinator.hydractl.run("tasks", "list")
            took = time.monotonic() - started
            assert listed.returncode == 5, listed  # coordinator unavailable
            assert "database" in listed.stderr, listed.stderr
            assert took < PROMPTLY_S, f"tasks list took {took:.1f}s against a hung database"
            wait_for(
                lambda: _health(coordinator.address) == NOT_SERVING,
                timeout=PROMPTLY_S,
                message="health NOT_SERVING while the database is frozen",
            )

        wait_for(
            lambda: _health(coordinator.address) == SERVING,
            timeout=PROMPTLY_S,
            message="health SERVING again once the database answers",
        )
        # The cluster serves again: a task runs.
        run, _ = client.trigger("healthy")
        final = client.wait(run.id, timeout=20)
        assert final.state is RunState.SUCCEEDED
