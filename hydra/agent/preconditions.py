"""Preconditions: "should I run?", answered on the agent's host before an attempt.

Each check gives a verdict — ready or not, with a short message for people —
within its own timeout, and never raises: a check that fails in an unexpected
way is simply not ready, and says why. "Not ready" is normal; it costs the run
no attempt (the coordinator re-queues it after the task's poke interval).

Command checks are spawned as attempts are (:mod:`hydra.agent.process`), in
a session and process group of their own, which is SIGKILLed once the check
is over (on time or not), so a check leaves no process behind. HTTP and
file checks block, so they run in a thread; a thread stuck past the timeout
is abandoned, not waited for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import assert_never

from hydra import __version__
from hydra.agent.attempt import OutputStream
from hydra.agent.executor import AGENT_ONLY_VARIABLES
from hydra.agent.process import Process, signal_group, spawn
from hydra.domain import (
    DEFAULT_CHECK_TIMEOUT,
    CommandCheck,
    FileCheck,
    HttpCheck,
    Precondition,
    PreconditionVerdict,
    TcpCheck,
)
from hydra.spec import format_duration

log = logging.getLogger("hydra.agent")

#: Checks evaluated at once across the whole agent, by default.
MAX_CONCURRENT_CHECKS = 16
#: Longest verdict message; longer ones are cut.
MAX_MESSAGE_CHARS = 200
#: Output of a command check kept for its message (its last line is used).
_OUTPUT_TAIL_BYTES = 4096
#: After a command check's leader exits, how long its output may take to arrive.
_PIPE_DRAIN_SECONDS = 0.25
#: After SIGKILL, how long to wait for the leader to be reaped.
_REAP_SECONDS = 1.0


@dataclass(frozen=True, kw_only=True, slots=True)
class UnsupportedCheck:
    """A precondition this agent cannot evaluate (no kind set, or a newer kind): never ready."""

    reason: str
    timeout: timedelta = DEFAULT_CHECK_TIMEOUT


#: What the agent evaluates: a rendered precondition, or one it cannot read.
Check = Precondition | UnsupportedCheck


class NotReady(Exception):
    """The precondition does not hold (yet); the message says what was seen."""


async def evaluate_all(
    checks: Sequence[Check], semaphore: asyncio.Semaphore
) -> list[PreconditionVerdict]:
    """Evaluates the checks of one lease concurrently; verdicts in the checks' order.

    ``semaphore`` bounds the checks running at once across the agent; a check's
    timeout starts when it gets its turn.
    """
    verdicts = [_evaluate_in_turn(index, check, semaphore) for index, check in enumerate(checks)]
    return list(await asyncio.gather(*verdicts))


async def evaluate(check: Check, *, index: int = 0) -> PreconditionVerdict:
    """Evaluates one check within its timeout; raises only when cancelled."""
    ready, message = await _outcome(check)
    log.debug(
        "precondition %d (%s): %s: %s",
        index,
        describe(check),
        "ready" if ready else "not ready",
        message,
    )
    return PreconditionVerdict(
        index=index, ready=ready, message=message, checked_at=datetime.now(UTC)
    )


def describe(check: Check) -> str:
    """What a check looks at, for logs: ``file /data/_READY``, ``tcp db:5432``, ..."""
    match check:
        case CommandCheck():
            return f"command {shlex.join(check.argv)}"
        case FileCheck():
            return f"file {check.path}"
        case HttpCheck():
            return f"http {check.url}"
        case TcpCheck():
            return f"tcp {check.host}:{check.port}"
        case UnsupportedCheck():
            return "unsupported"
        case _:
            assert_never(check)


def time_limit(check: Check) -> timedelta:
    """The check's timeout; a non-positive one means the default."""
    return check.timeout if check.timeout > timedelta(0) else DEFAULT_CHECK_TIMEOUT


async def _evaluate_in_turn(
    index: int, check: Check, semaphore: asyncio.Semaphore
) -> PreconditionVerdict:
    async with semaphore:
        return await evaluate(check, index=index)


async def _outcome(check: Check) -> tuple[bool, str]:
    """(ready, message); every failure of the check itself is "not ready"."""
    timeout = time_limit(check)
    try:
        async with asyncio.timeout(timeout.total_seconds()):
            return True, one_line(await _run(check))
    except NotReady as error:
        return False, one_line(str(error))
    except TimeoutError:
        return False, f"timed out after {format_duration(timeout)}"
    except Exception as error:  # a check that raises is not ready; people see why
        log.debug("precondition %s raised", describe(check), exc_info=True)
        return False, one_line(describe_error(error))


async def _run(check: Check) -> str:
    """The message of a check that holds; raises ``NotReady`` when it does not."""
    match check:
        case CommandCheck():
            return await _command(check)
        case FileCheck():
            return await _file(check)
        case HttpCheck():
            return await _http(check)
        case TcpCheck():
            return await _tcp(check)
        case UnsupportedCheck():
            raise NotReady(check.reason)
        case _:
            assert_never(check)


# --- command ------------------------------------------------------------------------


class _Tail:
    """Keeps the end of a check's output."""

    def __init__(self) -> None:
        self.data = bytearray()

    def add(self, stream: OutputStream, data: bytes) -> None:
        self.data += data
        del self.data[:-_OUTPUT_TAIL_BYTES]


async def _command(check: CommandCheck) -> str:
    """Exit code 0 is ready. The group is SIGKILLed afterwards, and on timeout or cancel."""
    if not check.argv:
        raise NotReady("empty command")
    tail = _Tail()
    try:
        process = await spawn(
            check.argv,
            cwd=None,
            env=_environment(),
            on_output=tail.add,
            stderr_to_stdout=True,
        )
    except (OSError, ValueError, subprocess.SubprocessError) as error:
        raise NotReady(f"cannot start: {describe_error(error)}") from None
    try:
        # asyncio.wait, not await: a timeout or cancel must not cancel the future itself.
        await asyncio.wait({process.exited})
        await asyncio.wait({process.pipes_closed}, timeout=_PIPE_DRAIN_SECONDS)
    finally:
        await _end_group(process)
    return _exit_message(process.returncode, bytes(tail.data))


def _environment() -> dict[str, str]:
    """The agent's environment, less what only the agent may see."""
    return {name: value for name, value in os.environ.items() if name not in AGENT_ONLY_VARIABLES}


async def _end_group(process: Process) -> None:
    """SIGKILLs what is left of the check's process group, then lets the leader be reaped.

    At once, with no SIGTERM grace: the check's time is up, or it is over.
    """
    signal_group(process.pid, signal.SIGKILL)
    try:
        await asyncio.wait({process.exited}, timeout=_REAP_SECONDS)
    finally:
        process.close()


def _exit_message(returncode: int | None, output: bytes) -> str:
    """``exit code 0: <last line of output>``; raises ``NotReady`` unless the code is 0."""
    if returncode is None or returncode < 0:
        status = f"killed by signal {-(returncode or 0)}"
    else:
        status = f"exit code {returncode}"
    line = _last_line(output)
    message = f"{status}: {line}" if line else status
    if returncode != 0:
        raise NotReady(message)
    return message


def _last_line(output: bytes) -> str:
    lines = output.decode("utf-8", "replace").splitlines()
    return next((line.strip() for line in reversed(lines) if line.strip()), "")


# --- file ---------------------------------------------------------------------------


async def _file(check: FileCheck) -> str:
    """Ready when the path exists and, with ``min_age``, was modified at least that long ago."""
    try:
        status = await asyncio.to_thread(os.stat, check.path)
    except FileNotFoundError:
        raise NotReady(f"no such file: {check.path}") from None
    age = max(time.time() - status.st_mtime, 0.0)
    shown = f"modified {format_duration(timedelta(seconds=int(age)))} ago"
    if check.min_age is not None and age < check.min_age.total_seconds():
        raise NotReady(f"{shown}; needs {format_duration(check.min_age)}")
    return shown


# --- http ---------------------------------------------------------------------------


async def _http(check: HttpCheck) -> str:
    """Ready when GET answers 2xx (redirects followed as urllib does)."""
    if urllib.parse.urlsplit(check.url).scheme not in ("http", "https"):
        raise NotReady(f"not an http(s) URL: {check.url}")
    status = await asyncio.to_thread(_get_status, check.url, time_limit(check).total_seconds())
    if not 200 <= status < 300:
        raise NotReady(f"HTTP {status}")
    return f"HTTP {status}"


def _get_status(url: str, timeout: float) -> int:
    """The status of a GET, body unread. Blocking: run it in a thread."""
    request = urllib.request.Request(url, headers={"User-Agent": f"hydra-agent/{__version__}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:  # 4xx and 5xx
        error.close()
        return error.code
    except urllib.error.URLError as error:
        if isinstance(error.reason, TimeoutError):
            raise TimeoutError from None
        reason = error.reason
        text = describe_error(reason) if isinstance(reason, OSError) else str(reason)
        raise NotReady(text) from None


# --- tcp ----------------------------------------------------------------------------


async def _tcp(check: TcpCheck) -> str:
    """Ready when a TCP connection opens; it is closed again at once."""
    try:
        _, writer = await asyncio.open_connection(check.host, check.port)
    except ConnectionRefusedError:
        raise NotReady(f"{check.host}:{check.port}: connection refused") from None
    writer.close()
    with contextlib.suppress(OSError):  # a reset while closing says nothing about readiness
        await writer.wait_closed()
    return f"connected to {check.host}:{check.port}"


# --- messages -----------------------------------------------------------------------


def describe_error(error: BaseException) -> str:
    """An error as people read it: ``permission denied: '/x'``, not ``[Errno 13] ...``."""
    if isinstance(error, OSError) and error.strerror:
        text = error.strerror[:1].lower() + error.strerror[1:]
        return f"{text}: {error.filename!r}" if error.filename else text
    return str(error) or type(error).__name__


def one_line(text: str) -> str:
    """``text`` on one line, whitespace collapsed, at most ``MAX_MESSAGE_CHARS``."""
    flat = " ".join(text.split())
    if len(flat) <= MAX_MESSAGE_CHARS:
        return flat
    return flat[: MAX_MESSAGE_CHARS - 1] + "…"
