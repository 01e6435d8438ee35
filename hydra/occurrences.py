"""What became of an occurrence: the record of one that got no run, and the
answer to "why" (``hydractl why``, ``Client.why``), as plain types shared by the
coordinator, which records and explains, and the client, which renders.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType

from hydra.domain import After, At, Cron, Interval, Run, Trigger

_NO_IDS: Mapping[str, str] = MappingProxyType({})


class SkipReason(enum.StrEnum):
    """Why an occurrence of a trigger got no run (``hydra_skipped_occurrences.reason``)."""

    #: Found later than the misfire grace (an outage) with ``catchup: none``.
    CATCHUP_NONE = "catchup_none"
    #: Older than the newest missed occurrence, with ``catchup: latest``.
    CATCHUP_LATEST = "catchup_latest"
    #: Older than the newest ``max_catchup`` missed ones, with ``catchup: all``.
    MAX_CATCHUP = "max_catchup"
    #: Found later than ``starting_deadline`` after its time.
    STARTING_DEADLINE = "starting_deadline"
    #: Fell while the task was paused (dropped at resume, or by the catch-up
    #: policy after it; the detail says which).
    PAUSED = "paused"
    #: Pending when a new version of the task changed or removed the trigger.
    TRIGGER_CHANGED = "trigger_changed"


class FactKind(enum.StrEnum):
    """What a fact of an explanation is about."""

    #: The occurrence has a run: its id, state and cause.
    RUN = "run"
    #: An attempt and how it ended (or that it runs): number, agent, exit code.
    ATTEMPT = "attempt"
    #: Queued again after a failed attempt: attempt n of m, next at.
    RETRYING = "retrying"
    #: Gated by its preconditions: their last verdicts.
    PRECONDITION = "precondition"
    #: Behind max_active_runs: the runs holding the task's slots.
    OVERLAP = "overlap"
    #: Due, and no connected agent with free slots matches its selector.
    AGENT = "agent"
    #: Not dispatched before a time (a poke interval, a backoff).
    NOT_BEFORE = "not_before"
    #: An upstream (``after``) run of the occurrence and its state.
    UPSTREAM = "upstream"
    #: Why the run ended as it did (its stored reason).
    REASON = "reason"
    #: No run: the occurrence was dropped, and why (the skip record).
    DROPPED = "dropped"
    #: No run: no trigger of the task fires at this instant.
    NOT_AN_OCCURRENCE = "not_an_occurrence"
    #: No run yet: the trigger has not reached the occurrence.
    NOT_DUE = "not_due"
    #: No run: the occurrence is before the task was created.
    BEFORE_TASK = "before_task"
    #: The task is paused.
    PAUSED = "paused"
    #: No run and no record of one (e.g. before records were kept, or pruned).
    UNKNOWN = "unknown"


@dataclass(frozen=True, kw_only=True, slots=True)
class Fact:
    """One thing known about an occurrence: a kind, a sentence for people, and the
    ids it names (``run_id``, ``agent_id``, ``upstream_run_id``, ...)."""

    kind: FactKind
    message: str
    ids: Mapping[str, str] = field(default_factory=lambda: _NO_IDS)


@dataclass(frozen=True, kw_only=True, slots=True)
class Explanation:
    """The answer to "why" for one occurrence of one task."""

    task: str
    occurrence: datetime
    #: The run of the occurrence, with its attempts; None when it has none.
    run: Run | None
    facts: tuple[Fact, ...]


def describe_trigger(trigger: Trigger) -> str:
    """A trigger as people write it: "cron '0 2 * * *' UTC", "interval 0:15:00", ..."""
    if isinstance(trigger, Cron):
        return f"cron {trigger.expression!r} {trigger.timezone or 'UTC'}"
    if isinstance(trigger, Interval):
        return f"interval {trigger.every}"
    if isinstance(trigger, At):
        return f"at {trigger.at.isoformat()}"
    assert isinstance(trigger, After)
    return f"after {', '.join(trigger.tasks)}"
