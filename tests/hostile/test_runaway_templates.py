"""A runaway template fails its own attempts; the coordinator keeps serving.

Issue 11, fault 1: a template like a nested loop over ``range(100000)`` passed
apply and then rendered on the coordinator's event loop forever (health timed
out, SIGTERM was ignored, and the next coordinator leased the same run and hung
too); ``'x' * 200000000`` rendered 200 MB and ``lipsum(n=100000)`` ran for
seconds. Now rendering is bounded (operators, range, lipsum, output size) and
what is not trivially bounded renders in a worker process under a time limit.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest

from harness.hydra import LeaseTiming, coordinator_argv, start_agent, wait_agents, wait_serving
from harness.net import free_port
from harness.processes import children_of, is_alive, wait_gone
from harness.wait import wait_for
from hydra.client import Client, InvalidArgument, Retry, Task

from support.cluster import Database, cluster
from support.processes import processes_in

#: The param decides the size, so apply cannot see it: each passes apply.
NESTED_LOOPS = (
    "{% for i in range(100000) %}{% for j in range(params.n|int) %}{% endfor %}{% endfor %}"
)
RUNAWAY = {
    # task: (template, the run's param n, what the attempt's message must say)
    "runaway-loops": (NESTED_LOOPS, "100000", "rendering exceeded its time limit of 1s"),
    "runaway-string": (
        "{{ 'x' * (params.n|int) }}",
        "200000000",
        "'*' would make a string of 200,000,000 characters; a rendered field is at most 256 KiB",
    ),
    "runaway-lipsum": (
        "{{ lipsum(n=params.n|int) }}",
        "100000",
        "lipsum: n=100,000 is over the limit of 100 paragraphs",
    ),
}
ATTEMPTS = 2
#: "Well under a second" for a list of tasks while a template runs away.
SERVING_LATENCY_S = 0.5


def _render_workers(parent: int) -> list[int]:
    """Live render worker processes started by `parent`."""
    return [pid for pid in children_of(parent) if b"render_worker" in _cmdline(pid)]


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _trigger(address: str, task: str, n: str) -> str:
    with Client(address) as client:
        run, _ = client.trigger(task, params={"n": n})
        return run.id


def test_runaway_templates_fail_their_attempts_while_the_cluster_keeps_serving(
    db_conninfo: str, tmp_path: Path
) -> None:
    db = Database(db_conninfo)
    with cluster(db_conninfo, tmp_path) as (coordinators, _):
        address = coordinators[0].address
        client = Client(address)
        retry = Retry(max_attempts=ATTEMPTS, backoff=timedelta(milliseconds=100))
        for name, (template, _, _) in RUNAWAY.items():
            task = Task(name=name, command=["echo", template], params={"n": "1"}, retry=retry)
            client.apply(task)
        client.apply(Task(name="healthy", command=["sh", "-c", "echo healthy-{{ ds }}"]))
        # Not trivially bounded (a filter): it renders in a worker, beside the runaway ones.
        client.apply(Task(name="healthy-filter", command=["echo", "{{ ds|replace('-', '') }}"]))
        workers = _render_workers(os.getpid())
        assert len(workers) >= 1, "the coordinator started no render worker"

        with ThreadPoolExecutor(len(RUNAWAY)) as pool:
            triggered = {
                name: pool.submit(_trigger, address, name, n) for name, (_, n, _) in RUNAWAY.items()
            }
            # Meanwhile the coordinator answers at once and healthy runs succeed.
            healthy = [client.trigger(name)[0].id for name in ("healthy", "healthy-filter")]
            latencies = []
            loops_run = None
            while loops_run is None or db.runs("runaway-loops")[0]["state"] != "FAILED":
                started = time.monotonic()
                client.list_tasks()
                latencies.append(time.monotonic() - started)
                if loops_run is None and triggered["runaway-loops"].done():
                    loops_run = triggered["runaway-loops"].result()
                assert len(latencies) < 2000, "the nested loops never failed"
            runs = {name: future.result(timeout=30) for name, future in triggered.items()}

        assert max(latencies) < SERVING_LATENCY_S, f"tasks list took {max(latencies):.2f}s"
        assert len(latencies) >= 5, "the coordinator was not asked while the loops rendered"
        for run_id in healthy:
            assert db.wait_run_state(run_id, {"SUCCEEDED", "FAILED"})["state"] == "SUCCEEDED"
            assert [a["state"] for a in db.attempts(run_id)] == ["SUCCEEDED"]
        for name, run_id in runs.items():
            reason = RUNAWAY[name][2]
            assert db.wait_run_state(run_id, {"FAILED", "SUCCEEDED"})["state"] == "FAILED"
            attempts = db.attempts(run_id)
            assert [a["state"] for a in attempts] == ["FAILED"] * ATTEMPTS, name
            for attempt in attempts:
                assert reason in attempt["message"], attempt["message"]
                assert attempt["message"].startswith("cannot render the command: command[1]: ")
        # The run is not re-leased: it stays FAILED.
        assert all(db.runs(name)[0]["state"] == "FAILED" for name in RUNAWAY)
        assert client.get_task("healthy").task.name == "healthy"
    # The coordinator stopped: none of its render workers is left, replaced ones included.
    assert _render_workers(os.getpid()) == []
    assert not [pid for pid in workers if is_alive(pid)]


@pytest.mark.parametrize(
    ("template", "message"),
    [
        (
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
            "nested loops would run 10,000,000,000 iterations, over the limit of 1,000,000",
        ),
        ("{{ range(10**10)|length }}", "range() of 10,000,000,000 items is over the limit of"),
        ("{{ 'x' * 200000000 }}", "'*' would make a string of 200,000,000 characters"),
        ("{{ lipsum(n=100000) }}", "lipsum: n=100,000 is over the limit of 100 paragraphs"),
    ],
)
def test_literal_runaway_templates_are_refused_at_apply_naming_the_field(
    db_conninfo: str, tmp_path: Path, template: str, message: str
) -> None:
    db = Database(db_conninfo)
    with cluster(db_conninfo, tmp_path, agents=0) as (coordinators, _):
        client = Client(coordinators[0].address)
        before = db.counts()
        started = time.monotonic()
        with pytest.raises(InvalidArgument) as refused:
            client.apply(Task(name="literal", command=["echo", template]))
        assert time.monotonic() - started < SERVING_LATENCY_S * 4
        assert f"spec.command[1]: {message}" in str(refused.value)
        assert db.counts() == before
        client.apply(Task(name="fine", command=["echo", "{{ ds }}"]))  # still serving


def test_a_coordinator_stopped_while_a_template_runs_away_exits_and_leaves_no_worker(
    db_conninfo: str, tmp_path: Path
) -> None:
    """SIGTERM is not held up by a render (it was ignored), the render does not use up
    the run's attempt, and the coordinator's render workers go with it."""
    db = Database(db_conninfo)
    # A render limit far above how long the stop may take (the environment variable).
    timing = LeaseTiming(ttl="60s", heartbeat="2s", kill_grace="1s")
    with processes_in(tmp_path) as processes:
        address = f"127.0.0.1:{free_port()}"
        argv = coordinator_argv(db_conninfo, address, timing=timing, log_level="debug")
        coordinator = processes.start("coordinator", argv, env={"HYDRA_RENDER_TIMEOUT": "30s"})
        wait_serving(coordinator, address)
        agent = start_agent(processes, [address], "agent-0", capacity=2)
        wait_agents(db_conninfo, ["agent-0"], watched=[agent], timeout=20)
        with Client(address) as client:
            client.apply(Task(name="loops", command=["echo", NESTED_LOOPS], params={"n": "1"}))
        workers = _render_workers(coordinator.pid)
        assert workers, "the coordinator started no render worker"
        idle = {pid: _cpu_ticks(pid) for pid in workers}
        trigger = threading.Thread(target=_trigger_quietly, args=(address,), daemon=True)
        trigger.start()
        wait_for(lambda: [r for r in db.runs("loops") if r["state"] == "LEASED"], timeout=10)
        wait_for(lambda: _busy(idle), timeout=10, message="a render worker to be busy")

        started = time.monotonic()
        os.kill(coordinator.pid, signal.SIGTERM)
        assert wait_gone(coordinator.pid, timeout=15), "the coordinator ignored SIGTERM"
        assert time.monotonic() - started < 15
        assert not [pid for pid in workers if wait_gone(pid, timeout=5) is False]
        [run] = db.runs("loops")
        assert db.attempts(run["id"]) == [], "stopping used up the run's attempt"


def _trigger_quietly(address: str) -> None:
    # The Trigger RPC waits for the offer's render; the coordinator stops meanwhile.
    try:
        _trigger(address, "loops", "100000")
    except Exception:
        return


def _busy(idle: dict[int, int]) -> bool:
    """Whether a worker used 0.1 s of CPU more than when idle (it is rendering)."""
    return any(_cpu_ticks(pid) > ticks + 10 for pid, ticks in idle.items())


def _cpu_ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])  # utime + stime
