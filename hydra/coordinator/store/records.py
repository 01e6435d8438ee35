"""Plain records passed between the store and the coordinator's loops."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from hydra.domain import (
    AttemptOutcome,
    LeaseKey,
    NotifyEvent,
    RunCause,
    Task,
    TaskSpec,
    TriggerKind,
    Webhook,
)
from hydra.occurrences import SkipReason

#: Runs due this soon may be leased already; the agent starts them at their time.
#: Long enough to cover leasing and the offer's trip, short enough that a run
#: created this early (by the trigger loop) is still, for people, created "at" its time.
LEASE_AHEAD = timedelta(milliseconds=50)


@dataclass(frozen=True, kw_only=True, slots=True)
class TriggerRow:
    """A trigger as stored for a task version."""

    position: int
    kind: TriggerKind
    spec: Mapping[str, Any]
    next_fire_at: datetime | None


@dataclass(frozen=True, kw_only=True, slots=True)
class Applied:
    """What applying a spec did: the task as it is now (or would be, for a dry run)."""

    task: Task
    changed: bool
    previous_version: int
    #: Time triggers the new version replaced or removed while they were behind
    #: (next fire time passed: the task paused, or every coordinator down).
    replaced: tuple[ReplacedTrigger, ...] = ()


@dataclass(frozen=True, kw_only=True, slots=True)
class ReplacedTrigger:
    """A time trigger a new version replaced before it caught up: its pending
    occurrences, from `next_fire_at` on, get no run."""

    task_id: int
    position: int
    #: The previous version's spec, which has the trigger at `position`.
    spec: TaskSpec
    next_fire_at: datetime


@dataclass(frozen=True, kw_only=True, slots=True)
class DueTrigger:
    """A time trigger whose next fire time has come, locked by this coordinator."""

    trigger_id: int
    task_id: int
    task_name: str
    task_version: int
    task_spec: TaskSpec
    position: int
    next_fire_at: datetime
    last_fired_at: datetime | None
    #: When the task was last paused and resumed (None: never, or not since).
    paused_at: datetime | None = None
    resumed_at: datetime | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class SkippedRange:
    """Contiguous occurrences of one trigger dropped for one reason (no run for any)."""

    task_id: int
    trigger_position: int
    reason: SkipReason
    first: datetime
    last: datetime
    #: Occurrences in [first, last]; None when too many to count cheaply.
    count: int | None
    detail: str = ""
    #: The trigger's last fired occurrence before `first`: a recorded range of the
    #: same reason ending there is extended instead of a new row (None: never).
    previous: datetime | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class FirePlan:
    """What to do with a due trigger: runs to create and where it goes next."""

    occurrences: tuple[datetime, ...]
    next_fire_at: datetime | None
    last_fired_at: datetime
    #: Occurrences that get no run, and why.
    skipped: tuple[SkippedRange, ...] = ()
    #: The first occurrence missed (dropped by the catch-up policy or
    #: starting_deadline, not by a pause), None if none was; `dropped` lists those found.
    missed_since: datetime | None = None
    dropped: tuple[datetime, ...] = ()


@dataclass(frozen=True, kw_only=True, slots=True)
class NewRun:
    """A run to create for (task, occurrence)."""

    task_id: int
    task_version: int
    spec: TaskSpec
    occurrence: datetime
    cause: RunCause
    params: Mapping[str, str] = field(default_factory=dict)
    idempotency_key: str | None = None
    #: Zone the occurrence is shown in to templates; see migration 0003.
    timezone: str = "UTC"


@dataclass(frozen=True, kw_only=True, slots=True)
class ClaimedRun:
    """A run just leased to an agent, with what is needed to render its command."""

    run_id: str
    lease_token: int
    task_name: str
    task_spec: TaskSpec
    occurrence: datetime
    params: Mapping[str, str]
    attempt: int
    upstream: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    timezone: str = "UTC"
    #: When the run is due; it may be leased up to `LEASE_AHEAD` earlier.
    not_before: datetime | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class AttemptStart:
    """An agent's report that it started an attempt under a lease."""

    run_id: str
    lease_token: int
    argv: tuple[str, ...]
    started_at: datetime


@dataclass(frozen=True, kw_only=True, slots=True)
class OutputTail:
    """The true end of one output stream of an attempt, as its agent reported it."""

    #: 1 stdout, 2 stderr.
    stream: int
    #: Bytes the process wrote to the stream in all.
    total_bytes: int
    #: The stream's last bytes.
    data: bytes


@dataclass(frozen=True, kw_only=True, slots=True)
class AttemptReport:
    """An agent's report that an attempt ended."""

    run_id: str
    lease_token: int
    agent_id: str
    outcome: AttemptOutcome
    argv: tuple[str, ...]
    started_at: datetime
    finished_at: datetime
    exit_code: int | None = None
    signal: int | None = None
    message: str = ""
    outputs_json: str = ""
    #: Empty from agents that send no tails (older ones).
    output_tails: tuple[OutputTail, ...] = ()


@dataclass(frozen=True, kw_only=True, slots=True)
class Heartbeat:
    """An agent was heard from, listing the leases it holds."""

    agent_id: str
    leases: tuple[LeaseKey, ...]
    draining: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class ReportVerdict:
    """Whether a report was accepted, and why not."""

    accepted: bool
    reason: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class OutputRecord:
    """One stored chunk of output."""

    seq: int
    attempt: int
    stream: int
    data: bytes
    #: Not zero: a marker, this many bytes of the stream were dropped here.
    dropped_bytes: int = 0


@dataclass(frozen=True, kw_only=True, slots=True)
class LeaseTimes:
    """Lease timing shared by the dispatcher, the stream handler and the reaper."""

    ttl: timedelta = timedelta(seconds=10)
    heartbeat_interval: timedelta = timedelta(seconds=2)
    kill_grace: timedelta = timedelta(seconds=10)


@dataclass(frozen=True, kw_only=True, slots=True)
class Outgoing:
    """A notification leased to this coordinator for delivery."""

    id: int
    event_id: str
    event: NotifyEvent
    webhook: Webhook
    #: The event as recorded, with the attempt it is about (exit code...) if any.
    payload: Mapping[str, Any]
    #: Tries made so far (by any coordinator).
    attempts: int
