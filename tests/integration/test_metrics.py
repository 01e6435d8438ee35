"""Prometheus metrics after a known workload: a real coordinator (in-process, its
`/metrics` on loopback), a real `hydra agent` process serving its own, real
PostgreSQL; `promtool check metrics` on both expositions; `/metrics` behind the
coordinator's credentials."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from harness.hydra import wait_agents
from harness.net import free_port
from harness.wait import wait_for
from hydra.client import Client, Retry, RunState, Task
from hydra.coordinator.credentials import revoke_credential
from hydra.coordinator.server import CoordinatorConfig, CoordinatorServer
from hydra.domain import Role
from hydra.errors import InvalidArgument

from support.cluster import AgentProcess, CoordinatorThread, Database
from support.credentials import make_credential
from support.metrics import Scrape, promtool_check, scrape

GOOD, BAD, BROKEN = "metrics.good", "metrics.bad", "metrics.broken"


def _workload(client: Client) -> None:
    """5 succeeded runs of GOOD (each prints 6 bytes), 3 failed of BAD, 1 of BROKEN
    (its command does not exist: a spawn failure)."""
    client.apply(Task(name=GOOD, command=["echo", "hello"]))
    client.apply(Task(name=BAD, command=["sh", "-c", "exit 3"], retry=Retry(max_attempts=1)))
    client.apply(Task(name=BROKEN, command=["/nonexistent/command"], retry=Retry(max_attempts=1)))
    runs = [client.trigger(GOOD)[0] for _ in range(5)]
    runs += [client.trigger(BAD)[0] for _ in range(3)]
    runs += [client.trigger(BROKEN)[0]]
    states = [client.wait(run.id, timeout=60).state for run in runs]
    assert states == [RunState.SUCCEEDED] * 5 + [RunState.FAILED] * 4


def _cluster_figures_settled(address: str) -> Scrape:
    """A scrape whose cluster-wide figures (cached a few seconds) show every run ended."""

    def settled() -> Scrape | None:
        found = scrape(address)
        failed = found.value("hydra_task_last_failure_timestamp_seconds", {"task": BROKEN})
        idle = found.value("hydra_cluster_agent_slots", {"state": "used"}) == 0
        return found if failed is not None and idle else None

    return wait_for(settled, timeout=20, message="the cluster figures to show the workload")


def test_a_known_workload_shows_in_the_coordinators_and_the_agents_metrics(
    db_conninfo: str, tmp_path: Path
) -> None:
    db = Database(db_conninfo)
    coordinator = CoordinatorThread(db_conninfo, metrics_listen="127.0.0.1:0").start()
    agent_metrics = f"127.0.0.1:{free_port()}"
    agent = AgentProcess(
        "agent-m", [coordinator.address], log_path=tmp_path / "agent.log",
        extra_args=["--metrics-listen", agent_metrics],
    )  # fmt: skip
    try:
        agent.start()
        wait_agents(db_conninfo, ["agent-m"], watched=[agent], timeout=20)
        _workload(Client(coordinator.address))
        address = coordinator.coordinator.metrics_address
        assert address is not None
        found = _cluster_figures_settled(address)
        _check_coordinator(found, db)
        _check_agent(scrape(agent_metrics))
        for body in (found.body, scrape(agent_metrics).body):
            checked = promtool_check(body)
            assert checked.returncode == 0, checked.stdout + checked.stderr
            assert checked.stdout.strip() == "", checked.stdout
    finally:
        agent.stop()
        coordinator.stop()


def _check_coordinator(found: Scrape, db: Database) -> None:
    assert found.status == 200
    created = "hydra_runs_created_total"
    assert found.value(created, {"task": GOOD, "cause": "manual"}) == 5
    assert found.value(created, {"task": BAD, "cause": "manual"}) == 3
    finished = "hydra_runs_finished_total"
    assert found.value(finished, {"task": GOOD, "state": "SUCCEEDED"}) == 5
    assert found.value(finished, {"task": BAD, "state": "FAILED"}) == 3
    assert found.value(finished, {"task": GOOD, "state": "FAILED"}) is None
    assert found.value("hydra_attempts_finished_total", {"outcome": "SUCCEEDED"}) == 5
    assert found.value("hydra_attempts_finished_total", {"outcome": "FAILED"}) == 4
    assert found.value("hydra_schedule_lag_seconds_count", {"task": GOOD}) == 5
    assert found.value("hydra_schedule_lag_seconds_count", {"task": BAD}) == 3
    assert found.value("hydra_attempt_duration_seconds_count", {"task": BAD}) == 3
    _check_last_finishes(found, db)
    for state in ("QUEUED", "LEASED", "RUNNING"):
        assert found.value("hydra_runs_in_state", {"state": state}) == 0
    assert found.value("hydra_cluster_agents", {"state": "connected"}) == 1
    assert found.value("hydra_cluster_agent_slots", {"state": "free"}) == 4
    assert found.value("hydra_cluster_metrics_up") == 1
    trigger = {"method": "hydra.v1.RunService/Trigger", "code": "OK"}
    assert found.value("hydra_grpc_requests_total", trigger) == 9
    timed = {"method": "hydra.v1.RunService/Trigger"}
    assert found.value("hydra_grpc_request_duration_seconds_count", timed) == 9
    assert (found.value("hydra_db_transaction_duration_seconds_count", {"pool": "api"}) or 0) > 0
    assert found.value("hydra_db_pool_requests_waiting", {"pool": "control"}) == 0
    assert found.value("hydra_db_pool_connections", {"pool": "api", "state": "idle"}) is not None
    assert found.value("hydra_leases_expired_total") == 0


def _check_last_finishes(found: Scrape, db: Database) -> None:
    def last(task: str, state: str) -> float:
        finished = db.value(
            "SELECT max(r.finished_at) FROM hydra_runs r JOIN hydra_tasks t ON t.id = r.task_id "
            "WHERE t.name = %s AND r.state = %s",
            task,
            state,
        )
        return float(finished.timestamp())

    success = found.value("hydra_task_last_success_timestamp_seconds", {"task": GOOD})
    failure = found.value("hydra_task_last_failure_timestamp_seconds", {"task": BAD})
    assert success == pytest.approx(last(GOOD, "SUCCEEDED"), abs=1e-3)
    assert failure == pytest.approx(last(BAD, "FAILED"), abs=1e-3)
    assert found.value("hydra_task_last_failure_timestamp_seconds", {"task": GOOD}) is None
    assert found.value("hydra_task_last_success_timestamp_seconds", {"task": BAD}) is None


def _check_agent(found: Scrape) -> None:
    assert found.status == 200
    assert found.value("hydra_agent_attempts_finished_total", {"outcome": "SUCCEEDED"}) == 5
    assert found.value("hydra_agent_attempts_finished_total", {"outcome": "FAILED"}) == 4
    assert found.value("hydra_agent_spawn_failures_total") == 1
    assert found.value("hydra_agent_output_bytes_total", {"stream": "STDOUT"}) == 5 * 6
    assert found.value("hydra_agent_attempts_running") == 0
    assert found.value("hydra_agent_slots", {"state": "free"}) == 4
    assert found.value("hydra_agent_connected") == 1


def test_metrics_of_an_authenticating_coordinator_need_a_live_credential(
    db_conninfo: str,
) -> None:
    secret = make_credential(db_conninfo, "prometheus", Role.VIEWER)
    coordinator = CoordinatorThread(
        db_conninfo, insecure=False, metrics_listen="127.0.0.1:0"
    ).start()
    try:
        address = coordinator.coordinator.metrics_address
        assert address is not None
        refused = scrape(address)
        assert refused.status == 401 and "Bearer" in refused.body
        assert scrape(address, token="hydra_wrong").status == 401
        allowed = scrape(address, token=secret)
        assert allowed.status == 200 and "hydra_runs_in_state" in allowed.body
        asyncio.run(revoke_credential(db_conninfo, "prometheus"))
        revoked = wait_for(
            lambda: (found := scrape(address, token=secret)).status == 403 and found,
            timeout=10,
            message="the revoked credential to be refused",
        )
        assert "revoked" in revoked.body
    finally:
        coordinator.stop()


async def test_metrics_beyond_loopback_are_refused_without_insecure(db_conninfo: str) -> None:
    config = CoordinatorConfig(
        conninfo=db_conninfo, listen="127.0.0.1:0", metrics_listen="0.0.0.0:0"
    )
    coordinator = CoordinatorServer(config)
    with pytest.raises(InvalidArgument, match=r"--metrics-listen: 0\.0\.0\.0 is not a loopback"):
        await coordinator.start()
    await coordinator.stop()
