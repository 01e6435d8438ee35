"""docs/metrics.md and the Grafana dashboard name only metrics that exist, every
metric is documented, and their PromQL parses (promtool check rules)."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import Metric

from hydra.agent.metrics import AgentMetrics, AgentNow
from hydra.coordinator.cluster_metrics import families
from hydra.coordinator.metrics import CoordinatorMetrics, PoolCollector
from hydra.coordinator.store.figures import AgentFigures, ClusterFigures, TaskFinishes

from support.metrics import prometheus_binary

DOCS = Path(__file__).parents[2] / "docs"
DASHBOARD = DOCS / "grafana" / "hydra-dashboard.json"
#: Series Prometheus itself makes.
PROMETHEUS_OWN = {"up"}
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


class _Pool:
    def get_stats(self) -> dict[str, int]:
        return {"pool_size": 2, "pool_available": 1, "requests_waiting": 0}


def _families() -> Iterator[Metric]:
    coordinator = CoordinatorMetrics()
    coordinator.register(PoolCollector({"api": _Pool()}))
    yield from coordinator.registry.collect()
    now = datetime.now(UTC)
    figures = ClusterFigures(
        runs_by_state={"QUEUED": 1},
        tasks=(TaskFinishes(task="t", last_success=now, last_failure=now),),
        agents=(AgentFigures(state="connected", agents=1, capacity=2, used=1),),
    )
    yield from families(figures, up=True)
    agent = AgentMetrics()
    agent.watch(
        lambda: AgentNow(
            attempts_running=0, slots_used=0, capacity=1, connected=True, draining=False
        )
    )
    yield from agent.registry.collect()


def _hydra_families() -> dict[str, str]:
    """Every Hydra metric family: name → type."""
    return {f.name: f.type for f in _families() if f.name.startswith("hydra_")}


def _series_names() -> set[str]:
    """Every series name a query may use."""
    names = {name + suffix for name, kind in _hydra_families().items() for suffix in SUFFIXES[kind]}
    return names | PROMETHEUS_OWN


def _dashboard_exprs() -> list[str]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p["targets"]]


def _documented_alerts() -> str:
    text = (DOCS / "metrics.md").read_text()
    [rules] = [
        block for block in re.findall(r"```yaml\n(.*?)```", text, re.S) if "groups:" in block
    ]
    return str(rules)


def _names_in(promql: str) -> set[str]:
    return set(re.findall(r"\b(hydra_[a-z_]+|up)\b(?!\s*[=~!]|\s*\()", promql))


def test_every_metric_is_documented_with_its_type() -> None:
    text = (DOCS / "metrics.md").read_text()
    for name, kind in _hydra_families().items():
        shown = name + ("_total" if kind == "counter" else "")
        row = re.search(rf"^\| `{shown}` \| ([a-z]+)", text, re.M)
        assert row is not None, f"{shown} is not in docs/metrics.md"
        assert row.group(1) == kind, f"{shown} is documented as {row.group(1)}, is {kind}"


def test_every_dashboard_expression_names_metrics_that_exist() -> None:
    exprs = _dashboard_exprs()
    assert len(exprs) >= 10
    known = _series_names()
    for expr in exprs:
        used = _names_in(expr)
        assert used, f"no metric in {expr!r}"
        assert used <= known, f"{expr!r} names {used - known}, which no Hydra process exports"


def test_every_documented_alert_names_metrics_that_exist() -> None:
    for expr in re.findall(r"expr: (.*)", _documented_alerts()):
        assert _names_in(expr) <= _series_names(), expr


def _promtool_rules(tmp_path: Path, rules: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "rules.yml"
    path.write_text(rules)
    return subprocess.run(
        [prometheus_binary("promtool"), "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_documented_alerts_are_valid_prometheus_rules(tmp_path: Path) -> None:
    checked = _promtool_rules(tmp_path, _documented_alerts())
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_dashboards_queries_parse(tmp_path: Path) -> None:
    """Grafana's variables replaced by what they stand for, each query as a rule."""
    rules = ["groups:", "  - name: dashboard", "    rules:"]
    for index, expr in enumerate(_dashboard_exprs()):
        promql = expr.replace("$__rate_interval", "5m").replace("$task", ".*")
        rules += [f"      - record: hydra:dashboard_{index}", f"        expr: {json.dumps(promql)}"]
    checked = _promtool_rules(tmp_path, "\n".join(rules) + "\n")
    assert checked.returncode == 0, checked.stdout + checked.stderr


FAILED_RATE = 'sum by (task) (rate(hydra_runs_finished_total{state="FAILED"}[5m]))'
NOT_SUCCEEDED = "time() - hydra_task_last_success_timestamp_seconds > 26*3600"


@pytest.mark.parametrize(
    "promql, names",
    [
        (FAILED_RATE, {"hydra_runs_finished_total"}),
        (NOT_SUCCEEDED, {"hydra_task_last_success_timestamp_seconds"}),
    ],
)
def test_names_in_finds_metrics_not_functions_or_labels(promql: str, names: set[str]) -> None:
    assert _names_in(promql) == names
