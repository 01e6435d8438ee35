"""The cluster as a whole: status, and surviving a PostgreSQL restart."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from harness.hydra import Hydractl
from harness.postgres import EmbeddedServer
from harness.wait import wait_for
from hydra.client import Client, RunState, Task, Unavailable
from hydra.coordinator.migrate import migrate
from hydra.coordinator.store.records import LeaseTimes

from support.cluster import AgentProcess, CoordinatorThread, Database, cluster


def test_cluster_status_lists_live_coordinators_and_agents(
    db_conninfo: str, tmp_path: Path
) -> None:
    with cluster(db_conninfo, tmp_path, coordinators=2, agents=1) as (coordinators, _):
        client = Client([c.address for c in coordinators])
        status = wait_for(
            lambda: (s := client.cluster_status()) and len(s.coordinators) == 2 and s,
            message="two coordinators",
        )
        assert {c.address for c in status.coordinators} == {c.address for c in coordinators}
        assert sum(c.agents_connected for c in status.coordinators) == 1
        assert [a.id for a in status.agents] == ["agent-0"]
        shown = Hydractl(coordinators[0].address, timeout=30).json("cluster", "status")
        assert len(shown["coordinators"]) == 2
        coordinators[1].stop()
        wait_for(
            lambda: len(Client(coordinators[0].address).cluster_status().coordinators) == 1,
            message="the stopped coordinator to leave the list",
        )


@pytest.fixture
def own_postgres(hydra_home: Path, tmp_path: Path) -> Iterator[EmbeddedServer]:
    """A PostgreSQL server of this test's own, so it can be restarted."""
    server = EmbeddedServer(hydra_home, tmp_path / "postgres.log")
    server.start()
    yield server
    server.stop()


def test_a_postgresql_restart_loses_nothing(own_postgres: EmbeddedServer, tmp_path: Path) -> None:
    conninfo = own_postgres.conninfo
    asyncio.run(migrate(conninfo))
    db = Database(conninfo)
    times = LeaseTimes(
        ttl=timedelta(seconds=10),
        heartbeat_interval=timedelta(seconds=1),
        kill_grace=timedelta(seconds=1),
    )
    coordinator = CoordinatorThread(conninfo, times=times).start()
    agent = AgentProcess(
        agent_id="a", targets=[coordinator.address], log_path=tmp_path / "agent.log"
    ).start()
    try:
        client = Client(coordinator.address)
        client.apply(Task(name="slow", command=["sh", "-c", "sleep 4; echo done"]))
        run, _ = client.trigger("slow")
        db.wait_run_state(run.id, {"RUNNING"})
        own_postgres.stop()
        with pytest.raises(Unavailable):
            Client(coordinator.address, timeout=5).get_run(run.id)
        own_postgres.start()  # from a fresh process: gRPC threads run in this one
        final = client.wait(run.id, timeout=60)
    finally:
        agent.stop()
        coordinator.stop()
    assert final.state is RunState.SUCCEEDED, agent.log()
    assert [a.state.value for a in final.attempts] == ["SUCCEEDED"]
