"""scale: does the coordinator's cost follow the work due, not the size of the world?

* For 1,000 / 10,000 / 100,000 registered cron tasks, 50 of them due every
  second and the rest far in the future (:mod:`bench.scale_tasks`): the
  trigger loop's time per tick (the sizes take turns, tick by tick), then the
  RSS and CPU of a coordinator serving each database for a while (its trigger
  loop firing the 50 every second).
* 500 agent streams from one simulator process (:mod:`bench.scale_streams`):
  coordinator CPU and RSS per stream; RSS of one idle real ``hydra agent``.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import asdict, dataclass, field
from typing import Any

from bench import scale_streams, scale_tasks
from bench.procfs import rss_kib
from bench.results import Metric, Result, Target, distribution, ratio
from bench.stack import Context, cpu_percent, start_coordinator

NAME = "scale"


@dataclass(frozen=True, kw_only=True, slots=True)
class Params:
    """Sizes, and how long to look at each."""

    task_counts: tuple[int, ...] = (1_000, 10_000, 100_000)
    due_per_second: int = 50
    ticks: int = 15
    coordinator_window_s: float = 8.0
    streams: scale_streams.StreamParams = field(default_factory=scale_streams.StreamParams)


SMOKE = Params(
    task_counts=(100,),
    due_per_second=10,
    ticks=1,
    coordinator_window_s=0.5,
    streams=scale_streams.SMOKE_STREAMS,
)


def run(ctx: Context) -> Result:
    """Every task count (ticks interleaved), then the streams."""
    params = SMOKE if ctx.smoke else Params()
    sizes: dict[int, dict[str, Any]] = {}
    with contextlib.ExitStack() as stack:
        databases = {
            total: stack.enter_context(ctx.database(f"scale_{total}"))
            for total in params.task_counts
        }
        for total, conninfo in databases.items():
            seconds = asyncio.run(scale_tasks.populate(conninfo, total, params.due_per_second))
            print(f"scale: {total:,} tasks registered in {seconds:.1f}s", flush=True)
            sizes[total] = {"populate_s": seconds}
        ticks = asyncio.run(scale_tasks.interleaved_ticks(databases, params.ticks))
        for total, conninfo in databases.items():
            sizes[total].update(_ticks(ticks[total]))
            sizes[total].update(_coordinator_cost(ctx, params, total, conninfo))
    with ctx.database("streams") as conninfo, ctx.processes(f"{NAME}-streams") as procs:
        streams = scale_streams.measure(procs, conninfo, params.streams)
    return _result(params, sizes, streams)


def _ticks(ticks: list[tuple[float, int]]) -> dict[str, Any]:
    return {
        "tick_ms": distribution([ms for ms, _ in ticks]),
        "fired_per_tick": sorted({fired for _, fired in ticks}),
    }


def _coordinator_cost(ctx: Context, params: Params, total: int, conninfo: str) -> dict[str, float]:
    """RSS and CPU of a coordinator serving the database (firing the due triggers)."""
    with ctx.processes(f"{NAME}-{total}") as procs:
        coordinator = start_coordinator(procs, conninfo, name=f"coordinator-{total}")
        cpu = cpu_percent(
            coordinator.process.pid, params.coordinator_window_s, [coordinator.process]
        )
        rss = rss_kib(coordinator.process.pid)
    return {"coordinator_rss_kib": rss, "coordinator_cpu_pct": cpu}


def _result(params: Params, sizes: dict[int, dict[str, Any]], streams: dict[str, Any]) -> Result:
    metrics = []
    for total, size in sizes.items():
        metrics += [
            Metric(
                name=f"tick time p50 @ {total:,} tasks",
                value=size["tick_ms"]["p50"],
                unit="ms",
                note=f"{params.due_per_second} due/s",
            ),
            Metric(
                name=f"coordinator RSS @ {total:,} tasks",
                value=size["coordinator_rss_kib"] / 1024,
                unit="MiB",
                note=f"CPU {size['coordinator_cpu_pct']:.0f}%",
            ),
        ]
    smallest, largest = min(sizes), max(sizes)
    metrics.append(
        Metric(
            name=f"tick p50 @ {largest:,} / @ {smallest:,}",
            value=ratio(sizes[largest]["tick_ms"]["p50"], sizes[smallest]["tick_ms"]["p50"]),
            unit="x",
            target=Target(op="<=", bound=1.5, text="<= 1.5x"),
        )
    )
    count = streams["streams"]
    metrics += [
        Metric(
            name=f"coordinator RSS per stream ({count} streams)",
            value=streams["rss_per_stream_kib"],
            unit="KiB",
            target=Target(op="<=", bound=50),
        ),
        Metric(
            name=f"coordinator CPU with {count} streams",
            value=streams["loaded"]["cpu_pct"],
            unit="%",
            note=f"idle: {streams['baseline']['cpu_pct']:.1f}%, heartbeats every 2 s",
        ),
        Metric(
            name=f"database commits/s with {count} streams",
            value=streams["loaded"]["commits_per_s"],
            unit="/s",
            note=f"{count / 2:.0f} heartbeats/s, recorded together",
        ),
        Metric(
            name="idle hydra agent RSS",
            value=streams["idle_agent_rss_kib"] / 1024,
            unit="MiB",
            target=Target(op="<=", bound=60),
        ),
    ]
    details = {
        "params": asdict(params),
        "sizes": {str(total): size for total, size in sizes.items()},
        "streams": streams,
    }
    return Result(name=NAME, metrics=metrics, details=details)
