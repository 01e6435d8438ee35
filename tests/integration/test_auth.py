"""HYDRA_TOKEN: a coordinator with a token refuses every call without it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hydra.client import Client, HydraError, RunState, Task

from support.cluster import AgentProcess, CoordinatorThread

TOKEN = "s3cret"


@pytest.fixture
def guarded(db_conninfo: str) -> Iterator[CoordinatorThread]:
    coordinator = CoordinatorThread(db_conninfo, name="guarded", token=TOKEN).start()
    yield coordinator
    coordinator.stop()


def test_calls_without_the_token_are_unauthenticated(guarded: CoordinatorThread) -> None:
    with pytest.raises(HydraError) as error:
        Client(guarded.address, token="wrong").list_tasks()
    assert error.value.status_code_name == "UNAUTHENTICATED"
    with pytest.raises(HydraError, match="HYDRA_TOKEN"):
        list(Client(guarded.address, token="").watch(task="x"))


def test_agents_and_clients_with_the_token_work(
    guarded: CoordinatorThread, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HYDRA_TOKEN", TOKEN)
    agent = AgentProcess(
        agent_id="a", targets=[guarded.address], log_path=tmp_path / "agent.log"
    ).start()
    try:
        client = Client(guarded.address, token=TOKEN)
        client.apply(Task(name="t", command=["true"]))
        run, _ = client.trigger("t")
        assert client.wait(run.id, timeout=20).state is RunState.SUCCEEDED
    finally:
        agent.stop()
    with grpc.insecure_channel(guarded.address) as channel:  # health needs no token
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING
