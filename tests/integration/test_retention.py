"""The pruner against real PostgreSQL: what it deletes, what it never deletes,
one coordinator at a time, in small batches.

History is written with SQL (old runs cannot be made by waiting), the way the
history benchmark loads it; tasks go through the coordinator's apply path.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from harness.wait import wait_for
from hydra.client import Client, hydractl
from hydra.coordinator.loops.pruner import MIN_BATCH, Pruner
from hydra.coordinator.specs import apply_spec
from hydra.coordinator.store import Database
from hydra.domain import After, Concurrency, Cron, Retention, TaskSpec

from support.cluster import CoordinatorThread

NOW = datetime.now(UTC).replace(microsecond=0)
DAY = timedelta(days=1)
MONTH = Retention(max_age=timedelta(days=30))

INSERT_RUN = """
INSERT INTO hydra_runs (task_id, task_version, occurrence, cause, state, created_at, not_before,
                        started_at, finished_at, attempts_used)
SELECT t.id, t.version, %(occurrence)s, 'cron', %(state)s, %(occurrence)s, %(occurrence)s,
       %(occurrence)s, %(finished_at)s, 1
FROM hydra_tasks t WHERE t.name = %(task)s AND t.deleted_at IS NULL
RETURNING id
"""
INSERT_ATTEMPT = """
WITH attempt AS (
    INSERT INTO hydra_attempts (run_id, number, state, agent_id, lease_token, started_at,
                                finished_at, output_bytes)
    VALUES (%(run_id)s, 1, 'SUCCEEDED', 'a1', nextval('hydra_lease_token_seq'), %(at)s, %(at)s, 5)
)
INSERT INTO hydra_attempt_output (run_id, attempt, stream, data, created_at)
VALUES (%(run_id)s, 1, 1, 'hello', %(at)s)
"""


class History:
    """Direct SQL on the test's database."""

    def __init__(self, conninfo: str) -> None:
        self.conn = psycopg.connect(conninfo, autocommit=True)

    def run(
        self,
        task: str,
        days_ago: float,
        state: str = "SUCCEEDED",
        *,
        ended_days_ago: float | None = None,
    ) -> str:
        """A run of `task` whose occurrence was `days_ago` (ended then, unless said), with
        an attempt and a chunk of output when it ran."""
        occurrence = NOW - days_ago * DAY
        active = state in ("QUEUED", "LEASED", "RUNNING")
        ended = (
            None
            if active
            else NOW - (ended_days_ago if ended_days_ago is not None else days_ago) * DAY
        )
        row = self.conn.execute(
            INSERT_RUN,
            {"task": task, "occurrence": occurrence, "state": state, "finished_at": ended},
        ).fetchone()
        assert row is not None
        run_id = str(row[0])
        if state != "QUEUED":
            self.conn.execute(INSERT_ATTEMPT, {"run_id": run_id, "at": ended or occurrence})
        return run_id

    def value(self, query: str, *params: Any) -> Any:
        row = self.conn.execute(query, params or None).fetchone()
        return None if row is None else row[0]

    def run_ids(self) -> set[str]:
        return {str(r[0]) for r in self.conn.execute("SELECT id FROM hydra_runs").fetchall()}

    def count(self, table: str) -> int:
        return int(self.value(f"SELECT count(*) FROM {table}"))

    def close(self) -> None:
        self.conn.close()


@pytest.fixture
def history(db_conninfo: str) -> Any:
    h = History(db_conninfo)
    yield h
    h.close()


async def _apply(store: Database, name: str, **fields: Any) -> None:
    spec = TaskSpec(name=name, command=("true",), **fields)
    await apply_spec(store, spec, dry_run=False, now=datetime.now(UTC))


def _old_failed_runs(history: History, task: str, count: int) -> None:
    """`count` failed runs of `task`, 40 days old (past a 30-day retention)."""
    history.conn.execute(
        """
        INSERT INTO hydra_runs (task_id, task_version, occurrence, cause, state, finished_at)
        SELECT t.id, 1, now() - interval '40 days' + make_interval(secs => i), 'cron',
               'FAILED', now() - interval '40 days'
        FROM hydra_tasks t, generate_series(1, %s) AS i WHERE t.name = %s
        """,
        (count, task),
    )


def _pruner(store: Database, holder: str = "c1", **options: Any) -> Pruner:
    """A pruner that does not pause, with fixed batches unless `batch_seconds` is given."""
    options.setdefault("defaults", Retention())
    options.setdefault("batch_seconds", None)
    return Pruner(store, holder, pace=0.0, **options)


async def test_runs_past_max_age_go_with_their_attempts_and_output(
    store: Database, history: History
) -> None:
    await _apply(store, "nightly", retention=MONTH)
    old = [history.run("nightly", days, "FAILED") for days in (40, 39, 38)]
    kept = [history.run("nightly", 20, "FAILED"), history.run("nightly", 1)]
    pruner = _pruner(store)
    assert await pruner.prune_once()
    assert history.run_ids() == set(kept)
    assert history.count("hydra_attempts") == 2
    assert history.count("hydra_attempt_output") == 2
    assert (pruner.stats.runs, pruner.stats.attempts, pruner.stats.output_chunks) == (3, 3, 3)
    assert set(old).isdisjoint(history.run_ids())


async def test_never_an_active_run_nor_the_latest_success(
    store: Database, history: History
) -> None:
    await _apply(store, "nightly", retention=MONTH, concurrency=Concurrency(max_active_runs=5))
    latest_success = history.run("nightly", 50)
    states = ("QUEUED", "LEASED", "RUNNING")
    active = [history.run("nightly", 45 + i, state) for i, state in enumerate(states)]
    failures = [history.run("nightly", 44 - i, "FAILED") for i in range(3)]
    await _pruner(store).prune_once()
    assert history.run_ids() == {latest_success, *active}
    assert set(failures).isdisjoint(history.run_ids())


async def test_keep_last_keeps_the_newest_runs_whatever_their_age(
    store: Database, history: History
) -> None:
    await _apply(store, "weekly", retention=Retention(max_age=DAY, keep_last=2))
    runs = [history.run("weekly", days, "FAILED") for days in (10, 9, 8, 7)]
    await _pruner(store).prune_once()
    assert history.run_ids() == set(runs[-2:])


async def test_a_run_that_ended_recently_stays_even_for_an_old_occurrence(
    store: Database, history: History
) -> None:
    await _apply(store, "backfilled", retention=MONTH)
    backfilled = history.run("backfilled", 100, "FAILED", ended_days_ago=1)
    history.run("backfilled", 99, "FAILED")
    await _pruner(store).prune_once()
    assert history.run_ids() == {backfilled}


async def test_the_cluster_default_applies_to_tasks_that_say_nothing(
    store: Database, history: History
) -> None:
    await _apply(store, "plain")
    await _apply(store, "forever", retention=Retention(max_age=timedelta(days=36500)))
    history.run("plain", 40, "FAILED")
    forever = history.run("forever", 40, "FAILED")
    await _pruner(store).prune_once()  # no default: kept forever
    assert history.count("hydra_runs") == 2
    await _pruner(store, defaults=MONTH).prune_once()
    assert history.run_ids() == {forever}


async def test_a_run_a_dependent_still_waits_on_stays(store: Database, history: History) -> None:
    for name in ("extract", "load"):
        await _apply(store, name, retention=MONTH)
    await _apply(store, "report", triggers=(After(tasks=("extract", "load")),), retention=MONTH)
    # 40 days ago: extract succeeded, load still runs, report has no run yet.
    waited_on = history.run("extract", 40, "FAILED")
    history.run("load", 40, "RUNNING")
    # 39 days ago: report's run is queued (it reads extract's outputs when offered).
    read_by_queued = history.run("extract", 39, "FAILED")
    history.run("report", 39, "QUEUED")
    # 38 days ago: everything is over.
    done = history.run("extract", 38, "FAILED")
    history.run("load", 38, "FAILED")
    history.run("report", 38, "SKIPPED")
    await _pruner(store).prune_once()
    kept = history.run_ids()
    assert {waited_on, read_by_queued} <= kept
    assert done not in kept


async def test_output_past_output_max_age_goes_and_the_runs_stay(
    store: Database, history: History
) -> None:
    retention = Retention(max_age=timedelta(days=30), output_max_age=timedelta(days=7))
    await _apply(store, "chatty", retention=retention)
    old = history.run("chatty", 10)
    recent = history.run("chatty", 2)
    running = history.run("chatty", 12, "RUNNING")
    pruner = _pruner(store)
    await pruner.prune_once()
    assert history.run_ids() == {old, recent, running}
    with_output = {
        str(r[0])
        for r in history.conn.execute("SELECT DISTINCT run_id FROM hydra_attempt_output").fetchall()
    }
    assert with_output == {recent, running}
    assert history.value("SELECT output_bytes FROM hydra_attempts WHERE run_id = %s", old) == 0
    assert pruner.stats.output_chunks == 1
    # The running run ends long ago: the next pass finds it again.
    history.conn.execute(
        "UPDATE hydra_runs SET state = 'SUCCEEDED', finished_at = now() - interval '8 days' "
        "WHERE id = %s",
        (running,),
    )
    await pruner.prune_once()
    assert history.count("hydra_attempt_output") == 1


async def test_old_versions_no_run_points_to_go(store: Database, history: History) -> None:
    for description in ("v1", "v2", "v3"):
        await _apply(store, "evolving", description=description)
        if description == "v2":
            history.run("evolving", 1)
    await _pruner(store).prune_once()
    versions = history.conn.execute(
        "SELECT version FROM hydra_task_versions ORDER BY version"
    ).fetchall()
    assert [v[0] for v in versions] == [2, 3]


async def test_a_deleted_task_goes_once_its_runs_are_gone(
    store: Database, history: History
) -> None:
    await _apply(store, "retired", retention=MONTH)
    history.run("retired", 40)  # its latest success: a deleted task keeps none
    recent = history.run("retired", 2)
    history.conn.execute("UPDATE hydra_tasks SET deleted_at = now() WHERE name = 'retired'")
    await _pruner(store).prune_once()
    assert history.run_ids() == {recent}
    assert history.count("hydra_tasks") == 1
    history.conn.execute(
        "UPDATE hydra_runs SET occurrence = occurrence - interval '40 days', "
        "finished_at = finished_at - interval '40 days'"
    )
    await _pruner(store).prune_once()
    assert history.count("hydra_runs") == 0
    assert history.count("hydra_tasks") == 0
    assert history.count("hydra_triggers") == 0
    assert history.count("hydra_task_versions") == 0


async def test_audit_entries_past_their_bound_go(store: Database, history: History) -> None:
    for days in (400, 380, 10):
        history.conn.execute(
            "INSERT INTO hydra_audit (at, who, action, outcome) "
            "VALUES (now() - make_interval(days => %s), 'x', 'TaskService/Apply', 'OK')",
            (days,),
        )
    pruner = _pruner(store, audit_retention=timedelta(days=365))
    await pruner.prune_once()
    assert history.count("hydra_audit") == 1
    assert pruner.stats.audit_entries == 2


async def test_batches_stay_small(store: Database, history: History) -> None:
    await _apply(store, "busy", retention=MONTH)
    _old_failed_runs(history, "busy", 95)
    deleted_per_batch: list[int] = []
    pruner = _pruner(store, batch=10)
    original = pruner._delete_runs

    async def counted(tx: Any, policy: Any, after: Any, limit: int) -> Any:
        before = pruner.pass_stats.runs
        scan = await original(tx, policy, after, limit)
        deleted_per_batch.append(pruner.pass_stats.runs - before)
        return scan

    pruner._delete_runs = counted  # type: ignore[method-assign]
    await pruner.prune_once()
    assert history.count("hydra_runs") == 0
    assert max(deleted_per_batch) == 10
    assert sum(deleted_per_batch) == 95
    assert len(deleted_per_batch) == 10


async def test_batches_shrink_when_slow_and_grow_back_when_quick(
    store: Database, history: History
) -> None:
    await _apply(store, "busy", retention=MONTH)
    _old_failed_runs(history, "busy", 400)
    # Every batch is "too slow" for a target of a nanosecond: sizes halve to the floor.
    slow = _pruner(store, batch=400, batch_seconds=1e-9)
    sizes: list[int] = []
    original = slow._delete_runs

    async def recorded(tx: Any, policies: Any, after: Any, limit: int) -> Any:
        sizes.append(limit)
        return await original(tx, policies, after, limit)

    slow._delete_runs = recorded  # type: ignore[method-assign]
    await slow.prune_once()
    assert history.count("hydra_runs") == 0 and slow.stats.runs == 400
    assert sizes[0] < 400 and sizes[-1] == MIN_BATCH
    assert all(b == max(MIN_BATCH, a // 2) for a, b in itertools.pairwise(sizes))
    # With a target no batch misses, a shrunken size doubles back to the maximum.
    quick = _pruner(store, batch=400, batch_seconds=3600.0)
    quick.size = MIN_BATCH
    await quick.prune_once()
    assert quick.size == 400


async def test_two_coordinators_never_prune_at_once(
    store: Database, history: History, db_conninfo: str
) -> None:
    await _apply(store, "busy", retention=MONTH)
    _old_failed_runs(history, "busy", 500)
    first, second = _pruner(store, "c1", batch=20), _pruner(store, "c2", batch=20)
    results = await asyncio.gather(first.prune_once(), second.prune_once())
    assert sorted(results) == [False, True]
    winner, loser = (first, second) if results[0] else (second, first)
    assert winner.stats.runs == 500
    assert loser.stats.runs == 0 and loser.stats.passes_skipped == 1
    # The lease was given up with the pass: the next pass is anyone's.
    assert history.value("SELECT holder FROM hydra_pruner") == winner._holder
    assert await loser.prune_once()
    assert history.value("SELECT holder FROM hydra_pruner") == loser._holder


async def test_a_dead_pruners_lease_is_taken_over(store: Database, history: History) -> None:
    history.conn.execute(
        "UPDATE hydra_pruner SET holder = 'dead', lease_expires_at = now() - interval '1s'"
    )
    assert await _pruner(store, "c2").prune_once()
    assert history.value("SELECT holder FROM hydra_pruner") == "c2"


def _ids(rows: Sequence[Any]) -> set[str]:
    return {str(r[0]) for r in rows}


async def test_reapplying_a_spec_stored_before_retention_makes_no_version(
    store: Database, history: History
) -> None:
    await _apply(store, "old")
    history.conn.execute("UPDATE hydra_task_versions SET spec = spec - 'retention'")
    await _apply(store, "old")
    assert history.value("SELECT version FROM hydra_tasks WHERE name = 'old'") == 1


def test_a_coordinator_prunes_and_shows_each_tasks_effective_retention(
    db_conninfo: str, capsys: pytest.CaptureFixture[str]
) -> None:
    defaults = Retention(max_age=timedelta(days=30), keep_last=10)
    history = History(db_conninfo)
    coordinator = CoordinatorThread(
        db_conninfo, retention=defaults, prune_interval=timedelta(milliseconds=100)
    ).start()
    try:
        with Client(coordinator.address) as client:
            client.apply(TaskSpec(name="own", command=("true",), retention=Retention(keep_last=0)))
            client.apply(TaskSpec(name="plain", command=("true",)))
            assert client.get_task("plain").task.effective_retention == defaults
            own = client.get_task("own").task.effective_retention
            assert own == Retention(max_age=timedelta(days=30), keep_last=0)
        latest = history.run("own", 60)
        for days in range(40, 50):
            history.run("own", days, "FAILED")
        wait_for(lambda: history.run_ids() == {latest}, timeout=30, message="old runs pruned")
        assert hydractl.main(["--coordinator", coordinator.address, "tasks", "get", "own"]) == 0
        shown = capsys.readouterr().out
        assert "# retention: runs kept 30d after they end, their output as long as" in shown
    finally:
        coordinator.stop()
        history.close()


async def test_a_run_locked_by_a_coordinator_is_left_for_the_next_pass(
    store: Database, history: History, db_conninfo: str
) -> None:
    await _apply(store, "busy", retention=MONTH)
    locked = history.run("busy", 40, "FAILED")
    other = history.run("busy", 39, "FAILED")
    with psycopg.connect(db_conninfo) as holder:  # a transaction changing the run
        holder.execute("SELECT 1 FROM hydra_runs WHERE id = %s FOR UPDATE", (locked,))
        await _pruner(store).prune_once()
        assert history.run_ids() == {locked}
        assert other not in history.run_ids()
    await _pruner(store).prune_once()
    assert history.run_ids() == set()


async def test_notifications_go_with_their_runs_and_a_deleted_tasks_records_with_it(
    store: Database, history: History
) -> None:
    await _apply(store, "alerted", retention=MONTH)
    old = history.run("alerted", 40, "FAILED")
    history.run("alerted", 1)
    task_id = history.value("SELECT id FROM hydra_tasks WHERE name = 'alerted'")
    for state, run_id in (("delivered", old), ("pending", old)):
        history.conn.execute(
            "INSERT INTO hydra_notifications (event_id, event, task_id, run_id, occurrence, "
            "webhook, from_defaults, target, payload, state) VALUES (gen_random_uuid(), "
            "'failed', %s, %s, now(), 0, false, '{}', '{}', %s)",
            (task_id, run_id, state),
        )
    pruner = _pruner(store)
    await pruner.prune_once()
    assert old not in history.run_ids()
    # The delivered notification went with its run; a pending one is still delivered.
    assert history.value("SELECT array_agg(state::text) FROM hydra_notifications") == ["pending"]
    assert pruner.stats.notifications == 1

    history.conn.execute(
        "INSERT INTO hydra_skipped_occurrences (task_id, trigger_position, reason, "
        "first_occurrence, last_occurrence, occurrence_count) VALUES (%s, 0, 'paused', "
        "now() - interval '1 day', now(), 3)",
        (task_id,),
    )
    history.conn.execute(
        "INSERT INTO hydra_late_occurrences (task_id, occurrence) VALUES (%s, now())", (task_id,)
    )
    history.conn.execute("UPDATE hydra_tasks SET deleted_at = now() WHERE name = 'alerted'")
    history.conn.execute(
        "UPDATE hydra_runs SET occurrence = occurrence - interval '40 days', "
        "finished_at = finished_at - interval '40 days'"
    )
    await _pruner(store).prune_once()
    for table in ("hydra_runs", "hydra_tasks", "hydra_notifications"):
        assert history.count(table) == 0, table
    assert history.count("hydra_skipped_occurrences") == 0
    assert history.count("hydra_late_occurrences") == 0


def _skipped(history: History, task_id: int, first_days_ago: int, last_days_ago: int) -> None:
    history.conn.execute(
        "INSERT INTO hydra_skipped_occurrences (task_id, trigger_position, reason, "
        "first_occurrence, last_occurrence, occurrence_count) VALUES (%s, 0, 'paused', "
        "now() - make_interval(days => %s), now() - make_interval(days => %s), 3)",
        (task_id, first_days_ago, last_days_ago),
    )


def _late(history: History, task_id: int, occurrence: datetime, found_days_ago: int) -> None:
    history.conn.execute(
        "INSERT INTO hydra_late_occurrences (task_id, occurrence, found_at) "
        "VALUES (%s, %s, now() - make_interval(days => %s))",
        (task_id, occurrence, found_days_ago),
    )


async def test_records_of_dropped_and_late_occurrences_past_max_age_go(
    store: Database, history: History
) -> None:
    """A live task's records about its occurrences do not grow forever: ranges of
    dropped occurrences and late marks go once older than its max_age, but not a
    late mark that could fire again (its run still active, or its trigger still at
    it), and nothing of a task kept forever."""
    await _apply(store, "often-late", retention=MONTH, triggers=(Cron(expression="0 2 * * *"),))
    await _apply(store, "kept-forever")
    task_id = history.value("SELECT id FROM hydra_tasks WHERE name = 'often-late'")
    forever_id = history.value("SELECT id FROM hydra_tasks WHERE name = 'kept-forever'")
    for task in (task_id, forever_id):
        _skipped(history, task, 50, 40)  # ended 40 days ago: past a month
    _skipped(history, task_id, 50, 10)  # a long range that ended 10 days ago: kept
    old_occurrences = [NOW - days * DAY for days in (45, 44, 43)]
    for occurrence in old_occurrences:
        _late(history, task_id, occurrence, 40)
        _late(history, forever_id, occurrence, 40)
    _late(history, task_id, NOW - 5 * DAY, 5)  # recent: kept
    # Late 40 days ago and still running: it stays, else it would be late again.
    running = history.run("often-late", 42, "RUNNING")
    running_at = history.value("SELECT occurrence FROM hydra_runs WHERE id = %s", running)
    _late(history, task_id, running_at, 40)
    # A trigger still waiting at an old occurrence (coordinators were down): stays too.
    waiting_at = NOW - 41 * DAY
    moved = history.conn.execute(
        "UPDATE hydra_triggers SET next_fire_at = %s WHERE task_id = %s", (waiting_at, task_id)
    )
    assert moved.rowcount == 1
    _late(history, task_id, waiting_at, 40)

    pruner = _pruner(store, batch=2)  # several batches
    assert await pruner.prune_once()

    ranges = history.conn.execute(
        "SELECT task_id, (now() - last_occurrence) < interval '20 days' "
        "FROM hydra_skipped_occurrences ORDER BY task_id, 2"
    ).fetchall()
    assert ranges == [(task_id, True), (forever_id, False)]
    marks = history.conn.execute(
        "SELECT occurrence FROM hydra_late_occurrences WHERE task_id = %s ORDER BY occurrence",
        (task_id,),
    ).fetchall()
    assert [m[0] for m in marks] == [running_at, waiting_at, NOW - 5 * DAY]
    assert history.value(
        "SELECT count(*) FROM hydra_late_occurrences WHERE task_id = %s", forever_id
    ) == len(old_occurrences)
    assert pruner.stats.occurrence_records == 1 + len(old_occurrences)
    assert pruner.pass_stats.batches > 3
