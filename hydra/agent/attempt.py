"""The agent's own words for an attempt: what to run, how it ended.

These are plain values; ``hydra.agent.messages`` translates them to and from the
``hydra.v1`` messages, so no protobuf object travels past the stream handler.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType

from hydra.domain import DEFAULT_OUTPUT_LIMIT, AttemptOutcome

_EMPTY: Mapping[str, str] = MappingProxyType({})


class OutputStream(enum.StrEnum):
    """Which pipe output came from."""

    STDOUT = "STDOUT"
    STDERR = "STDERR"


@dataclass(frozen=True, kw_only=True, slots=True)
class AttemptSpec:
    """Everything needed to run one attempt, as rendered by the coordinator."""

    run_id: str
    task: str
    attempt: int
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    #: Variables whose values are secrets: variable name to secret name (read here).
    secret_env: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    #: Empty: the agent's working directory (with ``--run-as``, the attempt's own).
    workdir: str = ""
    #: None: no time limit.
    timeout: timedelta | None = None
    kill_grace: timedelta = timedelta(seconds=10)
    occurrence: datetime | None = None
    #: Bytes of output the coordinator keeps (see ``hydra.domain.output_budget``).
    output_limit: int = DEFAULT_OUTPUT_LIMIT


@dataclass(frozen=True, kw_only=True, slots=True)
class Started:
    """A process that was spawned."""

    pid: int
    started_at: datetime


@dataclass(frozen=True, kw_only=True, slots=True)
class StreamTail:
    """The true end of one output stream, sent with the attempt's end."""

    stream: OutputStream
    #: Bytes the process wrote to the stream in all.
    total_bytes: int
    #: The stream's last bytes: from offset ``total_bytes - len(data)`` on.
    data: bytes


@dataclass(frozen=True, kw_only=True, slots=True)
class AttemptResult:
    """How an attempt ended; becomes the ``AttemptFinished`` report."""

    outcome: AttemptOutcome
    argv: tuple[str, ...]
    finished_at: datetime
    #: None when the process never started.
    started_at: datetime | None = None
    exit_code: int | None = None
    signal: int | None = None
    message: str = ""
    outputs_json: str = ""
    #: The end of each stream that had output.
    output_tails: tuple[StreamTail, ...] = ()
