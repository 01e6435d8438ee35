"""`hydractl why TASK --occurrence T` on a real coordinator, real agents and a real
database: occurrences that ran, were skipped by overlap, wait on a precondition,
were skipped because their upstream failed, were dropped by the catch-up policy
or fell in a pause; the range rows under a hostile schedule; scope and role;
bad input."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest

from harness.hydra import HYDRACTL, Hydractl, wait_agents
from harness.processes import clean_env
from harness.wait import wait_for
from hydra.client import (
    After,
    Catchup,
    Client,
    CommandCheck,
    Concurrency,
    Cron,
    HydraError,
    Overlap,
    Retry,
    Task,
)
from hydra.v1 import run_service_pb2 as run_pb
from hydra.v1 import run_service_pb2_grpc as run_grpc

from support.cluster import AgentProcess, CoordinatorThread, Database
from support.credentials import make_credential

EVERY_SECOND = Cron(expression="* * * * * *")
EVERY_MINUTE = Cron(expression="* * * * *")
#: A fixed occurrence for manual runs, on no schedule of these tasks.
T = datetime(2026, 3, 1, 2, 30, 15, tzinfo=UTC)


def _why(hydractl: Hydractl, task: str, occurrence: datetime) -> dict[str, Any]:
    answer: dict[str, Any] = hydractl.json("why", task, "--occurrence", occurrence.isoformat())
    return answer


def _kinds(answer: dict[str, Any]) -> list[str]:
    return [fact["kind"] for fact in answer["facts"]]


def _fact(answer: dict[str, Any], kind: str) -> dict[str, Any]:
    found = [fact for fact in answer["facts"] if fact["kind"] == kind]
    assert found, f"no {kind} fact in {answer['facts']}"
    return found[0]


@pytest.fixture
def served(db_conninfo: str, tmp_path: Path) -> Iterator[tuple[Client, Hydractl, Database]]:
    """A coordinator (no authentication) with one real agent of 4 slots."""
    coordinator = CoordinatorThread(db_conninfo, name="why").start()
    agent = AgentProcess("a", [coordinator.address], log_path=tmp_path / "agent.log").start()
    try:
        wait_agents(db_conninfo, ["a"], watched=[agent], timeout=30)
        yield Client(coordinator.address), Hydractl(coordinator.address), Database(db_conninfo)
    finally:
        agent.stop_now()
        coordinator.stop()


def _wait_state(db: Database, task: str, states: set[str]) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        return next((r for r in db.runs(task) if r["state"] in states), None)

    return wait_for(reached, timeout=30, message=f"a run of {task} in {states}")


def test_why_explains_runs_that_ran_failed_wait_on_a_precondition_or_lost_their_upstream(
    served: tuple[Client, Hydractl, Database],
) -> None:
    client, hydractl, db = served
    client.apply(
        [
            Task(name="ok", command=["true"]),
            Task(name="up", command=["sh", "-c", "exit 3"]),
            Task(name="down", command=["true"], triggers=[After(tasks=("up",))]),
            Task(
                name="gated",
                command=["true"],
                preconditions=[CommandCheck(argv=("sh", "-c", "echo not yet; exit 1"))],
                poke_interval=timedelta(seconds=1),
            ),
        ]
    )
    ran = client.wait(client.trigger("ok", occurrence=T)[0].id, timeout=30)
    failed = client.wait(client.trigger("up", occurrence=T)[0].id, timeout=30)
    client.trigger("gated", occurrence=T)
    wait_for(
        lambda: db.value(
            "SELECT precondition_checks FROM hydra_runs r JOIN hydra_tasks t ON t.id = r.task_id "
            "WHERE t.name = 'gated'"
        ),
        timeout=30,
        message="the precondition checked once",
    )
    _wait_state(db, "down", {"SKIPPED"})

    answer = _why(hydractl, "ok", T)
    assert answer["run"]["id"] == ran.id and answer["run"]["state"] == "SUCCEEDED"
    assert _kinds(answer) == ["run", "attempt"]
    assert (
        "attempt 1 of 1 succeeded on agent a with exit code 0"
        in _fact(answer, "attempt")["message"]
    )

    answer = _why(hydractl, "up", T)
    assert answer["run"]["id"] == failed.id
    assert "failed on agent a with exit code 3" in _fact(answer, "attempt")["message"]

    answer = _why(hydractl, "gated", T)
    precondition = _fact(answer, "precondition")
    assert "precondition 0 not ready" in precondition["message"]
    assert "not yet" in precondition["message"]

    answer = _why(hydractl, "down", T)
    assert answer["run"]["state"] == "SKIPPED"
    assert _fact(answer, "reason")["message"] == "upstream up failed"
    upstream = _fact(answer, "upstream")
    assert upstream["ids"] == {"upstream_run_id": failed.id, "upstream_task": "up"}
    assert f"upstream up run {failed.id} is FAILED" in upstream["message"]

    text = hydractl.ok("why", "down", "--occurrence", T.isoformat())
    assert f"upstream up run {failed.id} is FAILED" in text


def test_why_names_the_run_an_overlap_skip_was_behind(
    served: tuple[Client, Hydractl, Database],
) -> None:
    client, hydractl, db = served
    client.apply(
        Task(
            name="slow",
            command=["sleep", "60"],
            triggers=[EVERY_SECOND],
            concurrency=Concurrency(max_active_runs=1, overlap=Overlap.SKIP),
        )
    )
    skipped = _wait_state(db, "slow", {"SKIPPED"})
    client.pause("slow")
    holder = next(r for r in db.runs("slow") if r["state"] in {"LEASED", "RUNNING", "QUEUED"})

    answer = _why(hydractl, "slow", skipped["occurrence"])
    assert answer["run"]["state"] == "SKIPPED"
    assert _fact(answer, "reason")["message"].startswith("overlap:")
    overlap = _fact(answer, "overlap")
    assert overlap["ids"] == {"run_id": str(holder["id"])}
    assert "max_active_runs 1" in overlap["message"]


def test_why_explains_a_queued_run_waiting_behind_max_active_runs_and_for_an_agent(
    served: tuple[Client, Hydractl, Database],
) -> None:
    client, hydractl, db = served
    client.apply(
        [
            Task(name="one", command=["sleep", "60"]),
            Task(name="gpu", command=["true"], selector={"gpu": "yes"}),
        ]
    )
    first = client.trigger("one", occurrence=T)[0]
    _wait_state(db, "one", {"RUNNING"})
    second = client.trigger("one", occurrence=T + timedelta(hours=1))[0]
    client.trigger("gpu", occurrence=T)

    answer = _why(hydractl, "one", T + timedelta(hours=1))
    assert answer["run"]["id"] == second.id and answer["run"]["state"] == "QUEUED"
    assert _fact(answer, "overlap")["ids"] == {"run_id": first.id}

    agent = _fact(_why(hydractl, "gpu", T), "agent")
    assert "no connected agent has labels {'gpu': 'yes'}" in agent["message"]

    running = _why(hydractl, "one", T)
    assert running["run"]["state"] == "RUNNING"
    assert "attempt 1 of 1 is running on agent a since" in _fact(running, "attempt")["message"]


def test_why_explains_a_run_waiting_to_retry(served: tuple[Client, Hydractl, Database]) -> None:
    client, hydractl, db = served
    retry = Retry(max_attempts=3, backoff=timedelta(minutes=5))
    client.apply(Task(name="flaky", command=["sh", "-c", "exit 7"], retry=retry))
    run = client.trigger("flaky", occurrence=T)[0]
    wait_for(
        lambda: (
            db.value("SELECT attempts_used FROM hydra_runs WHERE id = %s", run.id) == 1
            and db.value("SELECT state FROM hydra_runs WHERE id = %s", run.id) == "QUEUED"
        ),
        timeout=30,
        message="the first attempt failed and the run waits to retry",
    )
    answer = _why(hydractl, "flaky", T)
    assert _kinds(answer) == ["run", "attempt", "retrying"]
    assert (
        "attempt 1 of 3 failed on agent a with exit code 7" in _fact(answer, "attempt")["message"]
    )
    assert "retrying: attempt 2 of 3 at " in _fact(answer, "retrying")["message"]


def _move_back(db: Database, task: str, by: timedelta) -> None:
    """As if every coordinator had been down for `by`: the task and its trigger were
    there that much earlier, and the trigger has not fired since."""
    db.rows(
        "UPDATE hydra_tasks SET created_at = created_at - %s WHERE name = %s RETURNING id", by, task
    )
    db.rows(
        "UPDATE hydra_triggers g SET next_fire_at = date_trunc('minute', now() - %s) "
        "FROM hydra_tasks t WHERE t.id = g.task_id AND t.name = %s RETURNING g.id",
        by,
        task,
    )
    db.rows("SELECT pg_notify('hydra_triggers', '')")


def _skip_rows(db: Database, task: str) -> list[dict[str, Any]]:
    return db.rows(
        "SELECT s.* FROM hydra_skipped_occurrences s JOIN hydra_tasks t ON t.id = s.task_id "
        "WHERE t.name = %s ORDER BY s.first_occurrence",
        task,
    )


def test_why_explains_occurrences_dropped_by_the_catchup_policy_and_the_starting_deadline(
    served: tuple[Client, Hydractl, Database],
) -> None:
    client, hydractl, db = served
    hour = timedelta(hours=1)
    client.apply(
        [
            Task(name="latest", command=["true"], triggers=[EVERY_MINUTE], catchup=Catchup.LATEST),
            Task(name="none", command=["true"], triggers=[EVERY_MINUTE], catchup=Catchup.NONE),
            Task(
                name="deadline",
                command=["true"],
                triggers=[EVERY_MINUTE],
                catchup=Catchup.ALL,
                starting_deadline=timedelta(minutes=10),
            ),
        ]
    )
    for task in ("latest", "none", "deadline"):
        _move_back(db, task, hour)
    wait_for(
        lambda: all(_skip_rows(db, t) for t in ("latest", "none", "deadline")),
        timeout=30,
        message="the drops recorded",
    )
    half_an_hour_ago = datetime.now(UTC).replace(second=0, microsecond=0) - hour / 2

    (latest,) = _skip_rows(db, "latest")
    assert latest["reason"] == "catchup_latest" and 58 <= latest["occurrence_count"] <= 61
    dropped = _fact(_why(hydractl, "latest", half_an_hour_ago), "dropped")
    assert dropped["ids"] == {"reason": "catchup_latest", "trigger": "0"}
    assert "catchup latest runs only the newest missed occurrence" in dropped["message"]
    newest = db.runs("latest")[-1]["occurrence"]
    assert _why(hydractl, "latest", newest)["run"] is not None

    assert _fact(_why(hydractl, "none", half_an_hour_ago), "dropped")["ids"]["reason"] == (
        "catchup_none"
    )
    # Only an occurrence found within the misfire grace (5 s) may have got a run.
    assert all(r["occurrence"] > half_an_hour_ago for r in db.runs("none"))

    (deadline,) = _skip_rows(db, "deadline")
    assert deadline["reason"] == "starting_deadline"
    assert _fact(_why(hydractl, "deadline", half_an_hour_ago), "dropped")["ids"]["reason"] == (
        "starting_deadline"
    )
    recent = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=5)
    assert _why(hydractl, "deadline", recent)["run"]["occurrence"] is not None


def test_why_explains_occurrences_that_fell_in_a_pause_and_ones_not_yet_due(
    served: tuple[Client, Hydractl, Database],
) -> None:
    client, hydractl, db = served
    client.apply(
        [
            Task(name="tick", command=["true"], triggers=[EVERY_SECOND], catchup=Catchup.NONE),
            Task(name="tock", command=["true"], triggers=[EVERY_SECOND], catchup=Catchup.LATEST),
        ]
    )
    for task in ("tick", "tock"):
        _wait_state(db, task, {"SUCCEEDED"})
        client.pause(task)
    paused = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=2)
    wait_for(lambda: datetime.now(UTC) > paused + timedelta(seconds=2), timeout=10, message="")
    answer = _why(hydractl, "tick", paused)
    assert _kinds(answer) == ["paused"] and answer["run"] is None
    for task in ("tick", "tock"):
        client.resume(task)
    wait_for(lambda: _skip_rows(db, "tock"), timeout=30, message="tock's drop recorded")

    for task, policy in (("tick", "catchup none"), ("tock", "catchup latest")):
        dropped = _fact(_why(hydractl, task, paused), "dropped")
        assert dropped["ids"]["reason"] == "paused"
        assert "it fell while the task was paused" in dropped["message"]
        assert policy in dropped["message"]

    client.pause("tick")
    future = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
    assert _kinds(_why(hydractl, "tick", future)) == ["paused"]
    client.apply(Task(name="daily", command=["true"], triggers=[Cron(expression="0 3 * * *")]))
    not_due = _fact(_why(hydractl, "daily", future.replace(hour=3, minute=0, second=0)), "not_due")
    assert "not due yet: trigger 0 (cron '0 3 * * *' UTC) fires next at" in not_due["message"]
    off = _fact(_why(hydractl, "daily", future.replace(hour=4, minute=1)), "not_an_occurrence")
    assert "not an occurrence of any trigger" in off["message"]
    before = _why(hydractl, "daily", datetime(2001, 1, 1, 3, tzinfo=UTC))
    assert _kinds(before) == ["before_task"]


def test_a_per_second_cron_paused_for_a_month_leaves_one_row_and_answers_inside_it(
    served: tuple[Client, Hydractl, Database],
) -> None:
    client, hydractl, db = served
    month = timedelta(days=30)
    for name, catchup in (("hostile.none", Catchup.NONE), ("hostile.latest", Catchup.LATEST)):
        client.apply(Task(name=name, command=["true"], triggers=[EVERY_SECOND], catchup=catchup))
        _wait_state(db, name, {"SUCCEEDED"})
        client.pause(name)
        # A month ago: the pause, the trigger's next occurrence and the task.
        db.rows(
            "UPDATE hydra_triggers g SET next_fire_at = next_fire_at - %s, "
            "paused_at = paused_at - %s FROM hydra_tasks t "
            "WHERE t.id = g.task_id AND t.name = %s RETURNING g.id",
            month,
            month,
            name,
        )
        db.rows(
            "UPDATE hydra_tasks SET created_at = created_at - %s WHERE name = %s RETURNING id",
            month,
            name,
        )
        client.resume(name)
    for name in ("hostile.none", "hostile.latest"):
        wait_for(lambda n=name: _skip_rows(db, n), timeout=30, message=f"{name}'s drop recorded")
    runs_before = {n: len(db.runs(n)) for n in ("hostile.none", "hostile.latest")}
    wait_for(
        lambda: all(len(db.runs(n)) >= runs_before[n] + 3 for n in runs_before),
        timeout=30,
        message="three more runs of each after the resume",
    )
    for name in ("hostile.none", "hostile.latest"):
        rows = _skip_rows(db, name)
        # One row for 2.6 million occurrences; any other is a second or two the
        # trigger loop fell behind on this loaded machine (recorded, as it should be).
        (row,) = [r for r in rows if r["reason"] == "paused"]
        assert len(rows) <= 3
        assert row["reason"] == "paused"
        assert row["occurrence_count"] is None
        assert row["last_occurrence"] - row["first_occurrence"] > month - timedelta(minutes=1)
        inside = row["first_occurrence"] + timedelta(days=15, seconds=17)
        dropped = _fact(_why(hydractl, name, inside), "dropped")
        assert dropped["ids"]["reason"] == "paused"
        assert "one of many occurrence(s)" in dropped["message"]


def test_why_is_for_viewers_and_stays_within_the_scope(db_conninfo: str, tmp_path: Path) -> None:
    coordinator = CoordinatorThread(db_conninfo, name="why-secured", insecure=False).start()
    try:
        admin = Client(coordinator.address, token=make_credential(db_conninfo, "root", "admin"))
        admin.apply(
            [Task(name="billing.export", command=["true"]), Task(name="hr.pay", command=["true"])]
        )
        viewer = Client(
            coordinator.address,
            token=make_credential(db_conninfo, "billing-viewer", "viewer", scope="billing."),
        )
        assert viewer.why("billing.export", T).run is None
        with pytest.raises(HydraError) as refused:
            viewer.why("hr.pay", T)
        assert refused.value.status_code_name == "PERMISSION_DENIED"
        assert "limited to tasks under scope 'billing.'" in refused.value.message
        agent = Client(
            coordinator.address,
            token=make_credential(db_conninfo, "agent-x", "agent", agent_id="x"),
        )
        with pytest.raises(HydraError) as denied:
            agent.why("billing.export", T)
        assert denied.value.status_code_name == "PERMISSION_DENIED"
        with pytest.raises(HydraError) as anonymous:
            Client(coordinator.address).why("billing.export", T)
        assert anonymous.value.status_code_name == "UNAUTHENTICATED"
    finally:
        coordinator.stop()


def test_bad_input_gets_a_clear_error(db_conninfo: str) -> None:
    coordinator = CoordinatorThread(db_conninfo, name="why-bad").start()
    try:
        Client(coordinator.address).apply(Task(name="known", command=["true"]))
        hydractl = [*HYDRACTL, "--coordinator", coordinator.address]

        def run(*args: str) -> subprocess.CompletedProcess[str]:
            done = subprocess.run(
                [*hydractl, *args], capture_output=True, text=True, env=clean_env(), timeout=60
            )
            assert "Traceback" not in done.stderr
            return done

        unknown = run("why", "nope", "--occurrence", T.isoformat())
        assert unknown.returncode == 3 and "task 'nope' not found" in unknown.stderr
        bad_time = run("why", "known", "--occurrence", "yesterday-ish")
        assert bad_time.returncode == 2 and "--occurrence" in bad_time.stderr
        assert "not a time: 'yesterday-ish'" in bad_time.stderr
        missing = run("why", "known")
        assert missing.returncode == 2 and "--occurrence" in missing.stderr
        with grpc.insecure_channel(coordinator.address) as channel:
            stub = run_grpc.RunServiceStub(channel)
            with pytest.raises(grpc.RpcError) as error:
                stub.Why(run_pb.WhyRequest(task="known"))
            assert error.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert "occurrence" in (error.value.details() or "")
            with pytest.raises(grpc.RpcError) as error:
                stub.Why(run_pb.WhyRequest(occurrence=run_pb.WhyRequest().occurrence))
            assert error.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert "task" in (error.value.details() or "")
    finally:
        coordinator.stop()


def test_a_new_version_that_replaces_a_trigger_behind_records_its_pending_occurrences(
    served: tuple[Client, Hydractl, Database],
) -> None:
    client, hydractl, db = served
    client.apply(Task(name="moved", command=["true"], triggers=[EVERY_SECOND]))
    _wait_state(db, "moved", {"SUCCEEDED"})
    client.pause("moved")
    paused = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=2)
    wait_for(lambda: datetime.now(UTC) > paused + timedelta(seconds=1), timeout=10, message="")
    client.apply(Task(name="moved", command=["true"], triggers=[Cron(expression="0 3 * * *")]))
    client.apply(Task(name="moved", command=["true"], triggers=[Cron(expression="0 3 * * *")]))
    (row,) = _skip_rows(db, "moved")  # the unchanged second apply drops nothing more
    assert row["reason"] == "trigger_changed" and row["first_occurrence"] <= paused
    dropped = _fact(_why(hydractl, "moved", paused), "dropped")
    assert dropped["ids"]["reason"] == "trigger_changed"
    assert "it was cron '* * * * * *' UTC; version 2" in dropped["message"]
    assert "trigger 0 as it was then" in dropped["message"]
