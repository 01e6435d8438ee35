"""A process as the agent's event loop watches it: its pid, its output, its exit.

:func:`spawn` starts a program as the leader of a new session, stdin from
/dev/null, stdout and stderr into pipes, and hands back a :class:`Process`.
The session is a process group of its own, which :func:`terminate_group`,
:func:`signal_group` and :func:`group_alive` act on. Attempts and command
checks both run this way.

Where pidfds work (Linux 5.3 and later), the loop watches the process itself:
the two pipes and a pidfd go straight into the loop's selector. The process
is started by ``os.posix_spawn`` (glibc's is a vfork and exec, in C; see
:mod:`hydra.agent.spawning`) on the loop's thread: the loop is held for the
exec only, never for copying the agent (about 0.1 ms of CPU per spawn, half of
``Popen``'s). Spawning on a helper thread was measured too and cost more than
it saved (the hand-off to the thread and back; bench/README.md, "Issue 15: spawning,
measured three ways").
With a working directory, which ``posix_spawn`` cannot set,
``subprocess.Popen`` starts it, on the loop's thread as well. Either way
nothing is awaited, so a cancel cannot come between the spawn and the watch.
asyncio's subprocess transport does the same work through a transport, two
pipe transports, their protocols and a child watcher, for a tenth to a quarter
more of the agent's CPU per attempt; it remains the way where pidfds do not work.

The start time is taken as soon as the spawn returns, that is once the
program is exec'd: what the latency benchmarks call "right after spawn". On a
busy machine the loop's thread may be scheduled again a fraction of a
millisecond after the program began to run. Through asyncio's transport, it
is taken once the pipes are connected, a few turns of the loop later: with
five processes started at once, each start time then includes the other forks.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import os
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta

from hydra.agent.attempt import OutputStream
from hydra.agent.spawning import posix_spawn

log = logging.getLogger("hydra.agent")

#: Receives what the process writes, as it comes.
OnOutput = Callable[[OutputStream, bytes], None]

#: A pipe holds 64 KiB by default: one read empties a full one.
_READ_SIZE = 64 * 1024
#: The status asyncio reports for a child that someone else reaped; so do we.
_UNKNOWN_RETURNCODE = 255
#: How often a dying group is checked during the kill grace.
POLL_SECONDS = 0.05
#: Linux: zombies can be told apart from the living.
_HAVE_PROC = os.path.isdir("/proc")


def pidfd_works() -> bool:
    """Whether this system can watch a process through a pidfd."""
    try:
        os.close(os.pidfd_open(os.getpid()))
    except (AttributeError, OSError):  # AttributeError: not Linux; OSError: Linux < 5.3, seccomp
        return False
    return True


#: Whether :func:`spawn` watches processes through pidfds rather than
#: asyncio's transport (tests turn it off to exercise the other way).
USE_PIDFDS = pidfd_works()


class Process(abc.ABC):
    """A spawned process, leader of its own session and process group.

    Attributes:
        pid: Its process id, also the id of its process group and session.
        started_at: When it was spawned (see the module's docstring).
        exited: Done once it has exited and been reaped.
        pipes_closed: Done once both output pipes are closed, at end of file
            (every writer is gone) or by :meth:`close`.
    """

    pid: int
    started_at: datetime
    exited: asyncio.Future[None]
    pipes_closed: asyncio.Future[None]

    @property
    @abc.abstractmethod
    def returncode(self) -> int | None:
        """The exit code, or minus the signal that killed it; None until reaped."""

    @abc.abstractmethod
    def close(self) -> None:
        """Stops reading the pipes and closes them; SIGKILLs the process if it still runs.

        It is reaped, and ``exited`` done, once it has exited.
        """


async def spawn(
    argv: Sequence[str],
    *,
    cwd: str | None,
    env: Mapping[str, str],
    on_output: OnOutput,
    stderr_to_stdout: bool = False,
) -> Process:
    """Starts ``argv`` in a new session; what it writes goes to ``on_output``.

    With ``stderr_to_stdout``, both go into one pipe, in the order written, all
    as ``STDOUT``.

    Through pidfds, nothing is awaited: the process is watched from the moment
    this returns, and a cancel cannot come between. Through asyncio's
    transport, a cancel while the pipes connect kills the process group.

    Raises:
        OSError, ValueError, subprocess.SubprocessError: it could not start.
    """
    if USE_PIDFDS:
        return _spawn_watched(
            argv, cwd=cwd, env=env, on_output=on_output, stderr_to_stdout=stderr_to_stdout
        )
    stderr = subprocess.STDOUT if stderr_to_stdout else subprocess.PIPE
    return await _spawn_through_transport(
        argv, cwd=cwd, env=env, on_output=on_output, stderr=stderr
    )


async def terminate_group(
    process: Process, grace: timedelta, *, cut_short: asyncio.Event | None = None
) -> None:
    """SIGTERM to the process's group, up to ``grace`` for it to go, then SIGKILL.

    Returns early once the leader has exited and nothing else of the group
    lives; ``cut_short`` (set before or meanwhile) skips what is left of the
    grace. The leader may not be reaped yet when this returns.
    """
    loop = asyncio.get_running_loop()
    pgid = process.pid
    cut_short = cut_short if cut_short is not None else asyncio.Event()
    if not cut_short.is_set():
        signal_group(pgid, signal.SIGTERM)
        deadline = loop.time() + grace.total_seconds()
        cut = asyncio.ensure_future(cut_short.wait())
        try:
            while not cut.done() and (remaining := deadline - loop.time()) > 0:
                if process.exited.done() and not await group_alive(pgid):
                    return
                await asyncio.wait({cut}, timeout=min(POLL_SECONDS, remaining))
        finally:
            cut.cancel()
    signal_group(pgid, signal.SIGKILL)


def signal_group(pgid: int, signum: signal.Signals) -> None:
    """Sends ``signum`` to the process group; a group that is gone is no error."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        pass
    except OSError as error:
        log.warning("cannot send %s to process group %d: %s", signum.name, pgid, error)


async def group_alive(pgid: int) -> bool:
    """True while a process of the group lives (zombies do not count)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if not _HAVE_PROC:
        return True
    # killpg also reaches zombies, which stay forever under an init that does
    # not reap orphans (many containers); /proc tells the living apart.
    return await asyncio.to_thread(_live_member_in_proc, pgid)


def _live_member_in_proc(pgid: int) -> bool:
    with os.scandir("/proc") as entries:
        pids = [entry.name for entry in entries if entry.name.isdigit()]
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as file:
                fields = file.read().rpartition(")")[2].split()
        except OSError:
            continue
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
            return True
    return False


# --- through pidfds ---------------------------------------------------------------


def _spawn_watched(
    argv: Sequence[str],
    *,
    cwd: str | None,
    env: Mapping[str, str],
    on_output: OnOutput,
    stderr_to_stdout: bool,
) -> Process:
    stdout_read, stdout_write = os.pipe()
    pipes = [(stdout_read, OutputStream.STDOUT)]
    stderr_write = stdout_write
    if not stderr_to_stdout:
        stderr_read, stderr_write = os.pipe()
        pipes.append((stderr_read, OutputStream.STDERR))
    writes = (stdout_write, stderr_write)
    # posix_spawn has no action to change the working directory, and a write end
    # on 0, 1 or 2 (the agent's own were closed) needs more care than its dup2 gives.
    if cwd is not None or min(writes) <= 2:
        return _popen_watched(argv, cwd, env, on_output, pipes, writes)
    try:
        pid, pidfd, started_at = _posix_spawn_watchable(argv, env, *writes)
    except BaseException:
        _close_all(pipes, writes)
        raise
    _close_all((), writes)
    return _WatchedProcess(pid, pidfd, started_at, on_output, pipes)


def _posix_spawn_watchable(
    argv: Sequence[str], env: Mapping[str, str], stdout: int, stderr: int
) -> tuple[int, int, datetime]:
    """The pid, a pidfd and the start time of a new process."""
    pid = posix_spawn(argv, env, stdout, stderr)
    started_at = _now()  # right after the spawn: the program is exec'd
    try:
        return pid, os.pidfd_open(pid), started_at  # not reaped yet: the pid is still this child's
    except OSError:  # e.g. out of file descriptors
        _kill_and_reap(pid)
        raise


def _popen_watched(
    argv: Sequence[str],
    cwd: str | None,
    env: Mapping[str, str],
    on_output: OnOutput,
    pipes: Sequence[tuple[int, OutputStream]],
    writes: Sequence[int],
) -> Process:
    """``Popen`` on the loop's thread, where ``posix_spawn`` cannot do the work."""
    try:
        popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=writes[0],
            stderr=writes[1],
            cwd=cwd,
            env=env,
            start_new_session=True,
            close_fds=True,
        )
    except BaseException:
        _close_all(pipes, writes)
        raise
    started_at = _now()  # right after the spawn: the program is exec'd
    _close_all((), writes)
    try:
        pidfd = os.pidfd_open(popen.pid)  # not reaped yet, so the pid is still this child's
    except OSError:  # e.g. out of file descriptors
        _kill_and_reap(popen.pid, popen)
        _close_all(pipes, ())
        raise
    return _WatchedProcess(popen.pid, pidfd, started_at, on_output, pipes, popen)


def _close_all(pipes: Sequence[tuple[int, OutputStream]], writes: Sequence[int]) -> None:
    for fd in {*(fd for fd, _ in pipes), *writes}:
        os.close(fd)


class _WatchedProcess(Process):
    """A child's pipes and pidfd, read by the loop's selector."""

    def __init__(
        self,
        pid: int,
        pidfd: int,
        started_at: datetime,
        on_output: OnOutput,
        pipes: Sequence[tuple[int, OutputStream]],
        popen: subprocess.Popen[bytes] | None = None,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._popen = popen
        self._pidfd = pidfd
        self._on_output = on_output
        self._returncode: int | None = None
        self.pid = pid
        self.started_at = started_at
        self.exited = self._loop.create_future()
        self.pipes_closed = self._loop.create_future()
        # If it has exited already, the pidfd is readable at once: nothing is missed.
        self._loop.add_reader(pidfd, self._reap)
        self._pipes = dict(pipes)
        for fd in self._pipes:
            os.set_blocking(fd, False)
            self._loop.add_reader(fd, self._read, fd)

    @property
    def returncode(self) -> int | None:
        return self._returncode

    def close(self) -> None:
        for fd in list(self._pipes):
            self._close_pipe(fd)
        if self._returncode is None:
            # Not reaped, so the pid cannot have been reused; _reap follows the exit.
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)

    def _read(self, fd: int) -> None:
        try:
            data = os.read(fd, _READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as error:
            log.warning("cannot read the output of process %d: %s", self.pid, error)
            data = b""
        if data:
            self._on_output(self._pipes[fd], data)
        else:
            self._close_pipe(fd)

    def _close_pipe(self, fd: int) -> None:
        del self._pipes[fd]
        self._loop.remove_reader(fd)
        os.close(fd)
        if not self._pipes and not self.pipes_closed.done():
            self.pipes_closed.set_result(None)

    def _reap(self) -> None:
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:  # something else waited for all children
            log.warning("process %d was reaped elsewhere: its exit status is lost", self.pid)
            returncode = _UNKNOWN_RETURNCODE
        else:
            if pid == 0:  # not exited after all
                return
            returncode = os.waitstatus_to_exitcode(status)
        self._loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        self._returncode = returncode
        if self._popen is not None:
            self._popen.returncode = returncode  # so that Popen never waits for it itself
        if not self.exited.done():  # a waiter cancelled it
            self.exited.set_result(None)


def _kill_and_reap(pid: int, popen: subprocess.Popen[bytes] | None = None) -> None:
    """SIGKILLs the new group and waits for its leader: a moment, as it was just born."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    if popen is not None:
        popen.wait()
    else:
        os.waitpid(pid, 0)


# --- through asyncio's transport ------------------------------------------------------


async def _spawn_through_transport(
    argv: Sequence[str],
    *,
    cwd: str | None,
    env: Mapping[str, str],
    on_output: OnOutput,
    stderr: int,
) -> Process:
    # loop.subprocess_exec rather than create_subprocess_exec: owning the
    # transport lets us close pipes that an escaped process keeps open,
    # and data arrives by callback, so there are no reader tasks to stop.
    protocol = _PipeProtocol(on_output, pipes={1} if stderr == subprocess.STDOUT else {1, 2})
    spawning = asyncio.ensure_future(
        asyncio.get_running_loop().subprocess_exec(
            lambda: protocol,
            *argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            cwd=cwd,
            env=env,
            start_new_session=True,
            close_fds=True,
        )
    )
    try:
        transport, _ = await asyncio.shield(spawning)
    except asyncio.CancelledError:
        # Cancelled, asyncio would kill the leader only, yet the group may have started.
        with contextlib.suppress(OSError, ValueError, subprocess.SubprocessError):
            transport, _ = await spawning
            try:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(transport.get_pid(), signal.SIGKILL)
                await asyncio.wait({protocol.exited})
            finally:  # after the exit: closing a transport whose child runs may reap it
                transport.close()
        raise
    return _TransportProcess(transport, protocol, _now())


class _TransportProcess(Process):
    """asyncio's subprocess transport, its events turned into futures by a protocol."""

    def __init__(
        self, transport: asyncio.SubprocessTransport, protocol: _PipeProtocol, started_at: datetime
    ) -> None:
        self._transport = transport
        self.pid = transport.get_pid()
        self.started_at = started_at
        self.exited = protocol.exited
        self.pipes_closed = protocol.pipes_closed

    @property
    def returncode(self) -> int | None:
        return self._transport.get_returncode()

    def close(self) -> None:
        self._transport.close()


class _PipeProtocol(asyncio.SubprocessProtocol):
    """Hands pipe data on and turns the transport's events into futures."""

    def __init__(self, on_output: OnOutput, pipes: set[int]) -> None:
        loop = asyncio.get_running_loop()
        self._on_output = on_output
        self._open_pipes = set(pipes)
        self.exited: asyncio.Future[None] = loop.create_future()
        self.pipes_closed: asyncio.Future[None] = loop.create_future()

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        self._on_output(OutputStream.STDOUT if fd == 1 else OutputStream.STDERR, data)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        self._open_pipes.discard(fd)
        if not self._open_pipes and not self.pipes_closed.done():
            self.pipes_closed.set_result(None)

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)


def _now() -> datetime:
    return datetime.now(UTC)
