"""Metrics without a cluster: the listen address check, counting at commit only,
the endpoint's paths and refusals, the flags of `hydra coordinator | agent | dev`."""

from __future__ import annotations

import socket
import ssl
import subprocess
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from hydra import cli
from hydra.coordinator.cluster_metrics import remembered
from hydra.coordinator.metrics import CoordinatorMetrics
from hydra.coordinator.store.figures import ClusterFigures, TaskFinishes
from hydra.errors import InvalidArgument
from hydra.metrics_http import (
    CannotServeMetrics,
    MetricsServer,
    MetricsTls,
    check_metrics_listen,
    is_loopback,
    parse_listen,
)

from support.metrics import scrape


@pytest.mark.parametrize(
    "address, expected",
    [
        ("127.0.0.1:9464", ("127.0.0.1", 9464)),
        ("[::1]:0", ("::1", 0)),
        ("localhost:1", ("localhost", 1)),
    ],
)  # fmt: skip
def test_listen_addresses_parse(address: str, expected: tuple[str, int]) -> None:
    assert parse_listen(address) == expected


@pytest.mark.parametrize("address", ["9464", ":9464", "host:", "host:port", "h:70000"])
def test_a_bad_listen_address_is_refused_naming_the_flag(address: str) -> None:
    with pytest.raises(InvalidArgument, match=r"^--metrics-listen: expected HOST:PORT"):
        parse_listen(address)


def test_beyond_loopback_needs_insecure_or_tls() -> None:
    assert is_loopback("127.0.0.2") and is_loopback("::1") and not is_loopback("10.0.0.1")
    with pytest.raises(InvalidArgument, match=r"0\.0\.0\.0 is not a loopback address.*--insecure"):
        check_metrics_listen("0.0.0.0:9464", tls=None, insecure=False)
    assert check_metrics_listen("0.0.0.0:9464", tls=None, insecure=True) == ("0.0.0.0", 9464)


def test_a_transaction_counts_only_once_committed() -> None:
    metrics = CoordinatorMetrics()
    labels = {"task": "t", "cause": "manual"}
    tx = metrics.transaction()
    tx.run_created("t", "manual")
    tx.attempt_started("t", 0.2)
    assert metrics.registry.get_sample_value("hydra_runs_created_total", labels) is None
    tx.commit()
    assert metrics.registry.get_sample_value("hydra_runs_created_total", labels) == 1
    lag = metrics.registry.get_sample_value("hydra_schedule_lag_seconds_count", {"task": "t"})
    assert lag == 1
    metrics.transaction().run_created("t", "manual")  # never committed: rolled back
    assert metrics.registry.get_sample_value("hydra_runs_created_total", labels) == 1


def test_notifications_are_counted_by_outcome() -> None:
    metrics = CoordinatorMetrics()
    metrics.notification("delivered")
    tx = metrics.transaction()
    tx.notification("delivered")
    tx.commit()
    found = metrics.registry.get_sample_value("hydra_notifications_total", {"outcome": "delivered"})
    assert found == 2


def test_two_coordinators_in_one_process_have_their_own_registries() -> None:
    first, second = CoordinatorMetrics(), CoordinatorMetrics()
    first.notification("failed")
    outcome = {"outcome": "failed"}
    assert first.registry.get_sample_value("hydra_notifications_total", outcome) == 1
    assert second.registry.get_sample_value("hydra_notifications_total", outcome) is None


def test_the_endpoint_serves_metrics_only_and_asks_for_a_credential() -> None:
    metrics = CoordinatorMetrics()

    def authorize(header: str) -> tuple[int, str] | None:
        return None if header == "Bearer good" else (401, "no")

    server = MetricsServer(metrics.registry, "127.0.0.1", 0, authorize=authorize)
    server.start()
    try:
        assert scrape(server.address).status == 401
        assert scrape(server.address, token="good").status == 200
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"http://{server.address}/other", timeout=5)
        with missing.value as error:
            assert error.code == 404
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://{server.address}/metrics", timeout=5)
        with refused.value as error:
            assert error.headers["WWW-Authenticate"].startswith("Bearer")
    finally:
        server.stop()


def test_a_taken_port_is_a_clear_error() -> None:
    first = MetricsServer(CoordinatorMetrics().registry, "127.0.0.1", 0)
    first.start()
    try:
        second = MetricsServer(CoordinatorMetrics().registry, "127.0.0.1", first.port)
        with pytest.raises(CannotServeMetrics, match=r"cannot serve metrics on 127\.0\.0\.1:"):
            second.start()
    finally:
        first.stop()


def _config(*flags: str) -> object:
    args = cli._parser().parse_args(["coordinator", "--db", "dbname=x", *flags])
    return cli.coordinator_config(args, "dbname=x")


def _listen(*flags: str) -> str | None:
    listen: str | None = _config(*flags).metrics_listen  # type: ignore[attr-defined]
    return listen


def test_the_coordinator_flag_and_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _listen() is None
    assert _listen("--metrics-listen", "127.0.0.1:1") == "127.0.0.1:1"
    monkeypatch.setenv("HYDRA_METRICS_LISTEN", "127.0.0.1:2")
    assert _listen() == "127.0.0.1:2"
    assert _listen("--metrics-listen", "off") is None
    assert _listen("--metrics-listen", "0.0.0.0:3", "--insecure") == "0.0.0.0:3"


@pytest.mark.parametrize(
    "argv",
    [
        ["coordinator", "--db", "dbname=x", "--metrics-listen", "0.0.0.0:9464"],
        ["coordinator", "--db", "dbname=x", "--metrics-listen", "nowhere"],
        ["agent", "--coordinator", "127.0.0.1:1", "--id", "a", "--metrics-listen", "0.0.0.0:9"],
    ],
)
def test_hydra_refuses_a_bad_metrics_address_naming_the_flag(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(argv) == 2
    error = capsys.readouterr().err
    assert error.startswith("hydra: error: --metrics-listen: ")
    assert "Traceback" not in error


def test_a_task_keeps_the_last_success_this_coordinator_saw() -> None:
    """A read sees only each task's latest runs: what an earlier read found stays."""
    earlier = datetime(2026, 1, 1, tzinfo=UTC)
    later = earlier + timedelta(hours=1)
    before = ClusterFigures(
        tasks=(
            TaskFinishes(task="kept", last_success=later, last_failure=earlier),
            TaskFinishes(task="deleted", last_success=earlier, last_failure=None),
        )
    )
    now = ClusterFigures(tasks=(TaskFinishes(task="kept", last_success=None, last_failure=later),))
    [kept] = remembered(before, now).tasks
    assert (kept.last_success, kept.last_failure) == (later, later)


def test_the_endpoint_serves_tls_with_the_certificate_given(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    tls = MetricsTls(cert=cert, key=key)
    assert check_metrics_listen("0.0.0.0:1", tls=tls, insecure=False) == ("0.0.0.0", 1)
    server = MetricsServer(CoordinatorMetrics().registry, "127.0.0.1", 0, tls=tls)
    server.start()
    try:
        context = ssl.create_default_context(cafile=str(cert))
        url = f"https://{server.address}/metrics"
        with urllib.request.urlopen(url, timeout=10, context=context) as response:
            assert response.status == 200 and b"hydra_runs_created_total" in response.read()
    finally:
        server.stop()


def test_hydra_dev_moves_off_a_taken_default_port() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        default = f"127.0.0.1:{taken.getsockname()[1]}"
        moved = cli._dev_address(None, default)
    assert moved is not None and moved != default and moved.startswith("127.0.0.1:")
    assert cli._dev_address("127.0.0.1:5", default) == "127.0.0.1:5"
    assert cli._dev_address("off", default) == "off"
