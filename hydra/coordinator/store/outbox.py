"""The outbox of notifications (``hydra_notifications``), in the caller's transaction.

Run events (succeeded, failed, retrying, skipped) are recorded by the trigger of
migration 0009 in the transaction that changes the run; ``missed`` by the trigger
loop's fire (:func:`occurrences_missed`), ``late`` by the deadline loop
(:func:`record_late`). Deliveries claim rows with a lease (:func:`claim`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from psycopg.types.json import Jsonb

from hydra.coordinator.store.records import DueTrigger, Outgoing
from hydra.coordinator.store.transaction import Row, Transaction
from hydra.domain import Notification, NotificationState, NotifyEvent, Webhook
from hydra.spec import webhook_to_dict, webhooks_from_list

#: Missed occurrences listed in one missed event (the count is always exact for those listed).
MAX_LISTED_MISSED = 100


async def write_defaults(tx: Transaction, webhooks: Sequence[Webhook], written_by: str) -> None:
    """Store the cluster's default webhooks (for tasks whose ``notify`` is empty)."""
    shapes = [webhook_to_dict(webhook) for webhook in webhooks]
    await tx.execute("write_notify_defaults", webhooks=Jsonb(shapes), written_by=written_by)


async def occurrences_missed(
    tx: Transaction, due: DueTrigger, dropped: Sequence[datetime], since: datetime
) -> None:
    """Record the ``missed`` event of a trigger's fire that dropped occurrences.

    Args:
        dropped: The occurrences found and dropped (catch-up policy, starting_deadline).
        since: The first occurrence missed (the trigger's next fire time): older
            ones than those in `dropped` may have been missed without being listed.
    """
    listed = sorted(dropped)[-MAX_LISTED_MISSED:]
    payload = {
        "task": due.task_name,
        "run_id": None,
        "occurrence": since.isoformat(),
        "missed_since": since.isoformat(),
        "missed_until": listed[-1].isoformat() if listed else None,
        "missed_occurrences": [occurrence.isoformat() for occurrence in listed],
        "catchup": due.task_spec.catchup.value,
        "reason": _missed_reason(due),
    }
    await tx.execute(
        "record_missed_event",
        task_id=due.task_id,
        task_version=due.task_version,
        position=due.position,
        occurrence=since,
        payload=Jsonb(payload),
    )


def _missed_reason(due: DueTrigger) -> str:
    spec = due.task_spec
    if spec.starting_deadline is None:
        return f"catchup {spec.catchup.value}"
    return f"catchup {spec.catchup.value} or starting_deadline"


async def record_late(tx: Transaction, now: datetime, limit: int) -> int:
    """Record the ``late`` event of each occurrence whose deadline passed before `now`
    without a success, once; returns how many occurrences were found late."""
    rows = await tx.all("record_late_events", now=now, limit=limit)
    return len(rows)


async def claim(tx: Transaction, owner: str, lease: timedelta, limit: int) -> list[Outgoing]:
    """Lease up to `limit` pending, due notifications to `owner` for `lease`."""
    rows = await tx.all("claim_notifications", owner=owner, lease=lease, limit=limit)
    return [_outgoing(row) for row in rows]


def _outgoing(row: Row) -> Outgoing:
    payload: dict[str, Any] = dict(row["payload"])
    payload.update(row["attempt"] or {})
    return Outgoing(
        id=row["id"],
        event_id=str(row["event_id"]),
        event=NotifyEvent(row["event"]),
        webhook=webhooks_from_list([row["target"]])[0],
        payload=payload,
        attempts=row["attempts"],
    )


async def record_try(
    tx: Transaction, outgoing: Outgoing, owner: str, attempts: int, error: str, lease: timedelta
) -> None:
    """Count a failed try (the notification stays pending, its lease extended)."""
    tx.metrics.notification("retried")
    await tx.execute(
        "record_notification_try",
        id=outgoing.id,
        owner=owner,
        attempts=attempts,
        error=error,
        lease=lease,
    )


async def finish(
    tx: Transaction, outgoing: Outgoing, state: NotificationState, attempts: int, error: str = ""
) -> None:
    """Record a notification delivered or failed for good."""
    tx.metrics.notification(state.value)
    await tx.execute(
        "finish_notification", id=outgoing.id, state=state.value, attempts=attempts, error=error
    )


async def release(tx: Transaction, owner: str, ids: Sequence[int]) -> None:
    """Give back the leases of notifications a stopping coordinator did not finish."""
    if ids:
        await tx.execute("release_notifications", owner=owner, ids=list(ids))


async def list_notifications(
    tx: Transaction, *, task: str, prefix: str, state: str, before: int | None, limit: int
) -> list[Notification]:
    """A page of notifications, newest first: of `task` ('' for any) under `prefix`,
    in `state` ('' for any), older than the id `before`."""
    rows = await tx.all(
        "list_notifications", task=task, prefix=prefix, state=state, before=before, limit=limit
    )
    return [_notification(row) for row in rows]


def _notification(row: Row) -> Notification:
    url = row["target"]["webhook"]
    return Notification(
        id=row["id"],
        event_id=str(row["event_id"]),
        event=NotifyEvent(row["event"]),
        task=row["task"],
        run_id=None if row["run_id"] is None else str(row["run_id"]),
        occurrence=row["occurrence"],
        webhook=row["webhook"],
        from_defaults=row["from_defaults"],
        url=url if isinstance(url, str) else f"{{secret: {url['secret']}}}",
        state=NotificationState(row["state"]),
        attempts=row["attempts"],
        last_error=row["last_error"],
        created_at=row["created_at"],
        finished_at=row["finished_at"],
    )
