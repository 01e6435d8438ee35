"""Migrations at start do not lock the hot table, and a coordinator that must not
migrate says what to run (issue 11, fault 11: 0004 built its indexes with a plain
CREATE INDEX, blocking writes to hydra_runs for the whole build).

A database "at 0003" is a migrated one with 0004's indexes dropped and its record
deleted. A transaction that holds hydra_runs (ROW EXCLUSIVE, as any write does)
keeps an index build of it waiting for as long as the test likes: long enough to
see whether other writes still go through meanwhile.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import LiteralString

import psycopg
import pytest

from harness.hydra import HYDRA, coordinator_argv, wait_serving
from harness.net import free_port
from harness.processes import Processes, clean_env
from harness.wait import wait_for
from hydra.client import Client, RunState, Task
from hydra.coordinator.migrate import all_migrations

from support.cluster import Database, cluster

CLAIM_INDEXES = ("hydra_runs_queued_by_task", "hydra_runs_in_flight_by_task")
LATEST = len(all_migrations())
#: A write that waits longer than this for the index build counts as blocked.
PROMPT_WRITE_S = 2.0


def _execute(db: Database, statement: LiteralString, *params: object) -> None:
    with psycopg.connect(db.conninfo, autocommit=True) as conn:
        conn.execute(statement, params)


def _at_0003(db: Database) -> None:
    """Undo 0004 to 0006: the state of a database that was migrated by the release
    before 0004, as far as those three are concerned. Later migrations are only
    forgotten, not undone (the coordinators under test use their tables), so each
    must be re-appliable (IF NOT EXISTS), as 0007 onwards are."""
    _execute(db, "ALTER TABLE hydra_attempt_output DROP COLUMN dropped_bytes")  # 0005
    _execute(db, "ALTER TABLE hydra_agents DROP COLUMN instance_id")  # 0006
    _execute(db, "DROP INDEX hydra_runs_queued_by_task, hydra_runs_in_flight_by_task")
    _execute(db, "DELETE FROM hydra_schema_migrations WHERE version >= 4")


def _valid(db: Database, index: str) -> bool | None:
    """Whether the index is valid; None when there is none of that name."""
    rows = db.rows(
        "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
        " WHERE c.relname = %s",
        index,
    )
    return bool(rows[0]["indisvalid"]) if rows else None


@pytest.fixture
def holder(db_conninfo: str) -> Iterator[psycopg.Connection]:
    """A transaction holding hydra_runs as a write does; the test commits it."""
    with psycopg.connect(db_conninfo) as conn:
        yield conn


def _hold(conn: psycopg.Connection) -> None:
    conn.execute("LOCK TABLE hydra_runs IN ROW EXCLUSIVE MODE")


def _start_migrate(conninfo: str, log_dir: Path) -> subprocess.Popen[str]:
    log_dir.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [*HYDRA, "migrate", "--db", conninfo],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=clean_env(),
    )


def _building_backend(db: Database) -> int:
    """The pid of the backend whose index build waits for the holder."""
    rows = wait_for(
        lambda: db.rows(
            "SELECT pid FROM pg_stat_activity WHERE query ILIKE %s AND wait_event_type = 'Lock'"
            " AND pid <> pg_backend_pid()",
            "%CREATE INDEX%hydra_runs_queued_by_task%",
        ),
        timeout=15,
        message="the index build to wait for the open transaction",
    )
    return int(rows[0]["pid"])


def test_an_index_migration_does_not_block_writes_to_hydra_runs_while_it_builds(
    db_conninfo: str, holder: psycopg.Connection, tmp_path: Path
) -> None:
    db = Database(db_conninfo)
    with cluster(db_conninfo, tmp_path, agents=1) as (coordinators, _):
        client = Client(coordinators[0].address, timeout=PROMPT_WRITE_S * 3)
        client.apply(Task(name="busy", command=["echo", "written meanwhile"]))
        _at_0003(db)
        _hold(holder)
        migrating = _start_migrate(db_conninfo, tmp_path)
        try:
            _building_backend(db)
            # A write to hydra_runs while the index builds: a manual run.
            started = time.monotonic()
            run, _ = client.trigger("busy")
            took = time.monotonic() - started
            assert took < PROMPT_WRITE_S, f"creating a run waited {took:.1f}s for the index build"
            holder.commit()
            output, _ = migrating.communicate(timeout=30)
        finally:
            if migrating.poll() is None:
                migrating.kill()
                migrating.wait()
        assert migrating.returncode == 0, output
        assert "applied 0004_add_claim_indexes.sql" in output
        assert [_valid(db, index) for index in CLAIM_INDEXES] == [True, True]
        # The cluster kept serving: the run created during the build ran.
        assert client.wait(run.id, timeout=20).state is RunState.SUCCEEDED


def test_an_interrupted_index_build_is_resumed(
    db_conninfo: str, holder: psycopg.Connection, tmp_path: Path
) -> None:
    db = Database(db_conninfo)
    _at_0003(db)
    _hold(holder)
    migrating = _start_migrate(db_conninfo, tmp_path)
    try:
        # The coordinator's connection is lost half way through the build.
        db.rows("SELECT pg_terminate_backend(%s)", _building_backend(db))
        output, _ = migrating.communicate(timeout=30)
    finally:
        if migrating.poll() is None:
            migrating.kill()
            migrating.wait()
    holder.commit()
    assert migrating.returncode != 0, output
    assert "Traceback" not in output, output
    assert "hydra migrate` again" in output, output
    # What an interrupted concurrent build leaves: an INVALID index, 0004 not recorded.
    assert _valid(db, "hydra_runs_queued_by_task") is False
    assert db.value("SELECT max(version) FROM hydra_schema_migrations") == 3

    resumed = subprocess.run(
        [*HYDRA, "migrate", "--db", db_conninfo],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=30,
        check=False,
    )

    assert resumed.returncode == 0, resumed.stderr
    assert [_valid(db, index) for index in CLAIM_INDEXES] == [True, True]
    assert db.value("SELECT max(version) FROM hydra_schema_migrations") == LATEST
    # The claim finds due runs through the rebuilt index (the cluster serves).
    with cluster(db_conninfo, tmp_path, agents=1) as (coordinators, _):
        client = Client(coordinators[0].address)
        client.apply(Task(name="after-resume", command=["true"]))
        run, _ = client.trigger("after-resume")
        assert client.wait(run.id, timeout=20).state is RunState.SUCCEEDED


def _coordinator(
    conninfo: str, *flags: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """A `hydra coordinator` run to its exit (which these tests expect)."""
    argv = coordinator_argv(conninfo, f"127.0.0.1:{free_port()}") + list(flags)
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        env=clean_env(**(env or {})),
        timeout=30,
        check=False,
    )


def _refused(done: subprocess.CompletedProcess[str], *phrases: str) -> None:
    assert done.returncode != 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    for phrase in phrases:
        assert phrase in done.stderr, done.stderr


def _serves_with_no_migrate(conninfo: str, log_dir: Path) -> None:
    """A --no-migrate coordinator on a current schema starts and serves."""
    address = f"127.0.0.1:{free_port()}"
    with Processes(log_dir) as processes:
        process = processes.start(
            "no-migrate", [*coordinator_argv(conninfo, address), "--no-migrate"]
        )
        wait_serving(process, address, timeout=30)
        Client(address).apply(Task(name="served", command=["true"]))


def test_no_migrate_on_an_unmigrated_or_older_schema_exits_saying_what_to_run(
    empty_db_conninfo: str, db_conninfo: str, tmp_path: Path
) -> None:
    unmigrated = _coordinator(empty_db_conninfo, "--no-migrate")
    _refused(
        unmigrated,
        f"database schema is at 0000, this Hydra needs {LATEST:04d}",
        "run `hydra migrate`",
    )
    # It changed nothing: not even the migrations table exists.
    assert (
        Database(empty_db_conninfo).value("SELECT to_regclass('hydra_schema_migrations')") is None
    )

    db = Database(db_conninfo)
    _at_0003(db)
    older = _coordinator(db_conninfo, env={"HYDRA_NO_MIGRATE": "1"})
    _refused(older, f"database schema is at 0003, this Hydra needs {LATEST:04d}", "hydra migrate")
    assert db.value("SELECT max(version) FROM hydra_schema_migrations") == 3

    bad_setting = _coordinator(db_conninfo, env={"HYDRA_NO_MIGRATE": "sometimes"})
    _refused(bad_setting, "HYDRA_NO_MIGRATE must be 1 or 0")

    # What the message says to run, then the coordinator serves.
    subprocess.run(
        [*HYDRA, "migrate", "--db", db_conninfo], env=clean_env(), timeout=30, check=True
    )
    _serves_with_no_migrate(db_conninfo, tmp_path)


def test_a_schema_newer_than_the_code_exits_saying_so(db_conninfo: str, tmp_path: Path) -> None:
    db = Database(db_conninfo)
    newer = LATEST + 1
    _execute(
        db,
        "INSERT INTO hydra_schema_migrations (version, name) VALUES (%s, %s)",
        newer,
        f"{newer:04d}_add_future.sql",
    )
    expected = f"database schema is at {newer:04d}, this Hydra knows up to {LATEST:04d}"
    _refused(_coordinator(db_conninfo), expected, "upgrade Hydra")
    _refused(_coordinator(db_conninfo, "--no-migrate"), expected, "upgrade Hydra")

    _execute(db, "DELETE FROM hydra_schema_migrations WHERE version = %s", newer)
    _serves_with_no_migrate(db_conninfo, tmp_path)
