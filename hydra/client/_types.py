"""Result types of the client that have no counterpart in :mod:`hydra.domain`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal, NamedTuple

from hydra.domain import Agent, Coordinator, Run, Task, TaskVersion

#: Which output stream of the process a log chunk came from.
StreamName = Literal["stdout", "stderr"]


@dataclass(frozen=True, kw_only=True, slots=True)
class LogChunk:
    """A piece of a run's output, as the process wrote it."""

    #: Attempt number (1-based) that wrote it.
    attempt: int
    #: ``"stdout"`` or ``"stderr"``.
    stream: StreamName
    #: The raw bytes.
    data: bytes
    #: Not zero: a marker, not output: this many bytes of the stream were dropped
    #: here, between the head and the tail kept (``data`` is then empty).
    dropped_bytes: int = 0


@dataclass(frozen=True, kw_only=True, slots=True)
class ApplyResult:
    """What applying one spec did (or, with ``dry_run``, would do)."""

    #: The task as stored, or as it would be stored.
    task: Task
    #: True when a new task or a new version was (or would be) created.
    changed: bool
    #: The version before this apply; 0 when the task is new.
    previous_version: int

    @property
    def action(self) -> Literal["created", "updated", "unchanged"]:
        """``created``, ``updated`` or ``unchanged``, for people."""
        if not self.changed:
            return "unchanged"
        return "created" if self.previous_version == 0 else "updated"


class TaskDetails(NamedTuple):
    """A task with its version history (empty unless it was asked for)."""

    #: The task at its current version.
    task: Task
    #: Every version, newest first, when ``include_versions`` was set.
    versions: list[TaskVersion]


@dataclass(frozen=True, kw_only=True, slots=True)
class BackfillResult:
    """What a backfill covered and created."""

    #: Every occurrence of the task's time triggers in the range.
    occurrences: list[datetime]
    #: Runs created (none with ``dry_run``).
    created: list[Run]
    #: Occurrences that already had a run and were left alone.
    existing: int


@dataclass(frozen=True, kw_only=True, slots=True)
class ClusterStatus:
    """Live coordinators and connected agents, as one coordinator sees them."""

    coordinators: tuple[Coordinator, ...]
    agents: tuple[Agent, ...]
    answered_by: str
