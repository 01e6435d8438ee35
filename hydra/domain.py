"""Domain types: what Hydra is about, free of wire and storage formats.

The run and attempt states are mirrored in ``proto/hydra/v1/types.proto`` and
in the PostgreSQL enums of the first migration; keep the three in step. The
attempt outcomes are mirrored in ``proto/hydra/v1/agent_service.proto``.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any, NamedTuple

_EMPTY: Mapping[str, str] = MappingProxyType({})


def _as_tuple(value: Any) -> Any:
    """A list as a tuple; anything else (a string included) unchanged."""
    return tuple(value) if isinstance(value, list | tuple) else value


def _as_dict(value: Any) -> Any:
    """A mapping as a plain dict copy, so later changes to the caller's object don't leak in."""
    return dict(value) if isinstance(value, Mapping) else value


def _normalize(obj: object, *, tuples: tuple[str, ...] = (), dicts: tuple[str, ...] = ()) -> None:
    """Normalize what SDK users pass to a frozen dataclass; validation is hydra.spec's job."""
    for name in tuples:
        object.__setattr__(obj, name, _as_tuple(getattr(obj, name)))
    for name in dicts:
        object.__setattr__(obj, name, _as_dict(getattr(obj, name)))


class RunState(enum.StrEnum):
    """State of a run; docs/architecture.md draws the transitions."""

    #: Waiting for an agent. Into: creation, LEASED (not ready, lease lost
    #: before start), RUNNING (retry allowed), FAILED/CANCELLED (retry request).
    QUEUED = "QUEUED"
    #: Leased, no attempt started. Into: QUEUED.
    LEASED = "LEASED"
    #: An attempt runs. Into: LEASED.
    RUNNING = "RUNNING"
    #: Terminal, at most once per run. Into: RUNNING.
    SUCCEEDED = "SUCCEEDED"
    #: Terminal. Into: RUNNING, LEASED.
    FAILED = "FAILED"
    #: Terminal. Into: QUEUED, LEASED, RUNNING.
    CANCELLED = "CANCELLED"
    #: Terminal, deliberately not run. Into: QUEUED, LEASED.
    SKIPPED = "SKIPPED"

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL_RUN_STATES

    @property
    def active(self) -> bool:
        return self in (RunState.LEASED, RunState.RUNNING)


_TERMINAL_RUN_STATES = frozenset(
    {RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED, RunState.SKIPPED}
)


class AttemptState(enum.StrEnum):
    """State of an attempt."""

    #: The process runs. Into: creation.
    RUNNING = "RUNNING"
    #: Exit code 0. Into: RUNNING.
    SUCCEEDED = "SUCCEEDED"
    #: Non-zero exit, signal, or spawn error. Into: RUNNING.
    FAILED = "FAILED"
    #: Killed after the timeout. Into: RUNNING.
    TIMED_OUT = "TIMED_OUT"
    #: Lease expired (agent dead or cut off). Into: RUNNING.
    LOST = "LOST"
    #: Killed by a cancel. Into: RUNNING.
    CANCELLED = "CANCELLED"


class Overlap(enum.StrEnum):
    """What happens when a task has max_active_runs active runs."""

    QUEUE = "queue"
    SKIP = "skip"
    REPLACE = "replace"


class Catchup(enum.StrEnum):
    """Which missed occurrences get runs."""

    NONE = "none"
    LATEST = "latest"
    ALL = "all"


class OnTimeout(enum.StrEnum):
    """What a run becomes when its preconditions time out."""

    FAIL = "fail"
    SKIP = "skip"


class LeaseKey(NamedTuple):
    """A lease: a run and its fencing token, which guards every change to the run."""

    run_id: str
    lease_token: int

    def __str__(self) -> str:
        return f"run={self.run_id} token={self.lease_token}"


#: Output kept per attempt unless configured (``hydra coordinator --output-limit``).
DEFAULT_OUTPUT_LIMIT = 1024 * 1024
#: Largest tail an agent sends with an attempt's end, whatever the limit, so that
#: the report stays far below the gRPC message limit.
MAX_OUTPUT_TAIL = 1024 * 1024


class OutputBudget(NamedTuple):
    """How an attempt's output limit is shared out."""

    #: Bytes kept as the output streams in (both streams together).
    head: int
    #: Bytes of the true end sent with the attempt's end (both streams together).
    tail: int


def output_budget(limit: int) -> OutputBudget:
    """The head and the tail of an output ``limit``: half each, the tail at most
    ``MAX_OUTPUT_TAIL``. Output that fits in ``limit`` is kept whole."""
    tail = min(max(limit, 0) // 2, MAX_OUTPUT_TAIL)
    return OutputBudget(head=max(limit, 0) - tail, tail=tail)


class AttemptOutcome(enum.StrEnum):
    """How an agent says an attempt ended (its report); the coordinator records it
    as the attempt's `AttemptState`."""

    #: Exit code 0.
    SUCCEEDED = "SUCCEEDED"
    #: Non-zero exit, a signal, a bad ``$HYDRA_OUTPUT``, or the process could not be spawned.
    FAILED = "FAILED"
    #: Killed after the task's timeout.
    TIMED_OUT = "TIMED_OUT"
    #: Killed because the run was cancelled (or its agent was stopped).
    CANCELLED = "CANCELLED"
    #: Killed by its agent, which could not renew the lease: recorded as LOST.
    FENCED = "FENCED"

    @property
    def attempt_state(self) -> AttemptState:
        """The state the attempt is recorded in."""
        return AttemptState.LOST if self is AttemptOutcome.FENCED else AttemptState(self.value)


class RunCause(enum.StrEnum):
    """Why a run was created (stored in ``hydra_runs.cause``)."""

    CRON = "cron"
    INTERVAL = "interval"
    AT = "at"
    #: Its upstreams succeeded for the occurrence.
    AFTER = "after"
    #: `Trigger` (hydractl run).
    MANUAL = "manual"
    BACKFILL = "backfill"

    @property
    def scheduled(self) -> bool:
        """Whether the overlap policy applies (manual runs and backfills always queue)."""
        return self not in (RunCause.MANUAL, RunCause.BACKFILL)


class TriggerKind(enum.StrEnum):
    """The kind of a trigger (stored in ``hydra_triggers.kind``)."""

    CRON = "cron"
    INTERVAL = "interval"
    AT = "at"
    AFTER = "after"

    @classmethod
    def of(cls, trigger: Trigger) -> TriggerKind:
        """The kind of a trigger of a spec."""
        return _TRIGGER_KINDS[type(trigger)]

    @property
    def cause(self) -> RunCause:
        """The cause of the runs a trigger of this kind creates."""
        return RunCause(self.value)


class Role(enum.StrEnum):
    """What a credential may do (docs/security.md, the role table). Each role may
    do everything the one before it may, except AGENT, which may only connect."""

    VIEWER = "viewer"  # get, list, watch, logs, cluster status
    OPERATOR = "operator"  # + trigger, retry, cancel, pause, resume, backfill, drain
    ADMIN = "admin"  # + apply, delete, credentials, audit
    AGENT = "agent"  # Connect only, as the agent id its credential names

    def includes(self, needed: Role) -> bool:
        """True if this role may make a call that needs `needed`."""
        if self is Role.AGENT or needed is Role.AGENT:
            return self is needed
        order = (Role.VIEWER, Role.OPERATOR, Role.ADMIN)
        return order.index(self) >= order.index(needed)


# --- triggers -----------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class Cron:
    """A cron schedule: 5 fields, or 6 with seconds first, in an IANA zone."""

    expression: str
    timezone: str = "UTC"


@dataclass(frozen=True, kw_only=True, slots=True)
class Interval:
    """Every ``every``, counted from ``anchor`` (default: when first applied)."""

    every: timedelta
    anchor: datetime | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class At:
    """One instant."""

    at: datetime


@dataclass(frozen=True, kw_only=True, slots=True)
class After:
    """Runs once every listed task succeeded for the same occurrence."""

    tasks: tuple[str, ...]

    def __post_init__(self) -> None:
        _normalize(self, tuples=("tasks",))


Trigger = Cron | Interval | At | After
#: A trigger that fires at instants of its own (every kind but `after`).
TimeTrigger = Cron | Interval | At

_TRIGGER_KINDS: Mapping[type, TriggerKind] = {
    Cron: TriggerKind.CRON,
    Interval: TriggerKind.INTERVAL,
    At: TriggerKind.AT,
    After: TriggerKind.AFTER,
}


# --- preconditions ------------------------------------------------------------

DEFAULT_CHECK_TIMEOUT = timedelta(seconds=10)
#: Longest timeout of one check: a check that may take longer is a job, not a check
#: (and an agent holds a slot and a connection or a thread for as long as it runs).
MAX_CHECK_TIMEOUT = timedelta(minutes=10)


@dataclass(frozen=True, kw_only=True, slots=True)
class CommandCheck:
    """Ready when the command exits 0."""

    argv: tuple[str, ...]
    timeout: timedelta = DEFAULT_CHECK_TIMEOUT

    def __post_init__(self) -> None:
        _normalize(self, tuples=("argv",))


@dataclass(frozen=True, kw_only=True, slots=True)
class FileCheck:
    """Ready when the file exists, and is at least ``min_age`` old."""

    path: str
    min_age: timedelta | None = None
    timeout: timedelta = DEFAULT_CHECK_TIMEOUT


@dataclass(frozen=True, kw_only=True, slots=True)
class HttpCheck:
    """Ready when GET answers 2xx."""

    url: str
    timeout: timedelta = DEFAULT_CHECK_TIMEOUT


@dataclass(frozen=True, kw_only=True, slots=True)
class TcpCheck:
    """Ready when a TCP connection succeeds."""

    host: str
    port: int
    timeout: timedelta = DEFAULT_CHECK_TIMEOUT


Precondition = CommandCheck | FileCheck | HttpCheck | TcpCheck


# --- policies -----------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class Retry:
    """How failed attempts are retried: exponential backoff, capped.

    The delay itself is computed in SQL, by the store's ``fail_or_requeue_run`` query.
    """

    max_attempts: int = 1
    backoff: timedelta = timedelta(seconds=30)
    max_backoff: timedelta = timedelta(minutes=10)
    multiplier: float = 2.0


@dataclass(frozen=True, kw_only=True, slots=True)
class Concurrency:
    """How many runs of a task may be active at once, and what happens beyond."""

    max_active_runs: int = 1
    overlap: Overlap = Overlap.QUEUE


@dataclass(frozen=True, kw_only=True, slots=True)
class Retention:
    """How long a task's finished runs are kept (docs/retention.md); ``None`` = the
    cluster's default (``hydra coordinator --retention``).

    A finished run is pruned once it ended more than ``max_age`` ago and is not one
    of the task's ``keep_last`` newest runs. Its output may go sooner: once the run
    ended more than ``output_max_age`` ago.
    """

    max_age: timedelta | None = None
    keep_last: int | None = None
    output_max_age: timedelta | None = None

    def over(self, defaults: Retention) -> Retention:
        """This retention, with ``defaults`` where it says nothing."""
        return Retention(
            max_age=self.max_age if self.max_age is not None else defaults.max_age,
            keep_last=self.keep_last if self.keep_last is not None else defaults.keep_last,
            output_max_age=(
                self.output_max_age if self.output_max_age is not None else defaults.output_max_age
            ),
        )


# --- task ---------------------------------------------------------------------

#: What a secret's name may be: a file name in an agent's secrets directory
#: (``.`` and ``..`` excepted).
SECRET_NAME_PATTERN = r"[A-Za-z0-9._-]{1,128}"
_SECRET_NAME = re.compile(SECRET_NAME_PATTERN)


@dataclass(frozen=True, kw_only=True, slots=True)
class SecretRef:
    """An env value that is a secret, by name: ``env: {DB_PASSWORD: {secret: warehouse-db}}``.

    Coordinators store and send the name only; the agent that runs the attempt
    reads the value from the file of that name in its secrets directory
    (``--secrets-dir``) and masks it in the output it reports.
    """

    name: str


def secret_name_problem(name: str) -> str | None:
    """What is wrong with a secret's name, or None if it is a valid one."""
    if _SECRET_NAME.fullmatch(name) and name not in (".", ".."):
        return None
    shown = name if len(name) <= 40 else f"{name[:40]}..."
    return f"{shown!r} is not a secret name; use 1-128 characters of [A-Za-z0-9._-], not . or .."


class NotifyEvent(enum.StrEnum):
    """What a webhook can be told of (``notify[].on``); docs/alerting.md has the rules."""

    #: The run failed with no attempts left.
    FAILED = "failed"
    SUCCEEDED = "succeeded"
    #: An attempt failed (or was lost) and the run is queued again.
    RETRYING = "retrying"
    #: The run was skipped (overlap, an upstream that did not succeed, on_timeout skip).
    SKIPPED = "skipped"
    #: Occurrence + ``deadline`` passed and the run had not succeeded (once per occurrence).
    LATE = "late"
    #: Occurrences dropped by the catch-up policy or ``starting_deadline``.
    MISSED = "missed"


@dataclass(frozen=True, kw_only=True, slots=True)
class Webhook:
    """Where to POST an event: ``notify: [{on: [failed], webhook: URL, ...}]``.

    The URL and header values may be secret references: a coordinator reads them
    from its secrets directory (``--secrets-dir``) when it delivers, so no secret is
    stored. ``body`` is a template over the event (docs/alerting.md); empty, the
    event's JSON is sent. With ``sign``, the body is signed with HMAC-SHA256 under
    that secret (the ``Hydra-Signature`` header).
    """

    on: tuple[NotifyEvent, ...]
    url: str | SecretRef
    headers: Mapping[str, str | SecretRef] = field(default_factory=lambda: _EMPTY)
    body: str = ""
    sign: SecretRef | None = None

    def __post_init__(self) -> None:
        _normalize(self, tuples=("on",), dicts=("headers",))


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskSpec:
    """Everything a user says about a task; applying a changed one makes a new version."""

    name: str
    command: tuple[str, ...]
    description: str = ""
    shell: bool = False
    #: Plain values are templated per run; a ``SecretRef`` is resolved on the agent.
    env: Mapping[str, str | SecretRef] = field(default_factory=lambda: _EMPTY)
    params: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    workdir: str = ""
    timeout: timedelta | None = None
    retry: Retry = field(default_factory=Retry)
    triggers: tuple[Trigger, ...] = ()
    preconditions: tuple[Precondition, ...] = ()
    poke_interval: timedelta = timedelta(seconds=60)
    precondition_timeout: timedelta | None = None
    on_timeout: OnTimeout = OnTimeout.FAIL
    selector: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    concurrency: Concurrency = field(default_factory=Concurrency)
    catchup: Catchup = Catchup.LATEST
    max_catchup: int = 100
    starting_deadline: timedelta | None = None
    #: Webhooks to tell of this task's events; empty: the cluster's defaults.
    notify: tuple[Webhook, ...] = ()
    #: A run must have succeeded by its occurrence + this, else it is ``late``.
    deadline: timedelta | None = None
    retention: Retention = field(default_factory=Retention)

    @property
    def timezone(self) -> str:
        """The zone this task's occurrences are shown in: its first cron trigger's, else UTC."""
        return next((t.timezone or "UTC" for t in self.triggers if isinstance(t, Cron)), "UTC")

    @property
    def plain_env(self) -> dict[str, str]:
        """The env variables with plain (templated) values."""
        return {key: value for key, value in self.env.items() if not isinstance(value, SecretRef)}

    @property
    def secret_env(self) -> dict[str, str]:
        """The env variables that are secrets: variable name to secret name."""
        return {key: value.name for key, value in self.env.items() if isinstance(value, SecretRef)}

    def __post_init__(self) -> None:
        _normalize(
            self,
            tuples=("command", "triggers", "preconditions", "notify"),
            dicts=("env", "params", "selector"),
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class Task:
    """A registered task at its current version."""

    name: str
    version: int
    paused: bool
    spec: TaskSpec
    created_at: datetime
    updated_at: datetime
    next_fire_at: datetime | None = None
    #: The spec's retention over the cluster's defaults (filled by TaskService.Get).
    effective_retention: Retention | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskVersion:
    """One stored version of a task's spec."""

    version: int
    spec: TaskSpec
    created_at: datetime


# --- runs ---------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class Attempt:
    """One try of a run on one agent."""

    number: int
    state: AttemptState
    agent: str
    argv: tuple[str, ...]
    lease_token: int
    started_at: datetime
    finished_at: datetime | None = None
    exit_code: int | None = None
    signal: int | None = None
    message: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class PreconditionVerdict:
    """How one precondition was found when an agent last evaluated it."""

    index: int
    ready: bool
    message: str = ""
    checked_at: datetime | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Run:
    """One execution of a task for one occurrence."""

    id: str
    task: str
    task_version: int
    occurrence: datetime
    state: RunState
    cause: str
    created_at: datetime
    not_before: datetime
    params: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    attempts_used: int = 0
    max_attempts: int = 1
    reason: str = ""
    agent: str = ""
    attempts: tuple[Attempt, ...] = ()
    outputs_json: str = ""
    idempotency_key: str = ""
    precondition_checks: int = 0
    precondition_verdicts: tuple[PreconditionVerdict, ...] = ()
    first_checked_at: datetime | None = None


#: What an agent id may be: a host name fits (letters, digits, '.', '-', '_'); no ':',
#: which joins ids in messages and commands.
AGENT_ID_PATTERN = r"[A-Za-z0-9._-]{1,128}"
_AGENT_ID = re.compile(AGENT_ID_PATTERN)


def agent_id_problem(agent_id: str) -> str | None:
    """What is wrong with an agent id, or None if it is a valid one."""
    if _AGENT_ID.fullmatch(agent_id):
        return None
    shown = agent_id if len(agent_id) <= 40 else f"{agent_id[:40]}..."
    return f"{shown!r} is not an agent id; use 1-128 characters of [A-Za-z0-9._-]"


@dataclass(frozen=True, kw_only=True, slots=True)
class Agent:
    """An execution host's agent as the cluster knows it."""

    id: str
    hostname: str
    labels: Mapping[str, str]
    capacity: int
    version: str
    state: str
    coordinator: str
    connected_at: datetime | None
    last_seen_at: datetime | None
    active_runs: int = 0


@dataclass(frozen=True, kw_only=True, slots=True)
class Coordinator:
    """A coordinator that recorded itself alive."""

    id: str
    address: str
    version: str
    started_at: datetime
    last_heartbeat_at: datetime
    agents_connected: int = 0
    #: Started with --insecure: serves without authentication.
    insecure: bool = False
    #: Serves TLS.
    tls: bool = False


# --- the audit log ------------------------------------------------------------

#: The outcome of a call that did what it was asked.
AUDIT_OK = "OK"


@dataclass(frozen=True, kw_only=True, slots=True)
class AuditEntry:
    """One line of the audit log: a call that changed something, failed to, or was
    refused (docs/security.md)."""

    #: The credential's name ("anonymous" without authentication; "" when the
    #: caller presented no known credential) and its role then.
    who: str
    role: str
    #: The call, as Service/Method ("TaskService/Apply").
    action: str
    task: str | None = None
    run_id: str | None = None
    #: The caller's address as gRPC reports it ("ipv4:127.0.0.1:53412").
    peer: str = ""
    #: AUDIT_OK, or the gRPC status code name of a failed or refused call.
    outcome: str = AUDIT_OK
    #: A few words: "version 3", "run <id>", or a failed call's message.
    detail: str = ""
    #: When it was recorded (its transaction's time); None until it is stored.
    at: datetime | None = None
    #: Its place in the log, in order of recording; None until it is stored.
    id: int | None = None


# --- notifications ------------------------------------------------------------


class NotificationState(enum.StrEnum):
    """Where one event's delivery to one webhook is (``hydra_notifications.state``)."""

    #: Not delivered yet. Into: creation.
    PENDING = "pending"
    #: The receiver answered 2xx. Final. Into: PENDING.
    DELIVERED = "delivered"
    #: Every try failed, or the body could not be rendered. Final. Into: PENDING.
    FAILED = "failed"


@dataclass(frozen=True, kw_only=True, slots=True)
class Notification:
    """One event for one webhook, as the outbox holds it."""

    id: int
    #: The same for every webhook the event goes to; sent as ``Hydra-Event-Id``.
    event_id: str
    event: NotifyEvent
    task: str
    occurrence: datetime
    #: Position of the webhook in the task's ``notify`` (or the cluster's defaults).
    webhook: int
    from_defaults: bool
    #: The URL, or ``{secret: NAME}`` for a secret one.
    url: str
    state: NotificationState
    attempts: int
    created_at: datetime
    run_id: str | None = None
    last_error: str = ""
    finished_at: datetime | None = None


# --- credentials --------------------------------------------------------------

_CREDENTIAL_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")


def credential_name_problem(name: str) -> str | None:
    """What is wrong with a credential name, or None if it is a valid one."""
    if _CREDENTIAL_NAME.fullmatch(name):
        return None
    shown = name if len(name) <= 40 else f"{name[:40]}..."
    return f"{shown!r} is not a credential name; use 1-64 characters of [A-Za-z0-9._-]"


@dataclass(frozen=True, kw_only=True, slots=True)
class Credential:
    """A credential as stored: never its secret, only who it stands for."""

    name: str
    role: Role
    #: Task-name prefix every call is limited to; "" means every task.
    scope: str = ""
    #: Agent credentials: the one agent id it may connect as.
    agent_id: str | None = None
    #: Agent credentials: the labels its agent must announce (None: any).
    labels: Mapping[str, str] | None = None
    #: Agent credentials: the most capacity its agent may announce (None: any).
    max_capacity: int | None = None
    created_by: str = ""
    created_at: datetime | None = None
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None

    def __post_init__(self) -> None:
        _normalize(self, dicts=("labels",))


@dataclass(frozen=True, kw_only=True, slots=True)
class NewCredential:
    """A credential just created, with its secret: the only time the secret is known."""

    credential: Credential
    secret: str
