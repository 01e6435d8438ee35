"""A real coordinator (in-process gRPC server on 127.0.0.1), real `hydra agent`
processes running real commands, real PostgreSQL: the run lifecycle."""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import time
from datetime import timedelta
from pathlib import Path

import pytest

from harness.processes import is_alive
from harness.wait import wait_for
from hydra.client import (
    AttemptState,
    Client,
    Concurrency,
    Cron,
    FailedPrecondition,
    Retry,
    RunState,
    Task,
)

from support.cluster import Database, cluster


def _read_pid(path: Path) -> int:
    return int(
        wait_for(
            lambda: path.exists() and path.read_text().strip(), message=f"{path} to be written"
        )
    )


def test_one_second_cron_gives_exactly_one_run_per_occurrence_across_two_coordinators(
    db_conninfo: str, tmp_path: Path
) -> None:
    db = Database(db_conninfo)
    with cluster(db_conninfo, tmp_path, coordinators=2, agents=1) as (coordinators, _):
        client = Client([c.address for c in coordinators])
        client.apply(
            Task(
                name="tick",
                command=["true"],
                triggers=[Cron(expression="* * * * * *")],
                concurrency=Concurrency(max_active_runs=5),
            )
        )
        wait_for(
            lambda: sum(r["state"] == "SUCCEEDED" for r in db.runs("tick")) >= 5,
            timeout=30,
            message="five successful runs",
        )
        client.pause("tick")
    runs = db.runs("tick")
    occurrences = [r["occurrence"] for r in runs]
    assert all(o.microsecond == 0 for o in occurrences)
    # Consecutive seconds: no occurrence lost, none doubled, though two coordinators fired.
    assert {b - a for a, b in itertools.pairwise(occurrences)} == {timedelta(seconds=1)}
    for run in runs:
        if run["state"] == "SUCCEEDED":
            assert [a["state"] for a in db.attempts(run["id"])] == ["SUCCEEDED"]


def test_failing_command_is_retried_with_backoff_then_fails(
    db_conninfo: str, tmp_path: Path
) -> None:
    with cluster(db_conninfo, tmp_path) as (coordinators, _):
        client = Client(coordinators[0].address)
        client.apply(
            Task(
                name="flaky",
                command=["sh", "-c", "echo nope >&2; exit 1"],
                retry=Retry(max_attempts=3, backoff=timedelta(seconds=1), multiplier=2),
            )
        )
        run, created = client.trigger("flaky")
        assert created
        final = client.wait(run.id, timeout=30)
    assert final.state is RunState.FAILED
    assert [a.state for a in final.attempts] == [AttemptState.FAILED] * 3
    assert {a.exit_code for a in final.attempts} == {1}
    assert "exit code 1" in final.reason
    first, second, third = final.attempts
    assert first.finished_at and second.finished_at
    assert second.started_at - first.finished_at >= timedelta(seconds=0.95)
    assert third.started_at - second.finished_at >= timedelta(seconds=1.95)


def test_timeout_kills_the_whole_process_group(db_conninfo: str, tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    # The child ignores SIGTERM; only SIGKILL to the group after the grace ends it.
    script = f"(trap '' TERM; exec sleep 300) & echo $! > {pidfile}; wait"
    with cluster(db_conninfo, tmp_path) as (coordinators, _):
        client = Client(coordinators[0].address)
        client.apply(Task(name="slow", command=["sh", "-c", script], timeout=timedelta(seconds=1)))
        run, _ = client.trigger("slow")
        child = _read_pid(pidfile)
        final = client.wait(run.id, timeout=30)
        assert final.state is RunState.FAILED
        assert final.attempts[0].state is AttemptState.TIMED_OUT
        wait_for(lambda: not is_alive(child), timeout=10, message="the SIGTERM-proof child to die")


def test_cancel_kills_a_running_attempt(db_conninfo: str, tmp_path: Path) -> None:
    pidfile = tmp_path / "run.pid"
    with cluster(db_conninfo, tmp_path) as (coordinators, _):
        client = Client(coordinators[0].address)
        client.apply(
            Task(name="long", command=["sh", "-c", f"echo $$ > {pidfile}; exec sleep 300"])
        )
        run, _ = client.trigger("long")
        pid = _read_pid(pidfile)
        # Running as the coordinator records it (the pid file can come before the start report).
        wait_for(
            lambda: client.get_run(run.id).state is RunState.RUNNING,
            timeout=10,
            message="the attempt's start to be recorded",
        )
        cancelled = client.cancel(run.id)
        assert cancelled.state is RunState.CANCELLED
        wait_for(lambda: not is_alive(pid), timeout=10, message="the cancelled process to die")
        assert client.get_run(run.id).attempts[0].state is AttemptState.CANCELLED
        with pytest.raises(FailedPrecondition):
            client.cancel(run.id)


def test_agent_killed_mid_run_loses_the_attempt_and_the_run_succeeds_on_another(
    db_conninfo: str, tmp_path: Path
) -> None:
    marker, pidfile = tmp_path / "first-attempt-ran", tmp_path / "first.pid"
    # exec: the pid written is the sleep's, so the test can kill what the dead agent left.
    script = (
        f"if [ -e {marker} ]; then exit 0; fi; touch {marker}; echo $$ > {pidfile}; exec sleep 300"
    )
    db = Database(db_conninfo)
    with cluster(db_conninfo, tmp_path, agents=2, capacity=1) as (coordinators, agents):
        client = Client(coordinators[0].address)
        client.apply(
            Task(
                name="survivor",
                command=["sh", "-c", script],
                retry=Retry(max_attempts=2, backoff=timedelta(0)),
            )
        )
        run, _ = client.trigger("survivor")
        orphan = _read_pid(pidfile)
        try:
            holder = db.wait_run_state(run.id, {"RUNNING"})["lease_owner"]
            victim = next(a for a in agents if a.agent_id == holder)
            victim.kill()
            killed_at = time.monotonic()
            final = client.wait(run.id, timeout=30)
            noticed = time.monotonic() - killed_at
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(orphan, signal.SIGKILL)
    assert final.state is RunState.SUCCEEDED
    lost, succeeded = final.attempts
    assert (lost.state, lost.agent) == (AttemptState.LOST, holder)
    assert succeeded.state is AttemptState.SUCCEEDED and succeeded.agent != holder
    assert noticed < 2 + 3  # lease TTL (2 s in tests) plus slack, not minutes


def test_retry_requeues_a_failed_run_but_never_a_succeeded_one(
    db_conninfo: str, tmp_path: Path
) -> None:
    flag = tmp_path / "ok"
    with cluster(db_conninfo, tmp_path) as (coordinators, _):
        client = Client(coordinators[0].address)
        client.apply(Task(name="fixable", command=["test", "-e", str(flag)]))
        run, _ = client.trigger("fixable")
        assert client.wait(run.id, timeout=20).state is RunState.FAILED
        flag.touch()
        client.retry(run.id)
        final = client.wait(run.id, timeout=20)
        assert final.state is RunState.SUCCEEDED
        assert [a.state for a in final.attempts] == [AttemptState.FAILED, AttemptState.SUCCEEDED]
        with pytest.raises(FailedPrecondition, match="succeeds at most once"):
            client.retry(run.id)


def test_manual_trigger_with_params_and_idempotency_key(db_conninfo: str, tmp_path: Path) -> None:
    db = Database(db_conninfo)
    with cluster(db_conninfo, tmp_path) as (coordinators, _):
        client = Client(coordinators[0].address)
        client.apply(
            Task(name="greet", command=["echo", "hello {{ params.who }}"], params={"who": "world"})
        )
        first, created = client.trigger("greet", params={"who": "hydra"}, idempotency_key="k1")
        again, created_again = client.trigger(
            "greet", params={"who": "other"}, idempotency_key="k1"
        )
        assert created and not created_again and again.id == first.id
        final = client.wait(first.id, timeout=20)
        assert final.attempts[0].argv == ("echo", "hello hydra")
        logs = b"".join(chunk.data for chunk in client.tail_logs(first.id))
        assert logs == b"hello hydra\n"
    assert len(db.runs("greet")) == 1
