"""Secure defaults of `hydra coordinator`: no plaintext beyond loopback unless
--insecure, which warns at start and in `cluster status`; bad certificate files
are named by their flag before anything starts."""

from __future__ import annotations

import subprocess
from pathlib import Path

import psycopg
import pytest

from harness.hydra import HYDRA, Hydractl, wait_serving
from harness.net import free_port
from harness.processes import clean_env
from harness.wait import wait_for

from support.certs import make_certs
from support.processes import Processes


def hydra(*args: str, conninfo: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*HYDRA, *args],
        capture_output=True,
        text=True,
        env=clean_env(HYDRA_DB=conninfo),
        timeout=60,
        check=False,
    )


def test_plaintext_beyond_loopback_refuses_to_start(db_conninfo: str) -> None:
    done = hydra("coordinator", "--listen", f"0.0.0.0:{free_port()}", conninfo=db_conninfo)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert "refusing to serve plaintext on 0.0.0.0:" in done.stderr
    assert "--tls-cert and --tls-key" in done.stderr and "--insecure" in done.stderr


def test_insecure_starts_warns_and_shows_in_cluster_status(
    db_conninfo: str, tmp_path: Path
) -> None:
    port = free_port()
    with Processes(tmp_path / "logs", env=clean_env(HYDRA_DB=db_conninfo)) as processes:
        argv = [*HYDRA, "coordinator", "--listen", f"0.0.0.0:{port}", "--insecure", "--id", "open"]
        process = processes.start("open", argv)
        wait_serving(process, f"127.0.0.1:{port}", timeout=60)
        log = process.log()
        assert "WARNING" in log and "--insecure: serving WITHOUT authentication" in log
        hydractl = Hydractl(f"127.0.0.1:{port}")
        line = "WARNING: coordinator open (0.0.0.0:"
        wait_for(
            lambda: line in hydractl.ok("cluster", "status"),
            timeout=20,
            message="the warning in cluster status",
        )
        coordinators = hydractl.json("cluster", "status")["coordinators"]
        assert coordinators[0]["insecure"] is True and coordinators[0]["tls"] is False
    with psycopg.connect(db_conninfo) as conn:
        rows = conn.execute("SELECT insecure FROM hydra_coordinators WHERE id = 'open'").fetchall()
    assert rows in ([], [(True,)])  # withdrawn at stop, or still there


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (("missing.pem", "server.key", None), "--tls-cert: cannot read"),
        (("server.pem", "client.key", None), "--tls-key: "),
        (("server.pem", "server.key", "server.key"), "--tls-client-ca: "),
        (("server.pem", None, None), "--tls-key: TLS needs both --tls-cert and --tls-key"),
    ],
    ids=["no-cert", "key-of-another-cert", "client-ca-not-a-certificate", "no-key"],
)
def test_bad_certificate_files_are_named_by_their_flag(
    db_conninfo: str, tmp_path: Path, files: tuple[str, str | None, str | None], message: str
) -> None:
    certs = make_certs(tmp_path)
    cert, key, client_ca = files
    args = ["coordinator", "--listen", f"127.0.0.1:{free_port()}"]
    args += ["--tls-cert", str(tmp_path / cert)]
    args += ["--tls-key", str(tmp_path / key)] if key else []
    args += ["--tls-client-ca", str(tmp_path / client_ca)] if client_ca else []
    done = hydra(*args, conninfo=db_conninfo)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert f"hydra: error: {message}" in done.stderr
    assert certs.ca.exists()
