"""Every metric a coordinator exports (docs/metrics.md), in a registry of its own.

Events are counted where they happen, once their transaction has committed: a
transaction collects them in its :class:`TransactionMetrics` (appending a
tuple costs next to nothing) and they are recorded when it commits; a rolled
back transaction counted nothing. Cluster-wide figures (queue depth, each
task's last success, agents) come from the database through
``cluster_metrics.ClusterCollector``, so every coordinator reports the same.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

# `_created` samples double every counter's series for a figure nobody alerts on.
disable_created_metrics()  # type: ignore[no-untyped-call]

#: Occurrence → process start: a healthy cluster starts within tens of milliseconds.
LAG_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
#: Attempts last from a second to hours.
DURATION_BUCKETS = (0.1, 0.5, 1, 5, 10, 30, 60, 300, 600, 1800, 3600, 3 * 3600, 6 * 3600)
#: gRPC calls and database transactions: milliseconds, sometimes seconds.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class CoordinatorMetrics:
    """The metric objects of one coordinator, and the plain calls that record them."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        ProcessCollector(registry=registry)
        self.runs_created = Counter(
            "hydra_runs_created", "Runs created, by task and cause (cron, interval, at, "
            "after, manual, backfill, retry).", ["task", "cause"], registry=registry,
        )  # fmt: skip
        self.runs_finished = Counter(
            "hydra_runs_finished", "Runs that reached a terminal state, by task and state "
            "(SUCCEEDED, FAILED, CANCELLED, SKIPPED).", ["task", "state"], registry=registry,
        )  # fmt: skip
        self.attempts_finished = Counter(
            "hydra_attempts_finished", "Attempts ended, by outcome (SUCCEEDED, FAILED, "
            "TIMED_OUT, CANCELLED, FENCED, LOST).", ["outcome"], registry=registry,
        )  # fmt: skip
        self.schedule_lag = Histogram(
            "hydra_schedule_lag_seconds", "From a run's occurrence to the start of its first "
            "attempt's process, by task.", ["task"], buckets=LAG_BUCKETS, registry=registry,
        )  # fmt: skip
        self.attempt_duration = Histogram(
            "hydra_attempt_duration_seconds", "How long attempts ran (process start to end), "
            "by task.", ["task"], buckets=DURATION_BUCKETS, registry=registry,
        )  # fmt: skip
        self.leases_expired = Counter(
            "hydra_leases_expired", "Leases reaped because their agent stopped renewing them.",
            registry=registry,
        )  # fmt: skip
        self.precondition_checks = Counter(
            "hydra_precondition_checks", "Precondition verdicts reported by agents, by verdict "
            "(ready, not_ready).", ["verdict"], registry=registry,
        )  # fmt: skip
        self.notifications = Counter(
            "hydra_notifications", "Notification deliveries, by outcome (delivered, retried, "
            "failed).", ["outcome"], registry=registry,
        )  # fmt: skip
        self.grpc_requests = Counter(
            "hydra_grpc_requests", "gRPC calls handled, by method and status code.",
            ["method", "code"], registry=registry,
        )  # fmt: skip
        self.stream_messages = Counter(
            "hydra_agent_stream_messages", "Messages on agent streams, by direction (received, "
            "sent); a batch counts one.", ["direction"], registry=registry,
        )  # fmt: skip
        self.stream_items = Counter(
            "hydra_agent_stream_items", "Items on agent streams, by direction (received, sent): "
            "each message of a batch counts one; over hydra_agent_stream_messages_total, the "
            "items per message.", ["direction"], registry=registry,
        )  # fmt: skip
        self.grpc_duration = Histogram(
            "hydra_grpc_request_duration_seconds", "Time to handle a unary gRPC call, by method.",
            ["method"], buckets=LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.transaction_duration = Histogram(
            "hydra_db_transaction_duration_seconds", "Database transactions, from taking a "
            "connection to the commit, by pool (api, control).", ["pool"],
            buckets=LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip

    def child(self, metric: Any, labels: tuple[str, ...]) -> Any:
        """`metric.labels(*labels)`, remembered: `labels()` validates and locks each
        time, a dict lookup does not (as many entries as the metric has series)."""
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels) if labels else metric
        return found

    def register(self, collector: Collector) -> None:
        """Add a collector of figures read when scraped (pools, the cluster's)."""
        self.registry.register(collector)

    def transaction(self) -> TransactionMetrics:
        """What one transaction counts, recorded if it commits."""
        return TransactionMetrics(self)

    def notification(self, outcome: str) -> None:
        """A notification delivery ended: ``delivered``, ``retried`` or ``failed``
        (call it after the outbox row's state change committed)."""
        self.notifications.labels(outcome).inc()


class TransactionMetrics:
    """The events of one transaction, recorded by :meth:`commit` (after COMMIT)."""

    __slots__ = ("_counts", "_metrics", "_observations")

    def __init__(self, metrics: CoordinatorMetrics) -> None:
        self._metrics = metrics
        self._counts: list[tuple[Counter, tuple[str, ...], float]] = []
        self._observations: list[tuple[Histogram, str, float]] = []

    def run_created(self, task: str, cause: str) -> None:
        """A run of `task` was created for `cause`."""
        self._counts.append((self._metrics.runs_created, (task, cause), 1))

    def run_finished(self, task: str, state: str) -> None:
        """A run of `task` ended in terminal `state`."""
        self._counts.append((self._metrics.runs_finished, (task, state), 1))

    def attempt_started(self, task: str, lag_seconds: float) -> None:
        """The first attempt of a run of `task` started `lag_seconds` after its occurrence."""
        self._observations.append((self._metrics.schedule_lag, task, max(lag_seconds, 0.0)))

    def attempt_finished(self, task: str, outcome: str, seconds: float | None) -> None:
        """An attempt of `task` ended with `outcome` after running `seconds` (None: unknown)."""
        self._counts.append((self._metrics.attempts_finished, (outcome,), 1))
        if seconds is not None:
            self._observations.append((self._metrics.attempt_duration, task, max(seconds, 0.0)))

    def leases_expired(self, count: int) -> None:
        """`count` leases were reaped."""
        if count:
            self._counts.append((self._metrics.leases_expired, (), count))

    def preconditions_checked(self, ready: bool) -> None:
        """An agent's verdict on a run's preconditions."""
        verdict = "ready" if ready else "not_ready"
        self._counts.append((self._metrics.precondition_checks, (verdict,), 1))

    def notification(self, outcome: str) -> None:
        """A delivery of a notification ended: ``delivered``, ``retried`` or ``failed``
        (the transaction records the outbox row's new state)."""
        self._counts.append((self._metrics.notifications, (outcome,), 1))

    def commit(self) -> None:
        """Record everything counted (the transaction committed)."""
        child = self._metrics.child
        for counter, labels, amount in self._counts:
            child(counter, labels).inc(amount)
        for histogram, task, value in self._observations:
            child(histogram, (task,)).observe(value)


class PoolCollector(Collector):
    """The database pools' connections in use and requests waiting, read when scraped."""

    def __init__(self, pools: dict[str, Any]) -> None:
        """`pools`: psycopg_pool pools by name (``api``, ``control``)."""
        self._pools = pools

    def collect(self) -> Iterator[GaugeMetricFamily]:
        size = GaugeMetricFamily(
            "hydra_db_pool_connections", "Connections of the pool, by pool and state "
            "(in_use, idle).", labels=["pool", "state"],
        )  # fmt: skip
        waiting = GaugeMetricFamily(
            "hydra_db_pool_requests_waiting", "Transactions waiting for a connection, by pool.",
            labels=["pool"],
        )  # fmt: skip
        for name, pool in self._pools.items():
            stats = pool.get_stats()
            idle = stats.get("pool_available", 0)
            size.add_metric([name, "in_use"], stats.get("pool_size", 0) - idle)
            size.add_metric([name, "idle"], idle)
            waiting.add_metric([name], stats.get("requests_waiting", 0))
        yield from (size, waiting)

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return []


#: The pruner's counters (loops/pruner.py PruneStats) by the table label they get.
PRUNED_TABLES = {
    "runs": "runs",
    "attempts": "attempts",
    "output_chunks": "output_chunks",
    "notifications": "notifications",
    "audit_entries": "audit_entries",
    "occurrence_records": "occurrence_records",
    "task_versions": "task_versions",
    "tasks": "tasks",
}


class PrunerCollector(Collector):
    """What this coordinator's pruner deleted, read from its stats when scraped."""

    def __init__(self, stats: Any) -> None:
        """`stats`: the pruner's PruneStats (attributes named as PRUNED_TABLES' keys)."""
        self._stats = stats

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        pruned = CounterMetricFamily(
            "hydra_pruned_rows", "Rows this coordinator's pruner deleted, by table.",
            labels=["table"],
        )  # fmt: skip
        for attribute, table in PRUNED_TABLES.items():
            pruned.add_metric([table], getattr(self._stats, attribute))
        passes = CounterMetricFamily(
            "hydra_prune_passes", "Pruning passes this coordinator made.", labels=[]
        )
        passes.add_metric([], self._stats.passes)
        seconds = GaugeMetricFamily(
            "hydra_prune_last_pass_seconds", "How long this coordinator's last pruning pass took."
        )
        seconds.add_metric([], self._stats.last_pass_seconds)
        yield from (pruned, passes, seconds)

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return []
