"""A real Prometheus (Debian's `prometheus` package) scrapes a `hydra dev` cluster's
coordinator and agent every second; after a known workload (5 succeeded and 3
failed runs) its HTTP API has the expected series with the right values.
Everything started here — `hydra dev` (its PostgreSQL and agent), Prometheus — is
stopped at the end. Without `prometheus` on PATH or in /usr/bin the test fails
saying how to install it."""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from test_dev_command import DEV_AGENT, EMBEDDED_START_S, wait_agent_state, wait_serving

from harness.hydra import HYDRA, Hydractl
from harness.net import free_port
from harness.wait import wait_for

from support.metrics import prometheus_binary
from support.processes import Processes

SCRAPE_CONFIG = """\
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: hydra-coordinator
    authorization: {{credentials_file: "{token_file}"}}
    static_configs: [{{targets: ["{coordinator}"]}}]
  - job_name: hydra-agent
    static_configs: [{{targets: ["{agent}"]}}]
"""


class PrometheusApi:
    """Instant queries against Prometheus' HTTP API."""

    def __init__(self, address: str) -> None:
        self.address = address

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The result vector of `promql` now ([] when Prometheus is not up yet)."""
        url = f"http://{self.address}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                answer = json.load(response)
        except OSError:
            return []
        assert answer["status"] == "success", answer
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def value(self, promql: str) -> float | None:
        """The single value of `promql` (None: no series)."""
        result = self.query(promql)
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None

    def wait_value(self, promql: str, expected: float, timeout: float = 30.0) -> None:
        seen: list[float | None] = []

        def reached() -> bool:
            seen.append(self.value(promql))
            return seen[-1] == expected

        wait_for(reached, timeout=timeout, message=f"{promql} == {expected} (last {seen[-1:]})")


def _start_prometheus(
    processes: Processes, tmp_path: Path, coordinator: str, agent: str, token_file: Path
) -> str:
    config = tmp_path / "prometheus.yml"
    config.write_text(
        SCRAPE_CONFIG.format(coordinator=coordinator, agent=agent, token_file=token_file)
    )
    address = f"127.0.0.1:{free_port()}"
    argv = [
        prometheus_binary("prometheus"),
        f"--config.file={config}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address={address}",
        "--log.level=warn",
    ]
    processes.start("prometheus", argv)
    return address


def _workload(hydractl: Hydractl, tmp_path: Path) -> None:
    spec = tmp_path / "tasks.yaml"
    spec.write_text(
        "name: export.good\ncommand: [echo, ok]\n---\n"
        "name: export.bad\ncommand: [sh, -c, 'exit 1']\nretry: {max_attempts: 1}\n"
    )
    hydractl.ok("apply", "-f", str(spec))
    for _ in range(5):
        hydractl.ok("run", "export.good", "--wait")
    for _ in range(3):
        failed = hydractl.run("run", "export.bad", "--wait")
        assert failed.returncode == 1, failed.stderr


def test_a_real_prometheus_scrapes_a_dev_cluster_and_has_the_expected_series(
    home_processes: Processes, hydra_home: Path, tmp_path: Path
) -> None:
    prometheus_binary("promtool")  # the package is whole
    listen = f"127.0.0.1:{free_port()}"
    coordinator, agent = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    argv = [*HYDRA, "dev", "--home", str(hydra_home), "--listen", listen]
    argv += ["--metrics-listen", coordinator, "--agent-metrics-listen", agent]
    dev = home_processes.start("dev", argv)
    wait_serving(dev, listen, timeout=EMBEDDED_START_S)
    assert f"metrics: coordinator http://{coordinator}/metrics, agent http://{agent}/metrics" in (
        dev.log()
    )
    # hydractl finds the dev admin through the context in HYDRA_HOME; Prometheus
    # scrapes with a viewer credential of its own, as docs/metrics.md says to.
    hydractl = Hydractl(listen, env={"HYDRA_HOME": str(hydra_home)})
    wait_agent_state(hydractl, DEV_AGENT, "connected", 30)
    token_file = tmp_path / "prometheus.token"
    hydractl.ok(
        "credentials", "create", "--name", "prometheus", "--role", "viewer",
        "--output-file", str(token_file),
    )  # fmt: skip
    started_prometheus = _start_prometheus(home_processes, tmp_path, coordinator, agent, token_file)
    api = PrometheusApi(started_prometheus)
    api.wait_value('up{job="hydra-coordinator"}', 1, timeout=60)
    api.wait_value('up{job="hydra-agent"}', 1)
    started = time.time()
    _workload(hydractl, tmp_path)
    _check_series(api, started)


def _check_series(api: PrometheusApi, started: float) -> None:
    api.wait_value('hydra_runs_finished_total{task="export.good",state="SUCCEEDED"}', 5)
    api.wait_value('hydra_runs_finished_total{task="export.bad",state="FAILED"}', 3)
    api.wait_value('sum by (cause) (hydra_runs_created_total{task="export.bad"})', 3)
    api.wait_value('hydra_schedule_lag_seconds_count{task="export.good"}', 5)
    api.wait_value('hydra_attempt_duration_seconds_count{task="export.bad"}', 3)
    api.wait_value('hydra_attempts_finished_total{outcome="FAILED"}', 3)
    api.wait_value('hydra_agent_attempts_finished_total{outcome="SUCCEEDED"}', 5)
    api.wait_value('hydra_agent_output_bytes_total{stream="STDOUT"}', 5 * len("ok\n"))
    api.wait_value('max by (state) (hydra_cluster_agents{state="connected"})', 1)
    api.wait_value('max by (state) (hydra_runs_in_state{state="QUEUED"})', 0)
    api.wait_value('hydra_grpc_requests_total{method="hydra.v1.RunService/Trigger",code="OK"}', 8)
    wait_for(
        lambda: api.value('hydra_task_last_failure_timestamp_seconds{task="export.bad"}'),
        timeout=30,
        message="the last failure's timestamp",
    )
    success = api.value('hydra_task_last_success_timestamp_seconds{task="export.good"}')
    failure = api.value('hydra_task_last_failure_timestamp_seconds{task="export.bad"}')
    assert success is not None and failure is not None
    assert started <= success <= failure <= time.time()  # good ran first, then bad
    # The alert of docs/metrics.md holds nothing for a task that succeeded just now.
    assert api.query("time() - hydra_task_last_success_timestamp_seconds > 26*3600") == []
    assert api.value('hydra_task_last_failure_timestamp_seconds{task="export.good"}') is None
