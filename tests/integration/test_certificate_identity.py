"""Under mTLS an agent's client certificate may stand in for its token: the
certificate's Common Name names the agent id, and the live agent credential of
that id (its labels, its capacity) is what the agent may claim. A certificate
no credential names, or one claiming another id, is refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from harness.hydra import wait_agents
from harness.wait import wait_for
from hydra.client import Client, ClientTls, Role, RunState, Task
from hydra.coordinator.tls import ServerTls

from support.certs import SERVER_NAMES, Pair, write_ca, write_pair
from support.cluster import AgentProcess, CoordinatorThread, Database
from support.credentials import make_credential


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def secured_mtls(
    db_conninfo: str, ca: trustme.CA, tmp_path: Path
) -> Iterator[tuple[CoordinatorThread, Path]]:
    ca_file = write_ca(ca, tmp_path / "ca.pem")
    server = write_pair(ca.issue_cert(*SERVER_NAMES), tmp_path, "server")
    tls = ServerTls(cert=server.cert, key=server.key, client_ca=ca_file)
    coordinator = CoordinatorThread(db_conninfo, name="mtls", insecure=False, tls=tls).start()
    yield coordinator, ca_file
    coordinator.stop()


def _agent(
    address: str, ca_file: Path, pair: Pair, agent_id: str, tmp_path: Path, **labels: str
) -> AgentProcess:
    flags = ["--tls-ca", str(ca_file), "--tls-cert", str(pair.cert), "--tls-key", str(pair.key)]
    return AgentProcess(
        agent_id,
        [address],
        log_path=tmp_path / f"{agent_id}-{pair.cert.stem}.log",
        labels=labels or None,
        extra_args=flags,
    ).start()


def test_a_client_certificate_stands_for_the_agent_credential_of_its_name(
    secured_mtls: tuple[CoordinatorThread, Path],
    ca: trustme.CA,
    db_conninfo: str,
    tmp_path: Path,
) -> None:
    coordinator, ca_file = secured_mtls
    pair = write_pair(ca.issue_cert("agent-cert", common_name="agent-cert"), tmp_path, "agent")
    stranger = write_pair(ca.issue_cert("stranger", common_name="stranger"), tmp_path, "strange")

    # No credential names "stranger": its certificate alone gets it nowhere.
    refused = _agent(coordinator.address, ca_file, stranger, "stranger", tmp_path)
    try:
        wait_for(
            lambda: "no live agent credential" in refused.log(),
            timeout=30,
            message="the stranger refused for want of a credential",
        )
    finally:
        refused.stop()

    make_credential(
        db_conninfo, "agent-cert", Role.AGENT, agent_id="agent-cert", labels={"pool": "web"}
    )
    admin = make_credential(db_conninfo, "admin", Role.ADMIN)
    # The certificate for agent-cert may not claim another id ...
    impostor = _agent(coordinator.address, ca_file, pair, "someone-else", tmp_path, pool="web")
    try:
        wait_for(
            lambda: (
                "is for agent 'agent-cert'; it cannot connect as agent 'someone-else'"
                in impostor.log()
            ),
            timeout=30,
            message="the certificate refused for another agent id",
        )
    finally:
        impostor.stop()
    # ... nor other labels than its credential's ...
    relabelled = _agent(coordinator.address, ca_file, pair, "agent-cert", tmp_path, pool="db")
    try:
        wait_for(
            lambda: "allows exactly {pool=web}" in relabelled.log(),
            timeout=30,
            message="the certificate refused for other labels",
        )
    finally:
        relabelled.stop()
    # ... and with its own id and labels it connects without any token and runs work.
    agent = _agent(coordinator.address, ca_file, pair, "agent-cert", tmp_path, pool="web")
    try:
        wait_agents(db_conninfo, ["agent-cert"], watched=[agent], timeout=30)
        tls = _client_tls(ca, ca_file, tmp_path)
        with Client(coordinator.address, token=admin, tls=tls) as client:
            client.apply(Task(name="by.cert", command=("true",), selector={"pool": "web"}))
            run, _ = client.trigger("by.cert")
            assert client.wait(run.id, timeout=30).state is RunState.SUCCEEDED
    finally:
        agent.stop()
    [connected] = Database(db_conninfo).rows("SELECT * FROM hydra_agents")
    assert (connected["id"], connected["labels"]) == ("agent-cert", {"pool": "web"})


def _client_tls(ca: trustme.CA, ca_file: Path, tmp_path: Path) -> ClientTls:
    person = write_pair(ca.issue_cert("alice@example", common_name="alice"), tmp_path, "alice")
    return ClientTls(ca=ca_file, cert=person.cert, key=person.key)
