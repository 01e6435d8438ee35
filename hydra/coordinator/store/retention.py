"""Pruning what is past retention (docs/retention.md), in small batches.

Every function works in the caller's transaction and deletes or locks at most
one batch: the pruner (``loops/pruner.py``) runs each in a transaction of its
own, after renewing its lease in it (``claim``).

Rows of other tables that belong to a run or to a task are deleted before it,
in ``delete_runs`` (the finished notifications of the outbox) and
``delete_tasks`` of queries.sql (skipped occurrences, late marks, notifications):
a new table keyed by run adds one line at the place marked "other tables", one
keyed by task a CTE in ``delete_tasks``; a table pruned by age alone (given
``max_age`` seconds and ``limit``) adds a function like
``delete_old_audit_entries`` and a drain of it in the pruner's ``_pass``; one
pruned by its task's ``max_age`` goes in ``delete_old_occurrence_records``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from hydra.coordinator.store.transaction import Transaction
from hydra.domain import Retention
from hydra.spec import parse_duration

#: The start of every scan: before any occurrence.
BEGINNING = datetime(1, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, kw_only=True, slots=True)
class Policy:
    """A task's effective retention, and who depends on its runs."""

    task_id: int
    name: str
    deleted: bool
    retention: Retention
    #: Live tasks that run after this one, and their upstreams (this one included).
    dependent_ids: tuple[int, ...] = ()
    upstream_ids: tuple[int, ...] = ()


@dataclass(frozen=True, kw_only=True, slots=True)
class Scan:
    """One batch of a scan over a task's runs in occurrence order."""

    #: The last occurrence read (None: nothing read), and how many runs were read.
    scanned_until: datetime | None
    scanned: int
    #: Scans across tasks: the id of the last run read (runs are read in (occurrence, id) order).
    scanned_id: str | None = None
    #: The runs locked for deletion (of themselves or of their output).
    run_ids: tuple[str, ...]
    #: Output scans: the first run read that has not ended long enough ago.
    pending_from: datetime | None = None


async def claim(tx: Transaction, holder: str, ttl: timedelta) -> bool:
    """Take or renew the pruner's lease; False while another coordinator holds it."""
    return await tx.one("claim_pruner", holder=holder, ttl=ttl) is not None


async def record_pass(tx: Transaction, holder: str, *, started_at: datetime, runs: int) -> None:
    """Record a finished pass and give the lease up."""
    await tx.execute("record_prune_pass", holder=holder, started_at=started_at, runs=runs)


async def policies(tx: Transaction, defaults: Retention) -> list[Policy]:
    """Every task's effective retention (deleted tasks too), its dependents and their upstreams."""
    rows = await tx.all("retention_policies")
    dependents = {int(row["id"]): tuple(row["dependent_ids"]) for row in rows}
    wanted = sorted({d for ids in dependents.values() for d in ids})
    upstreams = await _upstreams(tx, wanted)
    return [_policy(row, defaults, upstreams) for row in rows]


async def _upstreams(tx: Transaction, dependent_ids: Sequence[int]) -> dict[int, tuple[int, ...]]:
    """For each dependent, its upstreams."""
    found: dict[int, tuple[int, ...]] = {}
    if not dependent_ids:
        return found
    for row in await tx.all("upstreams_of", task_ids=list(dependent_ids)):
        dependent = int(row["dependent_id"])
        found[dependent] = (*found.get(dependent, ()), int(row["id"]))
    return found


def _policy(row: Mapping[str, Any], defaults: Retention, upstreams: Mapping[int, Any]) -> Policy:
    dependent_ids = tuple(int(d) for d in row["dependent_ids"])
    upstream_ids = {u for d in dependent_ids for u in upstreams.get(d, ())} - {int(row["id"])}
    return Policy(
        task_id=int(row["id"]),
        name=row["name"],
        deleted=bool(row["deleted"]),
        retention=stored_retention(row["retention"]).over(defaults),
        dependent_ids=dependent_ids,
        upstream_ids=tuple(sorted(upstream_ids)),
    )


def stored_retention(stored: Mapping[str, Any] | None) -> Retention:
    """The retention of a stored spec (canonical text); older versions have none."""
    if not stored:
        return Retention()
    return Retention(
        max_age=_stored_duration(stored.get("max_age"), "retention.max_age"),
        keep_last=stored.get("keep_last"),
        output_max_age=_stored_duration(stored.get("output_max_age"), "retention.output_max_age"),
    )


def _stored_duration(text: str | None, path: str) -> timedelta | None:
    return None if text is None else parse_duration(text, path)


async def tasks_with_old_runs(
    tx: Transaction, ages: Mapping[int, timedelta], after: Mapping[int, datetime]
) -> set[int]:
    """The tasks among `ages` with a run whose occurrence is older than their age
    (and later than their occurrence in `after`, if any)."""
    rows = await tx.all(
        "tasks_with_old_runs",
        task_ids=list(ages),
        max_ages=[age.total_seconds() for age in ages.values()],
        afters=[after.get(task_id, BEGINNING) for task_id in ages],
    )
    return {int(row["task_id"]) for row in rows}


#: Where a scan in (occurrence, id) order starts: before every run.
START = (BEGINNING, "ffffffff-ffff-ffff-ffff-ffffffffffff")


async def lock_prunable_runs(
    tx: Transaction, policies: Sequence[Policy], *, after: tuple[datetime, str], limit: int
) -> Scan:
    """Read the next `limit` runs after `after` (occurrence, id), oldest first across
    every task, that are older than the shortest max_age of `policies`; lock those
    that may be deleted. Every policy must have a max_age."""
    ages = [_max_age(policy) for policy in policies]
    dependents = [(p.task_id, d) for p in policies for d in p.dependent_ids]
    upstreams = [(p.task_id, u) for p in policies for u in p.upstream_ids]
    row = await tx.one(
        "lock_prunable_runs",
        task_ids=[p.task_id for p in policies],
        max_ages=ages,
        keep_lasts=[p.retention.keep_last or 0 for p in policies],
        protects=[not p.deleted for p in policies],
        dependent_of=[task for task, _ in dependents],
        dependent_ids=[dependent for _, dependent in dependents],
        upstream_of=[task for task, _ in upstreams],
        upstream_ids=[upstream for _, upstream in upstreams],
        after_occurrence=after[0],
        after_id=after[1],
        min_age=min(ages),
        limit=limit,
    )
    return _scan(row)


def _max_age(policy: Policy) -> float:
    assert policy.retention.max_age is not None, "runs kept forever are never scanned"
    return policy.retention.max_age.total_seconds()


async def lock_runs_with_old_output(
    tx: Transaction, policy: Policy, *, after: datetime | None, limit: int
) -> Scan:
    """Read the task's next `limit` runs that may have output past its max_age;
    lock those whose output may be deleted."""
    max_age = policy.retention.output_max_age
    assert max_age is not None, "output kept as long as its run is never scanned"
    row = await tx.one(
        "lock_runs_with_old_output",
        task_id=policy.task_id,
        after=after or BEGINNING,
        max_age=max_age.total_seconds(),
        limit=limit,
    )
    return _scan(row)


def _scan(row: Mapping[str, Any] | None) -> Scan:
    assert row is not None
    return Scan(
        scanned_until=row["scanned_until"],
        scanned=int(row["scanned"]),
        scanned_id=None if row.get("scanned_id") is None else str(row["scanned_id"]),
        run_ids=tuple(str(run_id) for run_id in row["run_ids"]),
        pending_from=row.get("pending_from"),
    )


async def delete_runs(tx: Transaction, run_ids: Sequence[str]) -> dict[str, int]:
    """Delete locked runs with every row that belongs to them; rows deleted, by table."""
    ids = list(run_ids)
    output = _deleted(await tx.one("delete_output_of_runs", run_ids=ids))
    attempts = _deleted(await tx.one("delete_attempts_of_runs", run_ids=ids))
    # Other tables keyed by run delete theirs here.
    notifications = _deleted(await tx.one("delete_notifications_of_runs", run_ids=ids))
    runs = _deleted(await tx.one("delete_runs", run_ids=ids))
    return {
        "runs": runs,
        "attempts": attempts,
        "output_chunks": output,
        "notifications": notifications,
    }


async def delete_output(tx: Transaction, run_ids: Sequence[str]) -> int:
    """Delete the output of locked runs; chunks deleted."""
    chunks = _deleted(await tx.one("delete_output_of_runs", run_ids=list(run_ids)))
    await tx.execute("forget_output_bytes", run_ids=list(run_ids))
    return chunks


async def delete_old_audit_entries(tx: Transaction, max_age: timedelta, limit: int) -> int:
    """Delete up to `limit` of the oldest audit entries past `max_age`."""
    seconds = max_age.total_seconds()
    return _deleted(await tx.one("delete_old_audit_entries", max_age=seconds, limit=limit))


async def delete_old_occurrence_records(
    tx: Transaction, ages: Mapping[int, timedelta], limit: int
) -> int:
    """Delete up to `limit` records about occurrences of the tasks in `ages` older
    than their age: ranges of dropped occurrences (``hydra_skipped_occurrences``)
    whose last one is older, then late marks (``hydra_late_occurrences``) found
    longer ago whose occurrence cannot be late again. Without them ``why`` says the
    record was pruned, as it does for a pruned run."""
    task_ids = list(ages)
    max_ages = [age.total_seconds() for age in ages.values()]
    skipped = _deleted(
        await tx.one(
            "delete_old_skipped_occurrences", task_ids=task_ids, max_ages=max_ages, limit=limit
        )
    )
    if skipped >= limit:
        return skipped
    late = await tx.one(
        "delete_old_late_marks", task_ids=task_ids, max_ages=max_ages, limit=limit - skipped
    )
    return skipped + _deleted(late)


async def delete_unused_versions(tx: Transaction, limit: int) -> int:
    """Delete up to `limit` old task versions no run points to."""
    return _deleted(await tx.one("delete_unused_versions", limit=limit))


async def delete_emptied_tasks(tx: Transaction, limit: int) -> int:
    """Delete up to `limit` deleted tasks that have no run left."""
    rows = await tx.all("lock_emptied_tasks", limit=limit)
    task_ids = [int(row["id"]) for row in rows]
    if not task_ids:
        return 0
    # Other tables keyed by task are deleted by delete_tasks itself, in one statement.
    return _deleted(await tx.one("delete_tasks", task_ids=task_ids))


def _deleted(row: Mapping[str, Any] | None) -> int:
    return int(row["deleted"]) if row is not None else 0
