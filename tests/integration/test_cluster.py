"""The cluster as a whole: status, and surviving a PostgreSQL restart."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from hydra.client import Client, RunState, Task, Unavailable
from hydra.coordinator.embedded import EmbeddedPostgres
from hydra.coordinator.migrate import migrate
from hydra.coordinator.store.records import LeaseTimes

from support.cluster import AgentProcess, CoordinatorThread, Database, cluster
from support.wait import wait_for


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
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "hydra.client.hydractl",
                "--coordinator",
                coordinators[0].address,
                "-o",
                "json",
                "cluster",
                "status",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
        assert len(json.loads(out)["coordinators"]) == 2
        coordinators[1].stop()
        wait_for(
            lambda: len(Client(coordinators[0].address).cluster_status().coordinators) == 1,
            message="the stopped coordinator to leave the list",
        )


def _start_elsewhere(server: EmbeddedPostgres) -> None:
    """Start the server from a fresh process: forking a child that switches user
    (as pg_ctl start needs, run as root) is unsafe while gRPC threads run here."""
    code = (
        "import sys; from pathlib import Path; "
        "from hydra.coordinator.embedded import EmbeddedPostgres; "
        "EmbeddedPostgres(Path(sys.argv[1])).start()"
    )
    subprocess.run([sys.executable, "-c", code, str(server.data_dir)], check=True, timeout=60)


@pytest.fixture
def own_postgres(hydra_home: Path) -> EmbeddedPostgres:
    """A PostgreSQL server of this test's own, so it can be restarted."""
    server = EmbeddedPostgres.for_home(hydra_home)
    server.start()
    yield server
    server.stop()


def test_a_postgresql_restart_loses_nothing(own_postgres: EmbeddedPostgres, tmp_path: Path) -> None:
    conninfo = own_postgres.conninfo()
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
        _start_elsewhere(own_postgres)
        final = client.wait(run.id, timeout=60)
    finally:
        agent.stop()
        coordinator.stop()
    assert final.state is RunState.SUCCEEDED, agent.log()
    assert [a.state.value for a in final.attempts] == ["SUCCEEDED"]
