"""Preconditions: "should I run?", answered on the agent's host before an attempt.

Each check gives a verdict — ready or not, with a short message for people —
within its own timeout, and never raises: a check that fails in an unexpected
way is simply not ready, and says why. "Not ready" is normal; it costs the run
no attempt (the coordinator re-queues it after the task's poke interval).

Every check is cancelled for real at its timeout, and none can tie up more
than it was given. Command checks are spawned as attempts are
(:mod:`hydra.agent.process`), in a session and process group of their own,
which is SIGKILLed once the check is over (on time or not), so a check leaves
no process behind. HTTP and TCP checks are asyncio connections (a GET written
by hand: a status line is all a check needs), closed when cancelled. File
checks' ``stat`` may block (a hung NFS mount), so it runs in a few threads kept
for it (:class:`FileCheckPool`): a stuck ``stat`` holds one of them until it
returns, and while all are held a file check is "not ready: file checks busy"
at once instead of queueing without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import queue
import shlex
import signal
import ssl
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import assert_never

from hydra import __version__
from hydra.agent.attempt import OutputStream
from hydra.agent.isolation import Isolation
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
#: Threads kept for file checks' stat calls.
FILE_CHECK_THREADS = 4
#: Redirects an HTTP check follows.
_MAX_REDIRECTS = 5
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


@dataclass(frozen=True, kw_only=True, slots=True)
class UnsupportedCheck:
    """A precondition this agent cannot evaluate (no kind set, or a newer kind): never ready."""

    reason: str
    timeout: timedelta = DEFAULT_CHECK_TIMEOUT


#: What the agent evaluates: a rendered precondition, or one it cannot read.
Check = Precondition | UnsupportedCheck


class NotReady(Exception):
    """The precondition does not hold (yet); the message says what was seen."""


#: Command checks run as the agent's user, with the default allow-listed environment.
_NO_ISOLATION = Isolation()


async def evaluate_all(
    checks: Sequence[Check], semaphore: asyncio.Semaphore, isolation: Isolation = _NO_ISOLATION
) -> list[PreconditionVerdict]:
    """Evaluates the checks of one lease concurrently; verdicts in the checks' order.

    ``semaphore`` bounds the checks running at once across the agent; a check's
    timeout starts when it gets its turn. Command checks run as attempts do
    (``isolation``: the environment passed and the user), without the task's env.
    """
    verdicts = [
        _evaluate_in_turn(index, check, semaphore, isolation) for index, check in enumerate(checks)
    ]
    return list(await asyncio.gather(*verdicts))


async def evaluate(
    check: Check, *, index: int = 0, isolation: Isolation = _NO_ISOLATION
) -> PreconditionVerdict:
    """Evaluates one check within its timeout; raises only when cancelled."""
    ready, message = await _outcome(check, isolation)
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
    index: int, check: Check, semaphore: asyncio.Semaphore, isolation: Isolation
) -> PreconditionVerdict:
    async with semaphore:
        return await evaluate(check, index=index, isolation=isolation)


async def _outcome(check: Check, isolation: Isolation) -> tuple[bool, str]:
    """(ready, message); every failure of the check itself is "not ready"."""
    timeout = time_limit(check)
    try:
        async with asyncio.timeout(timeout.total_seconds()):
            return True, one_line(await _run(check, isolation))
    except NotReady as error:
        return False, one_line(str(error))
    except TimeoutError:
        return False, f"timed out after {format_duration(timeout)}"
    except Exception as error:  # a check that raises is not ready; people see why
        log.debug("precondition %s raised", describe(check), exc_info=True)
        return False, one_line(describe_error(error))


async def _run(check: Check, isolation: Isolation) -> str:
    """The message of a check that holds; raises ``NotReady`` when it does not."""
    match check:
        case CommandCheck():
            return await _command(check, isolation)
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


async def _command(check: CommandCheck, isolation: Isolation) -> str:
    """Exit code 0 is ready. The group is SIGKILLed afterwards, and on timeout or cancel."""
    if not check.argv:
        raise NotReady("empty command")
    tail = _Tail()
    try:
        process = await spawn(
            isolation.command(check.argv),
            cwd=None,
            env=isolation.environment(),
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


class FileCheckPool:
    """A few daemon threads for the ``stat`` calls of file checks.

    A ``stat`` that hangs holds its thread until it returns, whatever became of
    its check; while every thread is held, :meth:`stat` refuses at once (the
    check is not ready) rather than queueing. The threads are daemons: a hung
    ``stat`` cannot keep the agent from exiting.
    """

    def __init__(
        self,
        workers: int = FILE_CHECK_THREADS,
        stat: Callable[[str], os.stat_result] = os.stat,
    ) -> None:
        self._workers = workers
        self._stat = stat
        self._lock = threading.Lock()
        self._busy = 0
        self._started = 0
        self._jobs: queue.SimpleQueue[tuple[str, asyncio.Future[os.stat_result]]] = (
            queue.SimpleQueue()
        )

    @property
    def busy(self) -> int:
        """Calls that have not returned, cancelled checks' included."""
        with self._lock:
            return self._busy

    async def stat(self, path: str) -> os.stat_result:
        """``os.stat(path)`` in one of the threads; cancelling it abandons the call.

        Raises:
            NotReady: every thread is held by a call that has not returned.
        """
        with self._lock:
            if self._busy >= self._workers:
                raise NotReady(f"file checks busy ({self._busy} stat calls have not returned)")
            self._busy += 1
            if self._started < self._busy:
                self._started += 1
                threading.Thread(target=self._work, daemon=True, name="hydra-file-check").start()
        future: asyncio.Future[os.stat_result] = asyncio.get_running_loop().create_future()
        self._jobs.put((path, future))
        return await future

    def _work(self) -> None:
        while True:
            path, future = self._jobs.get()
            try:
                result = self._stat(path)
            except BaseException as error:  # handed to the check, whatever it is
                _settle(future, None, error)
            else:
                _settle(future, result, None)
            finally:
                with self._lock:
                    self._busy -= 1


def _settle(
    future: asyncio.Future[os.stat_result],
    result: os.stat_result | None,
    error: BaseException | None,
) -> None:
    """Hands a thread's answer to the loop that asked, unless the check is gone."""

    def settle() -> None:
        if future.done():  # the check was cancelled (timed out)
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    with contextlib.suppress(RuntimeError):  # the loop has closed
        future.get_loop().call_soon_threadsafe(settle)


#: The agent's file-check threads.
FILE_CHECKS = FileCheckPool()


async def _file(check: FileCheck) -> str:
    """Ready when the path exists and, with ``min_age``, was modified at least that long ago."""
    try:
        status = await FILE_CHECKS.stat(check.path)
    except FileNotFoundError:
        raise NotReady(f"no such file: {check.path}") from None
    age = max(time.time() - status.st_mtime, 0.0)
    shown = f"modified {format_duration(timedelta(seconds=int(age)))} ago"
    if check.min_age is not None and age < check.min_age.total_seconds():
        raise NotReady(f"{shown}; needs {format_duration(check.min_age)}")
    return shown


# --- http ---------------------------------------------------------------------------


async def _http(check: HttpCheck) -> str:
    """Ready when GET answers 2xx (up to five redirects followed)."""
    url = check.url
    for _ in range(_MAX_REDIRECTS + 1):
        status, location = await _get_status(url)
        if status not in _REDIRECTS or not location:
            break
        url = urllib.parse.urljoin(url, location)
    if not 200 <= status < 300:
        raise NotReady(f"HTTP {status}")
    return f"HTTP {status}"


async def _get_status(url: str) -> tuple[int, str]:
    """The status of a GET and its Location header (for redirects); body unread."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise NotReady(f"not an http(s) URL: {url}")
    secure = parts.scheme == "https"
    port = parts.port or (443 if secure else 80)
    try:
        reader, writer = await asyncio.open_connection(
            parts.hostname, port, ssl=_tls_context() if secure else None
        )
    except ConnectionRefusedError:
        raise NotReady("connection refused") from None
    except OSError as error:
        raise NotReady(describe_error(error)) from None
    try:
        writer.write(_request(parts))
        await writer.drain()
        return await _read_status(reader)
    finally:
        writer.transport.abort()  # nothing more to say: no graceful close to wait for


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """The system's trusted certificates, loaded once."""
    return ssl.create_default_context()


def _request(parts: urllib.parse.SplitResult) -> bytes:
    target = urllib.parse.quote(parts.path or "/", safe="/%:@!$&'()*+,;=~")
    if parts.query:
        target += "?" + urllib.parse.quote(parts.query, safe="/%:@!$&'()*+,;=?~")
    host = parts.netloc.rpartition("@")[2]
    return (
        f"GET {target} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: hydra-agent/{__version__}\r\n"
        "Accept: */*\r\nConnection: close\r\n\r\n"
    ).encode("ascii")  # a URL that is not ASCII is not ready, and says why


async def _read_status(reader: asyncio.StreamReader) -> tuple[int, str]:
    """The status code of an HTTP/1.x response, and its Location header."""
    line = await reader.readline()
    version, _, rest = line.decode("latin-1").partition(" ")
    code = rest[:3]
    if not version.startswith("HTTP/1.") or not code.isdigit():
        raise NotReady("not an HTTP response" if line else "the server closed the connection")
    location = ""
    if int(code) in _REDIRECTS:
        while (header := await reader.readline()).strip():
            name, _, value = header.decode("latin-1").partition(":")
            if name.strip().lower() == "location":
                location = value.strip()
    return int(code), location


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
