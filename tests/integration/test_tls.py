"""TLS and mTLS with real certificates: the SDK, hydractl and an agent run a task;
each way of getting TLS wrong is refused with its one clear line; certificates
rotated on disk are served without a restart."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trustme

from harness.hydra import HYDRACTL
from harness.processes import clean_env
from harness.wait import wait_for
from hydra.client import Client, ClientTls, RunState, Task, TlsProblem
from hydra.coordinator.tls import ServerTls

from support.certs import SERVER_NAMES, Certs, make_certs, write_ca, write_pair
from support.cluster import AgentProcess, CoordinatorThread


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    return make_certs(tmp_path / "certs")


Start = Callable[..., CoordinatorThread]


@pytest.fixture
def start(db_conninfo: str) -> Iterator[Start]:
    """Starts coordinators (stopped at the end): start(tls=..., name=...)."""
    started: list[CoordinatorThread] = []

    def starter(tls: ServerTls | None, name: str = "c") -> CoordinatorThread:
        coordinator = CoordinatorThread(db_conninfo, name=name, tls=tls)
        started.append(coordinator.start())
        return coordinator

    yield starter
    for coordinator in started:
        coordinator.stop()


def hydractl(address: str, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [*HYDRACTL, "--coordinator", address, *args],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=90,
        check=False,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done


def tls_flags(certs: Certs, *, mutual: bool) -> list[str]:
    flags = ["--tls-ca", str(certs.ca)]
    if mutual:
        flags += ["--tls-cert", str(certs.client.cert), "--tls-key", str(certs.client.key)]
    return flags


@pytest.mark.parametrize("mutual", [False, True], ids=["tls", "mtls"])
def test_sdk_hydractl_and_agent_run_a_task(
    certs: Certs, start: Start, tmp_path: Path, mutual: bool
) -> None:
    coordinator = start(certs.server_tls(mutual=mutual))
    flags = tls_flags(certs, mutual=mutual)
    agent = AgentProcess(
        "agent-0", [coordinator.address], log_path=tmp_path / "agent.log", extra_args=flags
    ).start()
    try:
        with Client(coordinator.address, tls=certs.client_tls(mutual=mutual)) as client:
            client.apply(Task(name="over.tls", command=["echo", "hello"]))
            run, _ = client.trigger("over.tls")
            assert client.wait(run.id, timeout=30).state is RunState.SUCCEEDED
        done = hydractl(coordinator.address, *flags, "run", "over.tls", "--wait", "--timeout", "30")
        assert done.returncode == 0, done.stderr
        status = hydractl(coordinator.address, *flags, "cluster", "status", "-o", "json")
        assert '"tls": true' in status.stdout
    finally:
        agent.stop()
    assert "Traceback" not in agent.log()


def refused(address: str, *flags: str) -> str:
    """hydractl's stderr for a call that must be refused as unavailable (exit 5), in one line."""
    done = hydractl(address, *flags, "tasks", "list")
    assert done.returncode == 5, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_plaintext_client_against_a_tls_coordinator(certs: Certs, start: Start) -> None:
    coordinator = start(certs.server_tls())
    line = refused(coordinator.address)
    assert f"{coordinator.address} closed the connection during setup" in line
    assert "probably serves TLS" in line and "--tls-ca" in line


def test_tls_client_against_a_plaintext_coordinator(certs: Certs, start: Start) -> None:
    coordinator = start(None)
    line = refused(coordinator.address, "--tls-ca", str(certs.ca))
    assert f"{coordinator.address} does not speak TLS" in line


def test_wrong_ca(certs: Certs, start: Start) -> None:
    coordinator = start(certs.server_tls())
    line = refused(coordinator.address, "--tls-ca", str(certs.other_ca))
    assert f"the certificate of {coordinator.address} is not signed by the CA in" in line
    assert str(certs.other_ca) in line


def test_expired_certificate(certs: Certs, start: Start) -> None:
    coordinator = start(certs.server_tls(pair=certs.expired_server))
    line = refused(coordinator.address, "--tls-ca", str(certs.ca))
    assert f"the certificate of {coordinator.address} has expired" in line


def test_mtls_without_a_client_certificate(certs: Certs, start: Start) -> None:
    coordinator = start(certs.server_tls(mutual=True))
    line = refused(coordinator.address, "--tls-ca", str(certs.ca))
    assert f"{coordinator.address} requires a client certificate (mTLS)" in line
    assert "--tls-cert and --tls-key" in line


def test_mtls_with_a_client_certificate_of_another_ca(certs: Certs, start: Start) -> None:
    coordinator = start(certs.server_tls(mutual=True))
    other = certs.other_client
    flags = ["--tls-ca", str(certs.ca), "--tls-cert", str(other.cert), "--tls-key", str(other.key)]
    line = refused(coordinator.address, *flags)
    assert f"{coordinator.address} refused the client certificate {other.cert}" in line


def test_name_mismatch(certs: Certs, start: Start) -> None:
    coordinator = start(certs.server_tls())
    flags = ["--tls-ca", str(certs.ca), "--tls-server-name", "billing.example"]
    line = refused(coordinator.address, *flags)
    assert "is not for 'billing.example'" in line and "--tls-server-name" in line


def test_the_sdk_raises_the_same_line(certs: Certs, start: Start) -> None:
    coordinator = start(certs.server_tls())
    with (
        Client(coordinator.address, tls=ClientTls(ca=certs.other_ca), timeout=5) as client,
        pytest.raises(TlsProblem, match="is not signed by the CA in"),
    ):
        client.list_tasks()


def test_an_agent_logs_one_line_per_failed_reconnect(
    certs: Certs, start: Start, tmp_path: Path
) -> None:
    coordinator = start(certs.server_tls(mutual=True))
    agent = AgentProcess(
        "agent-0",
        [coordinator.address],
        log_path=tmp_path / "agent.log",
        extra_args=["--tls-ca", str(certs.ca)],
    ).start()
    try:
        wait_for(
            lambda: agent.log().count("requires a client certificate (mTLS)") >= 2,
            timeout=30,
            message="two failed reconnects logged",
        )
    finally:
        agent.stop()
    assert "Traceback" not in agent.log()


def _replace(source: Path, target: Path) -> None:
    """Replace ``target`` by a copy of ``source`` at once (rename), as deploy tools do."""
    staging = target.with_suffix(".new")
    shutil.copyfile(source, staging)
    os.replace(staging, target)


def _works(address: str, ca: Path) -> bool:
    try:
        with Client(address, tls=ClientTls(ca=ca), timeout=5) as client:
            client.list_tasks()
    except TlsProblem:
        return False
    return True


def test_rotation_without_a_restart(certs: Certs, start: Start, tmp_path: Path) -> None:
    served = tmp_path / "served"
    served.mkdir()
    cert, key = served / "tls.pem", served / "tls.key"
    _replace(certs.server.cert, cert)
    _replace(certs.server.key, key)
    coordinator = start(ServerTls(cert=cert, key=key))
    assert _works(coordinator.address, certs.ca)

    # A half-written certificate: the last good one is still served.
    cert.write_bytes(certs.server.cert.read_bytes()[:100])
    assert _works(coordinator.address, certs.ca)

    new_ca = trustme.CA()
    new_ca_file = write_ca(new_ca, tmp_path / "new-ca.pem")
    new = write_pair(new_ca.issue_cert(*SERVER_NAMES), tmp_path, "new-server")
    _replace(new.key, key)
    _replace(new.cert, cert)
    wait_for(
        lambda: _works(coordinator.address, new_ca_file),
        timeout=20,
        message="the new certificate served",
    )
    assert not _works(coordinator.address, certs.ca)
