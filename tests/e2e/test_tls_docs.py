"""docs/security.md, followed as written: its openssl commands make a CA and
certificates, then two `hydra coordinator` processes on one database and an
agent run a task over mTLS on loopback, driven by hydractl (with credentials
from `hydra credentials create`: authentication is on). The docs cannot rot."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from harness.hydra import HYDRA, HYDRACTL, wait_serving
from harness.net import free_port
from harness.processes import clean_env
from harness.wait import wait_for
from hydra.client import ClientTls

from support.processes import FAST_TIMING, Processes

SECURITY = Path(__file__).resolve().parents[2] / "docs" / "security.md"

pytestmark = pytest.mark.slow


def openssl_block() -> str:
    """The fenced sh block of "Your own CA with `openssl`"."""
    found = re.search(r"### Your own CA.*?```sh\n(.*?)```", SECURITY.read_text(), re.S)
    assert found is not None, "docs/security.md lost its openssl block"
    return found.group(1)


def make_certificates(directory: Path) -> None:
    directory.mkdir()
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", openssl_block()],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert (directory / "ca.key").stat().st_mode & 0o077 == 0


def start_coordinator(processes: Processes, certs: Path, name: str, conninfo: str) -> str:
    address = f"127.0.0.1:{free_port()}"
    argv = [*HYDRA, "--log-level", "debug", "coordinator", "--listen", address, "--id", name]
    argv += ["--tls-cert", str(certs / "coordinator.pem")]
    argv += ["--tls-key", str(certs / "coordinator.key")]
    argv += ["--tls-client-ca", str(certs / "ca.pem"), *FAST_TIMING.flags()]
    process = processes.start(name, argv, env={"HYDRA_DB": conninfo})
    wait_serving(process, address, timeout=60, tls=person(certs))  # health needs no credential
    return address


def person(certs: Path) -> ClientTls:
    return ClientTls(ca=certs / "ca.pem", cert=certs / "alice.pem", key=certs / "alice.key")


def credential(conninfo: str, directory: Path, name: str, *args: str) -> str:
    """The secret of a new credential, made with database access (the bootstrap)."""
    path = directory / f"{name}.token"
    done = subprocess.run(
        [*HYDRA, "credentials", "create", "--name", name, *args, "--output-file", str(path)],
        capture_output=True,
        text=True,
        env=clean_env(HYDRA_DB=conninfo),
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return path.read_text().strip()


def hydractl(certs: Path, targets: str, *args: str) -> str:
    flags = [
        "--token",
        (certs / "alice.token").read_text().strip(),
        "--tls-ca",
        str(certs / "ca.pem"),
    ]
    flags += ["--tls-cert", str(certs / "alice.pem"), "--tls-key", str(certs / "alice.key")]
    done = subprocess.run(
        [*HYDRACTL, "--coordinator", targets, *flags, *args],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=90,
        check=False,
    )
    assert "Traceback" not in done.stderr
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_tls_section_works_as_written(db_conninfo: str, tmp_path: Path) -> None:
    certs = tmp_path / "pki"
    make_certificates(certs)
    credential(db_conninfo, certs, "alice", "--role", "admin")
    credential(db_conninfo, certs, "agent-1", "--role", "agent", "--agent-id", "agent-1")
    task = tmp_path / "task.yaml"
    task.write_text('name: docs.tls\ncommand: ["echo", "over mTLS"]\n')
    with Processes(tmp_path / "logs") as processes:
        first = start_coordinator(processes, certs, "coordinator-1", db_conninfo)
        second = start_coordinator(processes, certs, "coordinator-2", db_conninfo)
        targets = f"{first},{second}"
        argv = [*HYDRA, "--log-level", "debug", "agent", "--coordinator", targets]
        argv += ["--id", "agent-1", "--capacity", "2", "--token-file", str(certs / "agent-1.token")]
        argv += ["--tls-ca", str(certs / "ca.pem")]
        argv += ["--tls-cert", str(certs / "agent-1.pem"), "--tls-key", str(certs / "agent-1.key")]
        agent = processes.start("agent-1", argv)

        def connected() -> bool:
            agent.check_running()
            return '"agent-1"' in hydractl(certs, targets, "agents", "list", "-o", "json")

        wait_for(connected, timeout=60, interval=0.3, message="agent-1 connected over mTLS")
        hydractl(certs, second, "apply", "-f", str(task))
        hydractl(certs, first, "run", "docs.tls", "--wait", "--timeout", "60")
        status = hydractl(certs, targets, "cluster", "status")
        assert "coordinator-1" in status and "coordinator-2" in status
        assert "plaintext" not in status
        assert "Traceback" not in agent.log()
