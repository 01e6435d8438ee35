"""Scheduling semantics on a real coordinator with real agent processes:
catch-up after a pause, backfill, templates and outputs along a pipeline."""

from __future__ import annotations

import itertools
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from harness.wait import wait_for
from hydra.client import (
    After,
    AttemptState,
    Catchup,
    Client,
    CommandCheck,
    Concurrency,
    Cron,
    FileCheck,
    InvalidArgument,
    RunState,
    Task,
)
from hydra.client import OnTimeout as OnTimeoutPolicy
from hydra.coordinator.store.records import LEASE_AHEAD

from support.cluster import Database, cluster

PAUSE_SECONDS = 4


def _succeeded(db: Database, task: str) -> int:
    return sum(r["state"] == "SUCCEEDED" for r in db.runs(task))


@pytest.mark.parametrize("catchup", [Catchup.ALL, Catchup.LATEST, Catchup.NONE])
def test_catchup_after_a_paused_stretch(db_conninfo: str, tmp_path: Path, catchup: Catchup) -> None:
    db = Database(db_conninfo)
    with cluster(db_conninfo, tmp_path) as (coordinators, _):
        client = Client(coordinators[0].address)
        client.apply(
            Task(
                name="tick",
                command=["true"],
                catchup=catchup,
                triggers=[Cron(expression="* * * * * *")],
                concurrency=Concurrency(max_active_runs=10),
            )
        )
        wait_for(lambda: _succeeded(db, "tick") >= 2, timeout=20, message="two runs")
        client.pause("tick")
        paused_at = datetime.now(UTC)
        time.sleep(PAUSE_SECONDS)  # on purpose: a stretch of missed occurrences
        # Resume mid-second, so that which second is "the newest missed" is not a race
        # between this clock and the trigger loop's.
        time.sleep((0.5 - datetime.now(UTC).microsecond / 1e6) % 1.0)
        resumed_at = datetime.now(UTC)
        client.resume("tick")
        wait_for(
            lambda: any(r["occurrence"] > resumed_at for r in db.runs("tick")),
            timeout=20,
            message="a run after the resume",
        )
        client.pause("tick")
    occurrences = [r["occurrence"] for r in db.runs("tick")]
    assert all(b - a >= timedelta(seconds=1) for a, b in itertools.pairwise(occurrences))
    # A run is created LEASE_AHEAD before its occurrence: those were made before the pause.
    missed = [o for o in occurrences if paused_at + LEASE_AHEAD < o <= resumed_at]
    if catchup is Catchup.ALL:  # every second of the pause got its run
        assert {b - a for a, b in itertools.pairwise(occurrences)} == {timedelta(seconds=1)}
        assert len(missed) >= PAUSE_SECONDS - 1
    elif catchup is Catchup.LATEST:  # only the newest missed second
        assert len(missed) == 1 and missed[0] > resumed_at - timedelta(seconds=1)
    else:
        assert missed == []


def test_backfill_leaves_existing_occurrences_alone(db_conninfo: str, tmp_path: Path) -> None:
    db = Database(db_conninfo)
    day = datetime(2026, 3, 1, tzinfo=UTC)
    with cluster(db_conninfo, tmp_path) as (coordinators, _):
        client = Client(coordinators[0].address)
        client.apply(
            Task(
                name="daily",
                command=["echo", "{{ ds }}"],
                triggers=[Cron(expression="0 6 * * *")],
                concurrency=Concurrency(max_active_runs=2),
            )
        )
        first, _ = client.trigger("daily", occurrence=day + timedelta(days=1, hours=6))
        assert client.wait(first.id, timeout=20).state is RunState.SUCCEEDED
        preview = client.backfill("daily", day, day + timedelta(days=3, hours=23), dry_run=True)
        assert len(preview.occurrences) == 4 and preview.created == []
        result = client.backfill("daily", day, day + timedelta(days=3, hours=23))
        assert (len(result.created), result.existing) == (3, 1)
        for run in result.created:
            final = client.wait(run.id, timeout=20)
            assert final.attempts[0].argv == ("echo", run.occurrence.strftime("%Y-%m-%d"))
    assert len(db.attempts(first.id)) == 1  # the succeeded occurrence was not re-run


def test_template_errors_are_refused_at_apply_and_fail_the_attempt_at_run_time(
    db_conninfo: str, tmp_path: Path
) -> None:
    with cluster(db_conninfo, tmp_path) as (coordinators, _):
        client = Client(coordinators[0].address)
        with pytest.raises(InvalidArgument, match=r"command\[1\].*dss"):
            client.apply(Task(name="typo", command=["echo", "{{ dss }}"]))
        client.apply(Task(name="up", command=["true"]))
        client.apply(
            Task(
                name="down",
                command=["echo", "{{ upstream['up'].outputs.rows }}"],
                triggers=[After(tasks=["up"])],
            )
        )
        up, _ = client.trigger("up")
        assert client.wait(up.id, timeout=20).state is RunState.SUCCEEDED
        down = wait_for(
            lambda: client.list_runs(task="down"), timeout=20, message="the downstream run"
        )[0]
        final = client.wait(down.id, timeout=20)
    assert final.state is RunState.FAILED
    assert final.attempts[0].state is AttemptState.FAILED
    assert "cannot render" in final.attempts[0].message and "rows" in final.attempts[0].message


def test_pipeline_one_run_per_task_per_occurrence_with_outputs_and_a_file_precondition(
    db_conninfo: str, tmp_path: Path
) -> None:
    ready = tmp_path / "ready"
    db = Database(db_conninfo)
    with cluster(db_conninfo, tmp_path, agents=2) as (coordinators, _):
        client = Client(coordinators[0].address)
        client.apply(
            Task(
                name="ingest",
                triggers=[Cron(expression="0 2 * * *", timezone="Australia/Sydney")],
                command=["sh", "-c", 'echo "{\\"rows\\": 42}" > "$HYDRA_OUTPUT"'],
            )
        )
        client.apply(
            Task(
                name="transform",
                triggers=[After(tasks=["ingest"])],
                command=["echo", "{{ ds }}", "{{ upstream['ingest'].outputs.rows }}"],
                preconditions=[FileCheck(path=str(ready / "{{ ds }}"))],
                poke_interval=timedelta(seconds=1),
                on_timeout=OnTimeoutPolicy.FAIL,
            )
        )
        client.apply(
            Task(
                name="publish",
                triggers=[After(tasks=["transform"])],
                command=["echo", "published", "{{ ds }}"],
            )
        )
        occurrence = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)
        run, _ = client.trigger("ingest", occurrence=occurrence)
        assert client.wait(run.id, timeout=20).state is RunState.SUCCEEDED
        transform = wait_for(
            lambda: client.list_runs(task="transform"), timeout=20, message="the transform run"
        )[0]
        wait_for(
            lambda: client.get_run(transform.id).precondition_checks >= 2,
            timeout=20,
            message="the precondition to be checked twice",
        )
        assert client.get_run(transform.id).attempts == ()  # not ready costs no attempt
        ready.mkdir()
        (ready / "2026-11-27").touch()
        final = client.wait(transform.id, timeout=20)
        publish = wait_for(
            lambda: client.list_runs(task="publish"), timeout=20, message="the publish run"
        )[0]
        published = client.wait(publish.id, timeout=20)
    assert final.state is RunState.SUCCEEDED and len(final.attempts) == 1
    assert final.attempts[0].argv == ("echo", "2026-11-27", "42")
    assert final.precondition_verdicts[0].ready
    assert published.attempts[0].argv == ("echo", "published", "2026-11-27")
    for task in ("ingest", "transform", "publish"):
        assert [r["occurrence"] for r in db.runs(task)] == [occurrence]


@pytest.mark.parametrize("on_timeout", [OnTimeoutPolicy.FAIL, OnTimeoutPolicy.SKIP])
def test_precondition_timeout_ends_the_run(
    db_conninfo: str, tmp_path: Path, on_timeout: OnTimeoutPolicy
) -> None:
    with cluster(db_conninfo, tmp_path) as (coordinators, _):
        client = Client(coordinators[0].address)
        client.apply(
            Task(
                name="waits",
                command=["true"],
                preconditions=[FileCheck(path=str(tmp_path / "never"))],
                poke_interval=timedelta(seconds=1),
                precondition_timeout=timedelta(seconds=2),
                on_timeout=on_timeout,
            )
        )
        run, _ = client.trigger("waits")
        final = client.wait(run.id, timeout=30)
    expected = RunState.SKIPPED if on_timeout is OnTimeoutPolicy.SKIP else RunState.FAILED
    assert final.state is expected
    assert final.attempts == () and final.precondition_checks >= 2
    assert "preconditions not ready after 2s" in final.reason and "never" in final.reason


def test_a_precondition_that_holds_on_the_third_check_costs_one_attempt(
    db_conninfo: str, tmp_path: Path
) -> None:
    counter = tmp_path / "checks"
    script = (
        f"n=$(( $(cat {counter} 2>/dev/null || echo 0) + 1 )); echo $n > {counter}; [ $n -ge 3 ]"
    )
    with cluster(db_conninfo, tmp_path) as (coordinators, _):
        client = Client(coordinators[0].address)
        client.apply(
            Task(
                name="eventually",
                command=["true"],
                preconditions=[CommandCheck(argv=["sh", "-c", script])],
                poke_interval=timedelta(seconds=1),
            )
        )
        run, _ = client.trigger("eventually")
        final = client.wait(run.id, timeout=30)
    assert final.state is RunState.SUCCEEDED
    assert final.precondition_checks == 3
    assert [a.state for a in final.attempts] == [AttemptState.SUCCEEDED]
