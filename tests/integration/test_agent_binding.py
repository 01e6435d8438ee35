"""Agents bound to their identity, with real agent processes: a Hello that claims
another agent id, other labels or more capacity than its credential allows is
refused, so a task's runs only reach agents whose credential allows its selector."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.hydra import wait_agents
from hydra.client import Client, RunState, Task

from support.cluster import AgentProcess, CoordinatorThread, Database
from support.credentials import make_credential


@pytest.fixture
def secured(db_conninfo: str) -> Iterator[CoordinatorThread]:
    coordinator = CoordinatorThread(db_conninfo, name="secured", insecure=False).start()
    yield coordinator
    coordinator.stop()


def _refused(agent: AgentProcess) -> str:
    """The log of an agent the coordinator refused (it exits 1: retrying cannot help)."""
    assert agent.wait(20) == 1, agent.log_tail()
    return agent.log()


def _agent(
    coordinator: CoordinatorThread, tmp_path: Path, agent_id: str, token: str, **kw: object
) -> AgentProcess:
    return AgentProcess(
        agent_id, [coordinator.address], log_path=tmp_path / f"{agent_id}.log", token=token, **kw
    ).start()  # type: ignore[arg-type]


def test_an_agent_cannot_claim_another_id(
    secured: CoordinatorThread, db_conninfo: str, tmp_path: Path
) -> None:
    secret = make_credential(db_conninfo, "for-web-1", "agent", agent_id="web-1")
    log = _refused(_agent(secured, tmp_path, "web-2", secret))
    assert "credential 'for-web-1' is for agent 'web-1'; it cannot connect as agent 'web-2'" in log
    assert Database(db_conninfo).value("SELECT count(*) FROM hydra_agents") == 0


def test_an_agent_cannot_claim_more_capacity(
    secured: CoordinatorThread, db_conninfo: str, tmp_path: Path
) -> None:
    secret = make_credential(db_conninfo, "small", "agent", agent_id="small", max_capacity=2)
    log = _refused(_agent(secured, tmp_path, "small", secret, capacity=100_000))
    assert "announced capacity 100000; credential 'small' allows at most 2" in log
    agent = _agent(secured, tmp_path, "small", secret, capacity=2)
    try:
        wait_agents(db_conninfo, ["small"], watched=[agent], timeout=20)
    finally:
        agent.stop()


def test_a_task_reaches_only_agents_whose_credential_allows_its_labels(
    secured: CoordinatorThread, db_conninfo: str, tmp_path: Path
) -> None:
    admin = Client(secured.address, token=make_credential(db_conninfo, "root", "admin"))
    admin.apply(Task(name="billing", command=["echo", "paid"], selector={"pool": "billing"}))
    run, _ = admin.trigger("billing")
    general = make_credential(
        db_conninfo, "general", "agent", agent_id="rogue", labels={"pool": "general"}
    )
    log = _refused(_agent(secured, tmp_path, "rogue", general, labels={"pool": "billing"}))
    assert "announced labels {pool=billing}; credential 'general' allows exactly" in log
    assert admin.get_run(run.id).state is RunState.QUEUED
    assert "paid" not in log
    billing = make_credential(
        db_conninfo, "billing", "agent", agent_id="billing-1", labels={"pool": "billing"}
    )
    agent = _agent(secured, tmp_path, "billing-1", billing, labels={"pool": "billing"})
    try:
        done = admin.wait(run.id, timeout=30)
        assert done.state is RunState.SUCCEEDED
        assert done.attempts[-1].agent == "billing-1"
    finally:
        agent.stop()
    attempts = Database(db_conninfo).attempts(run.id)
    assert {a["agent_id"] for a in attempts} == {"billing-1"}


def test_a_credential_of_another_role_cannot_connect(
    secured: CoordinatorThread, db_conninfo: str, tmp_path: Path
) -> None:
    admin = make_credential(db_conninfo, "root", "admin")
    log = _refused(_agent(secured, tmp_path, "a", admin))
    assert "AgentService/Connect needs role agent; credential 'root' has role admin" in log


def test_revoking_an_agent_credential_ends_its_stream(
    secured: CoordinatorThread, db_conninfo: str, tmp_path: Path
) -> None:
    admin = Client(secured.address, token=make_credential(db_conninfo, "root", "admin"))
    secret = make_credential(db_conninfo, "for-a", "agent", agent_id="a")
    agent = _agent(secured, tmp_path, "a", secret)
    wait_agents(db_conninfo, ["a"], watched=[agent], timeout=20)
    admin.revoke_credential("for-a")
    log = _refused(agent)
    assert "credential 'for-a' was revoked" in log
