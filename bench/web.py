"""web: do the web UI's heaviest pages render fast over a big cluster?

10,000 registered tasks (bulk SQL, as the scale benchmark registers them) and
1,000,000 finished runs spread over them (bulk SQL, as the history benchmark
loads them, with an attempt and a chunk of output each), one coordinator and
one `hydra web`. A signed-in session (the coordinator runs without
authentication here; sign-in is the same form) then fetches, one at a time:

- ``/tasks``: the first page of the tasks list, each task with its last 20 runs
  as the grid's cells;
- ``/tasks?prefix=…``: the same list filtered by a name prefix;
- ``/tasks/NAME``: one task's page (spec, settings and its first page of runs);
- ``/tasks/NAME/runs?state=FAILED``: its runs filtered by state.

Each figure is the median (and p95) of the round trip of the whole page, as a
browser waits for it (target: under 300 ms). ``HYDRA_BENCH_WEB_RUNS`` and
``HYDRA_BENCH_WEB_TASKS`` set other sizes.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

import httpx

from bench import scale_tasks
from bench.history_load import load_history
from bench.results import Metric, Result, Target, distribution
from bench.stack import Context, Sql, start_coordinator
from harness.web import start_web

NAME = "web"
RUNS_ENV = "HYDRA_BENCH_WEB_RUNS"
TASKS_ENV = "HYDRA_BENCH_WEB_TASKS"
UNDER = Target(op="<", bound=300.0, text="< 300 ms")
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass(frozen=True, kw_only=True, slots=True)
class Params:
    """Sizes of the cluster and of the sample."""

    tasks: int = 10_000
    runs: int = 1_000_000
    load_chunk: int = 250_000
    samples: int = 30


SMOKE = Params(tasks=20, runs=400, load_chunk=200, samples=3)


def run(ctx: Context) -> Result:
    """Populate, start a coordinator and `hydra web`, time the pages."""
    params = SMOKE if ctx.smoke else Params()
    params = replace(
        params,
        tasks=int(os.environ.get(TASKS_ENV, params.tasks)),
        runs=int(os.environ.get(RUNS_ENV, params.runs)),
    )
    with ctx.database(NAME) as conninfo, Sql(conninfo) as db:
        populate_s = asyncio.run(scale_tasks.populate(conninfo, params.tasks, 1))
        # The one task due every second that populate registers would pile up runs.
        db.execute("UPDATE hydra_triggers SET active = false")
        load_s = load_history(db, params.runs, params.load_chunk, NAME)
        task = str(db.value("SELECT name FROM hydra_tasks ORDER BY id DESC LIMIT 1"))
        with ctx.processes(f"{NAME}-measure") as procs:
            coordinator = start_coordinator(procs, conninfo)
            _, url = start_web(procs, coordinator.address)
            pages = _time_pages(url, task, params.samples)
    details = {"params": asdict(params), "populate_s": populate_s, "load_s": load_s, **pages}
    return Result(name=NAME, metrics=_metrics(params, pages), details=details)


def _time_pages(url: str, task: str, samples: int) -> dict[str, Any]:
    prefix = task[: len(task) - 2]  # about a hundred tasks share it
    paths = {
        "tasks": "/tasks",
        "tasks_prefix": f"/tasks?prefix={prefix}",
        "task": f"/tasks/{task}",
        "task_failed_runs": f"/tasks/{task}/runs?state=FAILED",
    }
    with httpx.Client(base_url=url, timeout=60, follow_redirects=False) as client:
        _sign_in(client)
        return {name: _timed(client, path, samples) for name, path in paths.items()}


def _sign_in(client: httpx.Client) -> None:
    """The sign-in form, with an empty credential (the coordinator is open)."""
    form = client.get("/login")
    form.raise_for_status()
    found = _CSRF.search(form.text)
    assert found is not None, "no CSRF token on the sign-in form"
    signed = client.post(
        "/login", data={"csrf": found.group(1), "next": "/tasks", "credential": ""}
    )
    if signed.status_code != 303:
        raise RuntimeError(f"sign-in answered {signed.status_code}: {signed.text[:300]}")


def _timed(client: httpx.Client, path: str, samples: int) -> dict[str, float]:
    _get(client, path)  # warm
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        _get(client, path)
        times.append((time.perf_counter() - started) * 1000)
    return distribution(times)


def _get(client: httpx.Client, path: str) -> None:
    response = client.get(path)
    if response.status_code != 200:
        raise RuntimeError(f"GET {path} answered {response.status_code}: {response.text[:300]}")


_LABELS = {
    "tasks": "tasks page (first page, last 20 runs each)",
    "tasks_prefix": "tasks page filtered by prefix",
    "task": "task page (spec and first page of runs)",
    "task_failed_runs": "task runs filtered by state FAILED",
}


def _metrics(params: Params, pages: dict[str, Any]) -> list[Metric]:
    size = f"{params.tasks:,} tasks, {params.runs:,} runs"
    metrics = []
    for key, label in _LABELS.items():
        figures = pages[key]
        metrics.append(
            Metric(
                name=f"{label} p50",
                value=figures["p50"],
                unit="ms",
                target=UNDER,
                note=f"{size}; p95 {figures['p95']:.0f} ms",
            )
        )
    return metrics
