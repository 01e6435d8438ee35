"""The store's record of dropped occurrences: contiguous drops of one trigger and
reason grow one row, a drop recorded twice is one row, and why answers for any
occurrence inside a range (real PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hydra.coordinator import why
from hydra.coordinator.specs import apply_spec
from hydra.coordinator.store import Database, occurrences
from hydra.coordinator.store.records import SkippedRange
from hydra.domain import Cron, TaskSpec
from hydra.occurrences import FactKind, SkipReason

from support.cluster import Database as SQL

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
SECOND = timedelta(seconds=1)


async def _task_id(store: Database) -> int:
    spec = TaskSpec(name="tick", command=("true",), triggers=(Cron(expression="* * * * * *"),))
    await apply_spec(store, spec, dry_run=False, now=NOW - timedelta(days=1))
    async with store.transaction() as tx:
        row = await tx.one("get_task", name="tick")
    assert row is not None
    return int(row["id"])


def _range(task_id: int, first: datetime, last: datetime, **fields: object) -> SkippedRange:
    values: dict[str, object] = {
        "task_id": task_id,
        "trigger_position": 0,
        "reason": SkipReason.CATCHUP_NONE,
        "first": first,
        "last": last,
        "count": int((last - first) / SECOND) + 1,
        **fields,
    }
    return SkippedRange(**values)  # type: ignore[arg-type]


async def test_contiguous_drops_of_one_reason_grow_one_row(
    store: Database, db_conninfo: str
) -> None:
    task_id = await _task_id(store)
    start = NOW - timedelta(minutes=10)
    ticks = [_range(task_id, start, start + 9 * SECOND)]
    for tick in range(1, 50):  # each fire drops the next ten seconds
        first = start + tick * 10 * SECOND
        ticks.append(_range(task_id, first, first + 9 * SECOND, previous=first - SECOND))
    for skipped in ticks:
        await store.run(occurrences.record_skipped, [skipped])
    await store.run(occurrences.record_skipped, [ticks[0]])  # another coordinator, same drop
    assert SQL(db_conninfo).value("SELECT count(*) FROM hydra_skipped_occurrences") == 1
    inside = await store.run(occurrences.skipped_covering, task_id, start + 333 * SECOND)
    assert [(r.first, r.last, r.count) for r in inside] == [(start, start + 499 * SECOND, 500)]


async def test_a_new_reason_or_a_gap_starts_a_new_row(store: Database) -> None:
    task_id = await _task_id(store)
    start = NOW - timedelta(minutes=10)
    await store.run(
        occurrences.record_skipped,
        [
            _range(task_id, start, start + 9 * SECOND, count=None),
            _range(
                task_id,
                start + 10 * SECOND,
                start + 19 * SECOND,
                reason=SkipReason.STARTING_DEADLINE,
                previous=start + 9 * SECOND,
            ),
            _range(task_id, start + 30 * SECOND, start + 39 * SECOND, previous=start + 29 * SECOND),
        ],
    )
    found = [
        (await store.run(occurrences.skipped_covering, task_id, start + offset * SECOND))
        for offset in (5, 15, 25, 35)
    ]
    assert [[r.reason for r in f] for f in found] == [
        [SkipReason.CATCHUP_NONE],
        [SkipReason.STARTING_DEADLINE],
        [],
        [SkipReason.CATCHUP_NONE],
    ]
    assert found[0][0].count is None  # "too many to count" stays so


async def test_why_answers_for_an_occurrence_inside_a_range(store: Database) -> None:
    task_id = await _task_id(store)
    start = NOW - timedelta(days=30)
    await store.run(occurrences.record_skipped, [_range(task_id, start, NOW, count=None)])
    answer = await store.run(why.explain, "tick", start + timedelta(days=11, seconds=3), NOW)
    assert answer.run is None
    (fact,) = answer.facts
    assert fact.kind is FactKind.DROPPED
    assert fact.ids == {"reason": "catchup_none", "trigger": "0"}
    assert "one of many occurrence(s)" in fact.message


async def test_recording_returns_only_what_it_recorded(store: Database) -> None:
    task_id = await _task_id(store)
    start = NOW - timedelta(minutes=10)
    first = _range(task_id, start, start + 9 * SECOND)
    later = _range(task_id, start + 10 * SECOND, start + 19 * SECOND, previous=start + 9 * SECOND)
    assert await store.run(occurrences.record_skipped, [first]) == [first]
    assert await store.run(occurrences.record_skipped, [first]) == []  # recorded already
    assert await store.run(occurrences.record_skipped, [later]) == [later]  # extended
