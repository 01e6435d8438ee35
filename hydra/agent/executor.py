"""Runs one attempt's process and says how it ended.

The process is the leader of a new session, so the attempt owns a process
group: timeouts, cancels, fencing and revocations signal the whole group
(SIGTERM, ``kill_grace``, SIGKILL), and nothing in the group outlives the
attempt. A process that leaves the group on purpose (``setsid``) escapes this;
only cgroups could follow it.

When the leader exits on its own, stray members of its group may still hold
the output pipes. They get ``PIPE_DRAIN_SECONDS`` to finish writing, then
whatever is left of the group is killed with SIGKILL and reading stops, so a
forgotten ``daemon &`` can neither hang the attempt nor leak a process.

Spawning costs no thread: the event loop watches the process (see
:mod:`hydra.agent.process`), and ``$HYDRA_OUTPUT`` is a file in a directory of
the attempt's own (:class:`~hydra.agent.output.OutputsDirectory`), handled on
the event loop. Its size is checked every ``OUTPUTS_POLL_SECONDS`` while the
attempt runs: past ``MAX_OUTPUTS_BYTES`` the file is emptied and the group
killed at once (SIGKILL), so a runaway write holds memory for at most one
poll interval (what the process writes in that time is the overshoot).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from hydra.agent.attempt import AttemptResult, AttemptSpec, Started
from hydra.agent.isolation import Isolation
from hydra.agent.masking import OutputMasker, mask_outputs
from hydra.agent.output import (
    MAX_OUTPUTS_BYTES,
    OUTPUTS_EXCEEDED,
    OutputBatcher,
    OutputRecorder,
    OutputsDirectory,
    OutputsError,
    OutputSink,
    discard_outputs,
    outputs_size,
    read_outputs,
)
from hydra.agent.process import (
    POLL_SECONDS,
    Process,
    group_alive,
    signal_group,
    spawn,
    terminate_group,
)
from hydra.agent.secrets import SecretError, resolve_secrets
from hydra.domain import AttemptOutcome, output_budget
from hydra.spec import format_duration

log = logging.getLogger("hydra.agent")

#: How long stray group members may keep the pipes open after the leader exits.
PIPE_DRAIN_SECONDS = 1.0
#: How much earlier than a start time the timer aims (see Execution._wait_until).
_TIMER_SLACK_SECONDS = 0.001
#: How often a running attempt's ``$HYDRA_OUTPUT`` is measured.
OUTPUTS_POLL_SECONDS = 0.1
#: The agent's own user, the default allow-listed environment, no secrets.
NO_ISOLATION = Isolation()


@dataclass(frozen=True, slots=True)
class _KillRequest:
    outcome: AttemptOutcome
    message: str


class Execution:
    """One attempt's process: spawn, stream output, enforce the timeout, report.

    Usage::

        execution = Execution(spec, on_output=sink, outputs=directory)
        started = await execution.start()  # None: it could not start
        result = await execution.wait()  # always an AttemptResult

    Output passes a masker (the attempt's secret values become ``***``), then a
    batcher, then the recorder that sends it and keeps its tails.
    """

    def __init__(
        self,
        spec: AttemptSpec,
        on_output: OutputSink,
        outputs: OutputsDirectory,
        isolation: Isolation = NO_ISOLATION,
    ) -> None:
        self._spec = spec
        self._outputs = outputs
        self._isolation = isolation
        self._recorder = OutputRecorder(on_output, output_budget(spec.output_limit))
        self._batcher = OutputBatcher(self._recorder.add)
        self._masker = OutputMasker((), self._batcher.add)
        self._secrets: dict[str, bytes] = {}
        self._outputs_exceeded = False
        self._started: Started | None = None
        self._failed_start: AttemptResult | None = None
        self._supervisor: asyncio.Task[AttemptResult] | None = None
        self._kill: _KillRequest | None = None
        self._kill_requested = asyncio.Event()
        self._kill_now = asyncio.Event()

    @property
    def spec(self) -> AttemptSpec:
        """What this execution runs."""
        return self._spec

    @property
    def started(self) -> Started | None:
        """The spawned process, if it was spawned."""
        return self._started

    @property
    def killing(self) -> bool:
        """A kill was asked for."""
        return self._kill is not None

    def stop_live_output(self) -> None:
        """Streams no more output (the stream it went to broke); the end still has the tail."""
        self._recorder.stop_live()

    async def start(self, *, at: float | None = None) -> Started | None:
        """Spawns the process; None if it could not start (``wait`` then says why).

        With ``at`` (on ``time.monotonic()``), it first waits until then; a kill
        meanwhile ends the attempt before anything was spawned.
        """
        if self._started is not None or self._failed_start is not None:
            raise RuntimeError("an Execution starts once")
        if at is not None:
            await self._wait_until(at)
        if self._kill is not None:
            self._end_unstarted(self._kill)
            return None
        if not self._spec.argv:
            self._fail_to_start("empty command")
            return None
        try:
            self._secrets = resolve_secrets(self._spec.secret_env, self._isolation.secrets_dir)
        except SecretError as error:
            self._fail_to_start(str(error))
            return None
        self._masker = OutputMasker(self._secrets.values(), self._batcher.add)
        try:
            output_file = self._outputs.new_file(self._spec)
        except OSError as error:
            self._fail_to_start(str(error))
            return None
        spawned = False
        try:
            process = await self._spawn(output_file)
            spawned = True
        except (OSError, ValueError, subprocess.SubprocessError) as error:
            self._fail_to_start(str(error))
            return None
        finally:
            if not spawned:  # failed, or cancelled (spawn has then killed the process)
                self._outputs.remove(output_file)
        self._started = Started(pid=process.pid, started_at=process.started_at)
        self._supervisor = asyncio.create_task(self._supervise(process, output_file))
        # Output is held until the loop's next turn, so that the caller can
        # announce the start (synchronously after this returns) before any of it.
        asyncio.get_running_loop().call_soon(self._batcher.release)
        return self._started

    async def _spawn(self, output_file: str) -> Process:
        isolation = self._isolation
        # Run as another user, the attempt starts in its own directory (the agent's may be
        # out of that user's reach) unless the task says where.
        default_workdir = os.path.dirname(output_file) if isolation.owner else None
        env = attempt_environment(
            self._spec, output_file, isolation=isolation, secrets=self._secrets
        )
        return await spawn(
            isolation.command(self._spec.argv),
            cwd=self._spec.workdir or default_workdir,
            env=env,
            on_output=self._masker.add,
        )

    def _flush_output(self) -> None:
        """Sends what the masker and the batcher hold: the output has ended."""
        self._masker.flush()
        self._batcher.flush()

    async def wait(self) -> AttemptResult:
        """Waits for the end; cancelling the wait does not stop the process."""
        if self._failed_start is not None:
            return self._failed_start
        if self._supervisor is None:
            raise RuntimeError("the Execution was not started")
        return await asyncio.shield(self._supervisor)

    def kill(self, outcome: AttemptOutcome, message: str, *, immediately: bool = False) -> None:
        """Kills the group: SIGTERM, ``kill_grace``, SIGKILL (or SIGKILL at once).

        The first reason given is the one reported; a later ``immediately``
        still cuts the grace short. Does nothing once the process has exited.
        """
        if self._kill is None:
            self._kill = _KillRequest(outcome, message)
            self._kill_requested.set()
        if immediately:
            self._kill_now.set()

    async def _wait_until(self, at: float) -> None:
        """Waits until ``time.monotonic()`` reaches ``at``, or a kill.

        The loop's timers fire up to a millisecond late (epoll and libuv count
        whole milliseconds), so the timer aims one millisecond early and the rest
        is waited out turn by turn, on the monotonic clock at full resolution
        (uvloop's ``loop.time()`` counts whole milliseconds too): the process
        starts on time, never before.
        """
        early = at - _TIMER_SLACK_SECONDS - time.monotonic()
        if early > 0 and self._kill is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kill_requested.wait(), early)
        while self._kill is None and time.monotonic() < at:  # noqa: ASYNC110 - a spin, on purpose
            await asyncio.sleep(0)

    def _end_unstarted(self, kill: _KillRequest) -> None:
        self._end_before_start(kill.outcome, f"{kill.message} (before it started)")

    def _fail_to_start(self, reason: str) -> None:
        self._end_before_start(AttemptOutcome.FAILED, f"cannot start: {reason}")

    def _end_before_start(self, outcome: AttemptOutcome, message: str) -> None:
        now = _now()
        self._failed_start = AttemptResult(
            outcome=outcome,
            argv=self._spec.argv,
            started_at=now,
            finished_at=now,
            message=message,
        )

    async def _supervise(self, process: Process, output_file: str) -> AttemptResult:
        watcher = asyncio.create_task(self._watch_outputs(output_file))
        try:
            kill = await self._wait_for_leader(process)
            leftovers = await self._finish_group(process)
            self._flush_output()  # the tails taken with the result end with it
            return self._result(process, kill, leftovers, output_file)
        finally:
            watcher.cancel()
            if process.returncode is None:  # cancelled: leave nothing behind
                signal_group(process.pid, signal.SIGKILL)
            self._flush_output()
            process.close()
            self._outputs.remove(output_file)

    async def _watch_outputs(self, output_file: str) -> None:
        """Kills the attempt, FAILED, once its ``$HYDRA_OUTPUT`` grows past the cap."""
        # A poll, on purpose: nothing tells the agent that a file grew.
        while outputs_size(output_file) <= MAX_OUTPUTS_BYTES:  # noqa: ASYNC110
            await asyncio.sleep(OUTPUTS_POLL_SECONDS)
        self._outputs_exceeded = True
        discard_outputs(output_file)
        log.info("%s attempt %d: %s", self._spec.task, self._spec.attempt, OUTPUTS_EXCEEDED)
        self.kill(AttemptOutcome.FAILED, OUTPUTS_EXCEEDED, immediately=True)

    async def _wait_for_leader(self, process: Process) -> _KillRequest | None:
        """Waits for the leader's exit, a kill or the timeout; None for a natural exit."""
        timeout = self._spec.timeout
        kill_requested = asyncio.ensure_future(self._kill_requested.wait())
        waiters: set[asyncio.Future[Any]] = {process.exited, kill_requested}
        try:
            await asyncio.wait(
                waiters,
                timeout=timeout.total_seconds() if timeout else None,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            kill_requested.cancel()
        if process.exited.done():
            return None
        if self._kill is None and timeout is not None:
            self._kill = _KillRequest(
                AttemptOutcome.TIMED_OUT, f"timed out after {format_duration(timeout)}"
            )
        await self._terminate(process)
        return self._kill

    async def _terminate(self, process: Process) -> None:
        """SIGTERM to the group, up to ``kill_grace`` for it to go, then SIGKILL."""
        await terminate_group(process, self._spec.kill_grace, cut_short=self._kill_now)
        await asyncio.wait({process.exited})

    async def _finish_group(self, process: Process) -> bool:
        """Lets the pipes drain, then SIGKILLs what is left; True if anything was."""
        await asyncio.wait({process.pipes_closed}, timeout=PIPE_DRAIN_SECONDS)
        leftovers = await group_alive(process.pid)
        if leftovers:
            signal_group(process.pid, signal.SIGKILL)
            await asyncio.wait({process.pipes_closed}, timeout=POLL_SECONDS * 4)
        return leftovers

    def _result(
        self, process: Process, kill: _KillRequest | None, leftovers: bool, output_file: str
    ) -> AttemptResult:
        returncode = process.returncode
        assert returncode is not None  # the leader has exited
        outcome, message = (kill.outcome, kill.message) if kill else _natural_end(returncode)
        if leftovers and kill is None:
            message = _join(message, "killed processes left running in its process group")
        outputs_json, problem = self._read_outputs(output_file)
        if problem and not (kill and kill.message == problem):
            outcome = AttemptOutcome.FAILED if outcome is AttemptOutcome.SUCCEEDED else outcome
            message = _join(message, problem)
        assert self._started is not None
        return AttemptResult(
            outcome=outcome,
            argv=self._spec.argv,
            started_at=self._started.started_at,
            finished_at=_now(),
            exit_code=returncode if returncode >= 0 else None,
            signal=-returncode if returncode < 0 else None,
            message=message,
            outputs_json=outputs_json,
            output_tails=self._recorder.tails(),
        )

    def _read_outputs(self, output_file: str) -> tuple[str, str]:
        """(the outputs JSON, what is wrong with the file: "" if nothing)."""
        if self._outputs_exceeded:  # emptied when it was caught
            return "", OUTPUTS_EXCEEDED
        try:
            outputs_json = read_outputs(output_file)
            return mask_outputs(outputs_json, [os.fsdecode(v) for v in self._secrets.values()]), ""
        except OutputsError as error:
            return "", str(error)


def attempt_environment(
    spec: AttemptSpec,
    output_file: str,
    *,
    isolation: Isolation = NO_ISOLATION,
    secrets: Mapping[str, bytes] = MappingProxyType({}),
    base: Mapping[str, str] = os.environ,
) -> dict[str, str]:
    """What of the agent's environment is passed (see :class:`Isolation`), then the
    task's env, its secrets, and the ``HYDRA_*`` variables."""
    env = isolation.environment(base)
    env.update(spec.env)
    env.update((name, os.fsdecode(value)) for name, value in secrets.items())
    env["HYDRA_RUN_ID"] = spec.run_id
    env["HYDRA_TASK"] = spec.task
    env["HYDRA_ATTEMPT"] = str(spec.attempt)
    env["HYDRA_OUTPUT"] = output_file
    if spec.occurrence is not None:
        env["HYDRA_OCCURRENCE"] = spec.occurrence.astimezone(UTC).isoformat()
    return env


def _natural_end(returncode: int) -> tuple[AttemptOutcome, str]:
    if returncode == 0:
        return AttemptOutcome.SUCCEEDED, ""
    if returncode > 0:
        return AttemptOutcome.FAILED, f"exited with code {returncode}"
    return AttemptOutcome.FAILED, f"killed by signal {-returncode} ({_signal_name(-returncode)})"


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return "unknown"


def _join(first: str, second: str) -> str:
    return f"{first}; {second}" if first else second


def _now() -> datetime:
    return datetime.now(UTC)
