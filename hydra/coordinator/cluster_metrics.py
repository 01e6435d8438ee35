"""A coordinator's `/metrics` endpoint: the cluster-wide figures (read from the
database, cached briefly) and the scrape's credential check.

Scrapes arrive on the metrics server's threads; whatever needs the database
runs on the coordinator's event loop (`run_coroutine_threadsafe`), and a
scrape waits for it at most `SCRAPE_WAIT` seconds. Every coordinator reads the
same rows, so these series are aggregated with `max by (...)`, never `sum`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Coroutine, Iterable, Iterator
from datetime import datetime
from typing import Any, TypeVar

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from hydra.coordinator.api.identities import CredentialNotLive, Identities
from hydra.coordinator.store import Database
from hydra.coordinator.store import figures as store
from hydra.coordinator.store.figures import ClusterFigures, TaskFinishes
from hydra.errors import Unauthenticated

log = logging.getLogger("hydra.coordinator.metrics")

#: Seconds the cluster's figures are reused before the database is asked again.
CACHE_SECONDS = 5.0
#: Seconds a scrape waits for the database (figures, credential).
SCRAPE_WAIT = 5.0
#: States every queue depth series is shown for, zero included.
QUEUE_STATES = ("QUEUED", "LEASED", "RUNNING")

T = TypeVar("T")


def _on_loop(loop: asyncio.AbstractEventLoop, work: Coroutine[Any, Any, T]) -> T:
    """Run `work` on `loop` from another thread; its result (or its exception)."""
    return asyncio.run_coroutine_threadsafe(work, loop).result(timeout=SCRAPE_WAIT)


class ClusterCollector(Collector):
    """Queue depth, each task's last success and failure, agents and slots."""

    def __init__(self, database: Database, loop: asyncio.AbstractEventLoop) -> None:
        self._db = database
        self._loop = loop
        self._lock = threading.Lock()
        self._figures: ClusterFigures | None = None
        self._read_at = float("-inf")
        self._up = False

    def collect(self) -> Iterator[GaugeMetricFamily]:
        figures = self._current()
        return families(figures, up=self._up)

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return []

    def _current(self) -> ClusterFigures | None:
        with self._lock:  # concurrent scrapes share one read
            if time.monotonic() - self._read_at >= CACHE_SECONDS:
                self._refresh()
            return self._figures

    def _refresh(self) -> None:
        try:
            figures = _on_loop(self._loop, self._db.run(store.read))
            self._figures = remembered(self._figures, figures)
            self._up = True
        except Exception as error:  # the figures are stale; the scrape still answers
            log.warning("cluster metrics not read: %s", error or type(error).__name__)
            self._up = False
        self._read_at = time.monotonic()


def remembered(before: ClusterFigures | None, now: ClusterFigures) -> ClusterFigures:
    """`now`, each task's last success and failure no older than what `before` knew:
    a read sees only each task's latest runs (store.figures.RECENT_RUNS), so a
    failure further back is still shown if this coordinator saw it. Deleted tasks go."""
    if before is None:
        return now
    known = {task.task: task for task in before.tasks}
    tasks = tuple(_latest(known.get(task.task), task) for task in now.tasks)
    return ClusterFigures(runs_by_state=now.runs_by_state, tasks=tasks, agents=now.agents)


def _latest(before: TaskFinishes | None, now: TaskFinishes) -> TaskFinishes:
    if before is None:
        return now
    return TaskFinishes(
        task=now.task,
        last_success=_max(before.last_success, now.last_success),
        last_failure=_max(before.last_failure, now.last_failure),
    )


def _max(first: datetime | None, second: datetime | None) -> datetime | None:
    present = [instant for instant in (first, second) if instant is not None]
    return max(present) if present else None


def families(figures: ClusterFigures | None, *, up: bool) -> Iterator[GaugeMetricFamily]:
    """The cluster-wide metric families: `up` says whether `figures` are fresh;
    without figures (never read) only that."""
    yield GaugeMetricFamily(
        "hydra_cluster_metrics_up", "1 if the cluster-wide figures below were read from "
        "the database within the last few seconds, 0 if the last read failed.",
        value=1 if up else 0,
    )  # fmt: skip
    if figures is not None:
        yield from _figure_families(figures)


def _figure_families(figures: ClusterFigures) -> Iterator[GaugeMetricFamily]:
    depth = GaugeMetricFamily(
        "hydra_runs_in_state", "Runs queued, leased or running now, cluster-wide (the queue "
        "depth; max by (state) across coordinators).", labels=["state"],
    )  # fmt: skip
    for state in QUEUE_STATES:
        depth.add_metric([state], figures.runs_by_state.get(state, 0))
    yield depth
    yield from _task_families(figures)
    yield from _agent_families(figures)


def _task_families(figures: ClusterFigures) -> Iterator[GaugeMetricFamily]:
    success = GaugeMetricFamily(
        "hydra_task_last_success_timestamp_seconds", "When each task's latest successful "
        "run finished (Unix time); absent for a task that never succeeded.", labels=["task"],
    )  # fmt: skip
    failure = GaugeMetricFamily(
        "hydra_task_last_failure_timestamp_seconds", "When each task's latest failed run "
        "finished (Unix time); absent for a task that never failed.", labels=["task"],
    )  # fmt: skip
    for task in figures.tasks:
        if task.last_success is not None:
            success.add_metric([task.task], task.last_success.timestamp())
        if task.last_failure is not None:
            failure.add_metric([task.task], task.last_failure.timestamp())
    yield from (success, failure)


def _agent_families(figures: ClusterFigures) -> Iterator[GaugeMetricFamily]:
    agents = GaugeMetricFamily(
        "hydra_cluster_agents", "Agents connected to the cluster, by state (connected, draining).",
        labels=["state"],
    )  # fmt: skip
    slots = GaugeMetricFamily(
        "hydra_cluster_agent_slots", "Slots of connected agents, by state (used: leased or "
        "running; free: of agents taking work).", labels=["state"],
    )  # fmt: skip
    by_state = {each.state: each for each in figures.agents}
    for state in ("connected", "draining"):
        agents.add_metric([state], by_state[state].agents if state in by_state else 0)
    used = sum(each.used for each in figures.agents)
    connected = by_state.get("connected")
    free = max(connected.capacity - connected.used, 0) if connected else 0
    slots.add_metric(["used"], used)
    slots.add_metric(["free"], free)
    yield from (agents, slots)


class ScrapeAuthorizer:
    """Checks a scrape's `Authorization: Bearer` with the coordinator's credential
    lookup: any live credential may read metrics."""

    def __init__(self, identities: Identities, loop: asyncio.AbstractEventLoop) -> None:
        self._identities = identities
        self._loop = loop

    def __call__(self, authorization: str) -> tuple[int, str] | None:
        """None to serve the scrape; else (401, why), (403, why) or (503, why)."""
        scheme, _, secret = authorization.partition(" ")
        if not authorization or scheme.lower() != "bearer" or not secret.strip():
            return 401, "send `Authorization: Bearer <credential>`"
        try:
            _on_loop(self._loop, self._identities.authenticate(secret.strip()))
        except CredentialNotLive as error:
            return 403, error.message
        except Unauthenticated as error:
            return 401, error.message
        except Exception as error:  # Unavailable, a timeout, a stopping loop
            return 503, f"cannot check the credential now: {error or type(error).__name__}"
        return None
