"""The foundation's "done when", as a new user does it: a coordinator, one agent,
and nothing but `hydractl` and YAML files."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from harness.hydra import Coordinator, Hydractl
from harness.processes import is_alive
from harness.wait import wait_for

from support.processes import Cluster

TICK_YAML = """\
name: tick
triggers:
  - cron: "*/2 * * * * *"
command: ["sh", "-c", "echo tick-{{ ts }}"]
"""
AGENT = "agent-1"
RUN_HEADERS = ("ID", "TASK", "STATE", "OCCURRENCE", "ATTEMPTS", "CAUSE", "DURATION")
TASK_HEADERS = ("NAME", "VERSION", "PAUSED", "TRIGGERS", "NEXT", "FIRE")
AGENT_HEADERS = ("ID", "HOSTNAME", "STATE", "RUNS", "LABELS", "LAST", "SEEN")
ATTEMPT_HEADERS = (
    "#", "STATE", "AGENT", "EXIT", "STARTED", "FINISHED", "DURATION", "ARGV", "MESSAGE",
)  # fmt: skip


@pytest.fixture
def coordinator(cluster: Cluster) -> Coordinator:
    """A coordinator with one connected agent."""
    cluster.agent(AGENT)
    return cluster.coordinator


def apply(hydractl: Hydractl, tmp_path: Path, name: str, yaml_text: str) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml_text)
    return hydractl.ok("apply", "-f", str(path))


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text)


def succeeded(hydractl: Hydractl, task: str, at_least: int) -> list[dict[str, Any]] | None:
    runs = hydractl.json("runs", "list", "--task", task)
    return runs if sum(r["state"] == "SUCCEEDED" for r in runs) >= at_least else None


def read_pid(path: Path) -> int:
    text = wait_for(
        lambda: path.exists() and path.read_text().strip(), timeout=20, message=f"{path}"
    )
    return int(str(text))


def assert_table(text: str, *headers: str) -> None:
    lines = text.splitlines()
    assert lines, "empty table"
    assert lines[0].split() == list(headers), lines[0]
    assert "Traceback" not in text


def test_two_second_cron_runs_each_occurrence_once_with_logs_and_attempts(
    coordinator: Coordinator, tmp_path: Path
) -> None:
    hydractl = coordinator.hydractl
    assert apply(hydractl, tmp_path, "tick", TICK_YAML).strip() == "created tick v1"

    runs = wait_for(
        lambda: succeeded(hydractl, "tick", 3),
        timeout=15,
        interval=0.5,
        message="3 SUCCEEDED runs of tick",
    )
    hydractl.ok("tasks", "pause", "tick")  # no more runs while we look

    occurrences = sorted(instant(r["occurrence"]) for r in runs)
    assert len(set(occurrences)) == len(occurrences), "two runs for one occurrence"
    assert {b - a for a, b in itertools.pairwise(occurrences)} == {timedelta(seconds=2)}
    assert all(o.second % 2 == 0 and o.microsecond == 0 for o in occurrences)
    assert {r["cause"] for r in runs} == {"cron"}

    run = next(r for r in runs if r["state"] == "SUCCEEDED")
    line = hydractl.ok("logs", run["id"])
    assert line.startswith("tick-") and line.endswith("\n") and line.count("\n") == 1, line
    assert instant(line.strip().removeprefix("tick-")) == instant(run["occurrence"])

    detail = hydractl.json("runs", "get", run["id"])
    [attempt] = detail["attempts"]
    assert attempt["number"] == 1
    assert attempt["state"] == "SUCCEEDED"
    assert attempt["agent"] == AGENT
    assert attempt["argv"] == ["sh", "-c", f"echo {line.strip()}"]
    assert attempt["exit_code"] == 0
    assert instant(attempt["started_at"]) <= instant(attempt["finished_at"])

    runs_table = hydractl.ok("runs", "list", "--task", "tick")
    assert_table(runs_table, *RUN_HEADERS)
    assert run["id"] in runs_table
    tasks_table = hydractl.ok("tasks", "list")
    assert_table(tasks_table, *TASK_HEADERS)
    assert "tick" in tasks_table and "cron(*/2 * * * * * UTC)" in tasks_table
    agents_table = hydractl.ok("agents", "list")
    assert_table(agents_table, *AGENT_HEADERS)
    assert AGENT in agents_table and "connected" in agents_table
    assert_table(hydractl.ok("runs", "get", run["id"]).split("\n\n")[1], *ATTEMPT_HEADERS)


def test_run_wait_exit_codes_and_retry_of_a_failed_run(
    coordinator: Coordinator, tmp_path: Path
) -> None:
    hydractl = coordinator.hydractl
    flag = tmp_path / "fixed"
    apply(hydractl, tmp_path, "hello", 'name: hello\ncommand: ["echo", "hello"]\n')
    apply(hydractl, tmp_path, "fixable", f'name: fixable\ncommand: ["test", "-e", "{flag}"]\n')

    ok = hydractl.run("run", "hello", "--wait")
    assert ok.returncode == 0, ok.stderr
    assert hydractl.json("runs", "get", ok.stdout.strip())["state"] == "SUCCEEDED"
    assert "SUCCEEDED" in ok.stderr

    failed = hydractl.run("run", "fixable", "--wait")
    assert failed.returncode == 1, failed.stderr
    run_id = failed.stdout.strip()
    assert "FAILED" in failed.stderr and "exit 1" in failed.stderr
    assert hydractl.json("runs", "get", run_id)["attempts"][0]["exit_code"] == 1

    flag.touch()
    retried = hydractl.json("retry", run_id)
    # Queued again; an agent may have leased it before the answer was read back.
    assert retried["state"] in ("QUEUED", "LEASED", "RUNNING", "SUCCEEDED"), retried
    final = hydractl.wait_run(run_id, "SUCCEEDED", "FAILED")
    assert [a["state"] for a in final["attempts"]] == ["FAILED", "SUCCEEDED"]


def test_cancel_ends_the_run_and_kills_its_process(
    coordinator: Coordinator, tmp_path: Path
) -> None:
    hydractl = coordinator.hydractl
    pidfile = tmp_path / "sleep.pid"
    command = f'["sh", "-c", "echo $$ > {pidfile}; exec sleep 300"]'
    apply(hydractl, tmp_path, "long", f"name: long\ncommand: {command}\n")

    run_id = hydractl.ok("run", "long").strip()
    pid = read_pid(pidfile)
    assert hydractl.ok("cancel", run_id).strip() == f"run {run_id} CANCELLED"
    wait_for(lambda: not is_alive(pid), timeout=10, message="the cancelled sleep to die")
    run = hydractl.json("runs", "get", run_id)
    assert run["state"] == "CANCELLED"
    assert [a["state"] for a in run["attempts"]] == ["CANCELLED"]


def test_pause_resume_and_delete_a_task(coordinator: Coordinator, tmp_path: Path) -> None:
    hydractl = coordinator.hydractl
    apply(hydractl, tmp_path, "tick", TICK_YAML)
    runs = wait_for(
        lambda: succeeded(hydractl, "tick", 1), timeout=15, interval=0.3, message="a first run"
    )
    first = next(r for r in runs if r["state"] == "SUCCEEDED")

    assert hydractl.ok("tasks", "pause", "tick").strip() == "paused tick"
    assert hydractl.json("tasks", "get", "tick")["task"]["paused"] is True
    assert "yes" in hydractl.ok("tasks", "list").splitlines()[1].split()

    assert hydractl.ok("tasks", "resume", "tick").strip() == "resumed tick"
    assert hydractl.json("tasks", "get", "tick")["task"]["paused"] is False
    resumed = hydractl.json("tasks", "get", "tick")["task"]["next_fire_at"]
    wait_for(
        lambda: any(
            instant(r["occurrence"]) >= instant(resumed)
            for r in hydractl.json("runs", "list", "--task", "tick")
        ),
        timeout=15,
        interval=0.3,
        message="a run after resume",
    )

    assert hydractl.ok("tasks", "delete", "tick").startswith("deleted tick")
    gone = hydractl.run("tasks", "get", "tick")
    assert gone.returncode == 3 and "tick" in gone.stderr
    assert [t["name"] for t in hydractl.json("tasks", "list")] == []
    assert hydractl.json("runs", "get", first["id"])["state"] == "SUCCEEDED"  # runs stay
