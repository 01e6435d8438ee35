"""Trigger skips reading a task it triggered before, and never uses a stale one.

The coordinator remembers the task each Trigger read (``Database.recent_tasks``); the
next Trigger of that task creates its run in one statement that also checks the
version is still current, and reads the task again when it is not. These tests
change the task between triggers in every way that matters.
"""

from __future__ import annotations

import pytest

from hydra.client import Client, InvalidArgument, NotFound, Task

from support.cluster import CoordinatorThread, Database


def _run_row(db: Database, run_id: str) -> dict[str, object]:
    [row] = db.rows(
        "SELECT r.task_version, r.params, r.max_attempts, t.name, t.id AS task_id "
        "FROM hydra_runs r JOIN hydra_tasks t ON t.id = r.task_id WHERE r.id = %s",
        run_id,
    )
    return row


def test_a_trigger_after_a_change_uses_the_new_version_and_its_params(db_conninfo: str) -> None:
    db = Database(db_conninfo)
    coordinator = CoordinatorThread(db_conninfo).start()
    try:
        with Client(coordinator.address) as client:
            client.apply(Task(name="known", command=("true",), params={"day": "mon"}))
            first, _ = client.trigger("known")
            assert coordinator.coordinator.database.recent_tasks.get("known") is not None
            again, _ = client.trigger("known", params={"day": "tue"})  # from what it knows
            assert _run_row(db, again.id)["params"] == {"day": "tue"}
            # A new version with another parameter: the remembered one is stale.
            client.apply(Task(name="known", command=("true",), params={"day": "mon", "n": "1"}))
            changed, _ = client.trigger("known")
            row = _run_row(db, changed.id)
            assert row["task_version"] == 2 and row["params"] == {"day": "mon", "n": "1"}
            assert {
                _run_row(db, first.id)["task_version"],
                _run_row(db, again.id)["task_version"],
            } == {1}
    finally:
        coordinator.stop()


def test_a_parameter_only_the_new_version_declares_is_accepted(db_conninfo: str) -> None:
    """The remembered spec refuses it; the current one has the say."""
    db = Database(db_conninfo)
    coordinator = CoordinatorThread(db_conninfo).start()
    try:
        with Client(coordinator.address) as client:
            client.apply(Task(name="grows", command=("true",)))
            client.trigger("grows")
            client.apply(Task(name="grows", command=("true",), params={"extra": "a"}))
            run, _ = client.trigger("grows", params={"extra": "b"})
            assert _run_row(db, run.id)["params"] == {"extra": "b"}
            with pytest.raises(InvalidArgument) as refused:
                client.trigger("grows", params={"undeclared": "x"})
            assert "params.undeclared" in str(refused.value)
    finally:
        coordinator.stop()


def test_a_deleted_task_is_not_found_and_one_created_again_gets_the_runs(
    db_conninfo: str,
) -> None:
    db = Database(db_conninfo)
    coordinator = CoordinatorThread(db_conninfo).start()
    try:
        with Client(coordinator.address) as client:
            client.apply(Task(name="gone", command=("true",)))
            old, _ = client.trigger("gone")
            client.delete_task("gone", force=True)
            with pytest.raises(NotFound):
                client.trigger("gone")
            client.apply(Task(name="gone", command=("true",)))
            new, _ = client.trigger("gone")
            assert _run_row(db, new.id)["task_id"] != _run_row(db, old.id)["task_id"]
    finally:
        coordinator.stop()


def test_a_trigger_with_the_same_key_finds_the_run_from_what_it_knows(db_conninfo: str) -> None:
    db = Database(db_conninfo)
    coordinator = CoordinatorThread(db_conninfo).start()
    try:
        with Client(coordinator.address) as client:
            client.apply(Task(name="keyed", command=("true",)))
            first, created = client.trigger("keyed", idempotency_key="k1")
            again, created_again = client.trigger("keyed", idempotency_key="k1")
            assert created and not created_again and again.id == first.id
            assert len(db.runs("keyed")) == 1
    finally:
        coordinator.stop()
