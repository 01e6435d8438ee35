"""`hydra web` as a process: where it listens, what it refuses to serve, and
that `hydra dev` starts it."""

from __future__ import annotations

import subprocess
import urllib.request

from harness.hydra import HYDRA
from harness.processes import clean_env
from harness.web import start_web

from support.processes import Cluster


def test_web_serves_on_a_free_loopback_port_and_says_where(cluster: Cluster) -> None:
    web, url = start_web(cluster.processes, cluster.coordinator.address)
    assert url.startswith("http://127.0.0.1:") and not url.endswith(":0/")
    with urllib.request.urlopen(f"{url}healthz", timeout=10) as response:
        assert response.status == 200
        assert response.read() == b"ok\n"
    web.check_running()


def _web(*args: str) -> subprocess.CompletedProcess[str]:
    """`hydra web` with ``args``, expected to refuse to start."""
    return subprocess.run(
        [*HYDRA, "web", *args], capture_output=True, text=True, env=clean_env(), timeout=60,
        check=False,
    )  # fmt: skip


def test_web_refuses_plaintext_beyond_loopback_without_insecure() -> None:
    result = _web("--listen", "0.0.0.0:0")
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert "--listen" in line and "--tls-cert" in line and "--insecure" in line
    assert "Traceback" not in result.stderr


def test_web_refuses_half_a_certificate_pair() -> None:
    result = _web("--listen", "127.0.0.1:0", "--tls-cert", "/nonexistent.pem")
    assert result.returncode == 2
    assert "--tls-key" in result.stderr and "Traceback" not in result.stderr
