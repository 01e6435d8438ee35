"""Every metric an agent exports (docs/metrics.md), in a registry of its own.

Counters are incremented where the lease book sees the event; what the agent
holds now (attempts running, slots, connection) is read when scraped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, ProcessCollector, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

# `_created` samples double every counter's series for a figure nobody alerts on.
disable_created_metrics()  # type: ignore[no-untyped-call]


@dataclass(frozen=True, kw_only=True, slots=True)
class AgentNow:
    """What an agent holds at one moment."""

    attempts_running: int
    slots_used: int
    capacity: int
    connected: bool
    draining: bool


class AgentMetrics:
    """The metric objects of one agent, and the plain calls that record them."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self.attempts_finished = Counter(
            "hydra_agent_attempts_finished", "Attempts this agent ended, by outcome "
            "(SUCCEEDED, FAILED, TIMED_OUT, CANCELLED, FENCED).", ["outcome"],
            registry=self.registry,
        )  # fmt: skip
        self.spawn_failures = Counter(
            "hydra_agent_spawn_failures", "Attempts whose process could not be started "
            "(no such command, bad workdir, a missing secret...).", registry=self.registry,
        )  # fmt: skip
        self.output_bytes = Counter(
            "hydra_agent_output_bytes", "Bytes of output attempts wrote, by stream "
            "(STDOUT, STDERR).", ["stream"], registry=self.registry,
        )  # fmt: skip

    def watch(self, now: Callable[[], AgentNow]) -> None:
        """Export what `now()` says when scraped."""
        self.registry.register(_NowCollector(now))

    def attempt_finished(self, outcome: str, *, spawned: bool) -> None:
        """An attempt ended; `spawned` False: its process never started."""
        self.attempts_finished.labels(outcome).inc()
        if not spawned and outcome == "FAILED":
            self.spawn_failures.inc()

    def output(self, stream: str, size: int) -> None:
        """An attempt wrote `size` bytes on `stream`."""
        self.output_bytes.labels(stream).inc(size)


class _NowCollector(Collector):
    def __init__(self, now: Callable[[], AgentNow]) -> None:
        self._now = now

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now = self._now()
        yield GaugeMetricFamily(
            "hydra_agent_attempts_running", "Attempt processes running on this agent.",
            value=now.attempts_running,
        )  # fmt: skip
        slots = GaugeMetricFamily(
            "hydra_agent_slots", "This agent's slots, by state (used: leases checked or "
            "running; free).", labels=["state"],
        )  # fmt: skip
        slots.add_metric(["used"], now.slots_used)
        slots.add_metric(["free"], max(now.capacity - now.slots_used, 0))
        yield slots
        yield GaugeMetricFamily(
            "hydra_agent_connected", "1 while the agent has a working stream to a coordinator.",
            value=1 if now.connected else 0,
        )  # fmt: skip
        yield GaugeMetricFamily(
            "hydra_agent_draining", "1 while the agent drains (takes no new leases).",
            value=1 if now.draining else 0,
        )  # fmt: skip

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return []
