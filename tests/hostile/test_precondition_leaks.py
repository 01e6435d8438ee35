"""Precondition checks cannot leak (issue 11, fault 9): http and file checks ran
in default-executor threads abandoned at their timeout, so a slow-drip HTTP
server (or a hung NFS stat) kept a thread and a connection for ever, and
timeouts of 100 years were accepted. Now http and tcp checks are asyncio
connections closed at the timeout, file checks have a few threads of their
own, and a check's timeout is at most 10 minutes."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from harness.wait import wait_for
from hydra.client import Client, Concurrency, HttpCheck, InvalidArgument, RunState, Task

from support.cluster import Database, cluster

#: One byte this often: never silent for as long as a check's timeout.
DRIP_SECONDS = 0.1
RUNS = 4
CHECKS_PER_RUN = 6


class DripServer:
    """Answers every connection with one byte every DRIP_SECONDS, for ever."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self.open = 0
        self.accepted = 0
        self._stopped = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.open += 1
                self.accepted += 1
            threading.Thread(target=self._drip, args=(connection,), daemon=True).start()

    def _drip(self, connection: socket.socket) -> None:
        try:
            with contextlib.suppress(OSError), connection:
                connection.recv(65536)
                while not self._stopped.wait(DRIP_SECONDS):
                    connection.sendall(b"X")  # a status line that never ends
        finally:
            with self._lock:
                self.open -= 1

    def close(self) -> None:
        self._stopped.set()
        self._listener.close()


@pytest.fixture
def drip() -> Iterator[DripServer]:
    server = DripServer()
    yield server
    server.close()


def _threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def test_slow_drip_checks_cost_the_agent_no_threads_and_are_cut_off(
    db_conninfo: str, tmp_path: Path, drip: DripServer
) -> None:
    db = Database(db_conninfo)
    url = f"http://127.0.0.1:{drip.port}/health"
    with (
        cluster(db_conninfo, tmp_path, capacity=RUNS + 1) as (coordinators, [agent]),
        Client(coordinators[0].address) as client,
    ):
        client.apply(Task(name="healthy", command=("true",)))
        warm, _ = client.trigger("healthy")  # the agent has done its first work
        assert client.wait(warm.id, timeout=20).state is RunState.SUCCEEDED
        baseline = _threads(agent.pid)
        client.apply(
            Task(
                name="dripping",
                command=("true",),
                preconditions=[
                    HttpCheck(url=url, timeout=timedelta(seconds=1)) for _ in range(CHECKS_PER_RUN)
                ],
                poke_interval=timedelta(seconds=1),
                concurrency=Concurrency(max_active_runs=RUNS),
            )
        )
        runs = [client.trigger("dripping")[0] for _ in range(RUNS)]
        wait_for(
            lambda: drip.accepted >= 2 * RUNS * CHECKS_PER_RUN,  # two rounds of checks, at least
            timeout=20,
            message="two rounds of checks",
        )

        assert _threads(agent.pid) <= baseline + 1
        # The cluster kept serving: a healthy task runs, the agent's heartbeats go on.
        healthy, _ = client.trigger("healthy")
        assert client.wait(healthy.id, timeout=20).state is RunState.SUCCEEDED
        since_seen = db.value(
            "SELECT extract(epoch FROM now() - last_seen_at) FROM hydra_agents WHERE id = %s",
            agent.agent_id,
        )
        assert float(since_seen) < 2
        for run in runs:
            client.cancel(run.id)
        # Every connection was closed by its check's timeout, not left dripping.
        wait_for(lambda: drip.open == 0, timeout=5, message="the checks' connections to close")
        assert _threads(agent.pid) <= baseline + 1


def test_a_check_timeout_of_100_years_is_refused_at_apply(db_conninfo: str, tmp_path: Path) -> None:
    with (
        cluster(db_conninfo, tmp_path) as (coordinators, _),
        Client(coordinators[0].address) as client,
    ):
        forever = HttpCheck(url="http://127.0.0.1:1/", timeout=timedelta(days=36500))
        with pytest.raises(InvalidArgument) as refused:
            client.apply(Task(name="patient", command=("true",), preconditions=[forever]))
        assert "preconditions[0].timeout" in str(refused.value)
        assert "at most 10m" in str(refused.value)
        assert [task.name for task in client.list_tasks()] == []  # nothing applied
        # The cluster kept serving.
        client.apply(Task(name="healthy", command=("true",)))
        run, _ = client.trigger("healthy")
        assert client.wait(run.id, timeout=20).state is RunState.SUCCEEDED
