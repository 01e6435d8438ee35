"""Child processes that are always stopped.

Each child runs in a session of its own (so a terminal's Ctrl-C reaches only
the parent, which then stops it), with its output in a log file. Stopping is
SIGCONT (a stopped process cannot act on SIGTERM), SIGTERM, then SIGKILL to
its whole group after a deadline; `Processes` stops what it started newest
first.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from harness.wait import HarnessError, wait_for

#: SIGTERM to SIGKILL, when stopping a process.
STOP_TIMEOUT_S = 15.0
LOG_TAIL_LINES = 40


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without any ``HYDRA_*`` setting of the developer's, plus `extra`."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("HYDRA_")}
    env.update(extra)
    return env


def is_alive(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie, exited but not yet reaped, is not)."""
    fields = _stat(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def wait_gone(pid: int, timeout: float) -> bool:
    """Whether `pid` exits within `timeout` seconds."""
    try:
        wait_for(lambda: not is_alive(pid), timeout=timeout, interval=0.05, message=f"{pid}")
    except HarnessError:
        return False
    return True


def children_of(pid: int) -> list[int]:
    """Pids of the live children of `pid`."""
    return [child for child in _pids() if (f := _stat(child)) and f[0] != "Z" and int(f[1]) == pid]


def processes_mentioning(*markers: str) -> list[str]:
    """Live processes whose command line or working directory contains any marker.

    Each as ``"<pid> <command line>"``; the calling process is left out.
    """
    found = []
    for pid in _pids():
        try:
            cmdline = (
                Path(f"/proc/{pid}/cmdline")
                .read_bytes()
                .replace(b"\0", b" ")
                .decode(errors="replace")
            )
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if any(m in cmdline or m in cwd for m in markers) and is_alive(pid):
            found.append(f"{pid} {cmdline.strip()}")
    return found


def _pids() -> list[int]:
    """Every process but this one."""
    with os.scandir("/proc") as entries:
        pids = (int(entry.name) for entry in entries if entry.name.isdigit())
        return [pid for pid in pids if pid != os.getpid()]


def _stat(pid: int) -> list[str] | None:
    """Fields of ``/proc/<pid>/stat`` after the command name: state, ppid, ..."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rsplit(")", 1)[-1].split()


class Process:
    """One child process in a session of its own, its output in ``log_path``.

    It can be started again with the same command line (a restarted
    coordinator comes back where its agents look); the log then grows.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
        *,
        fresh_log: bool = False,
    ) -> None:
        """Describe the process; nothing starts before `start`.

        Args:
            env: its whole environment; default `clean_env()`.
            fresh_log: empty the log file at the first start (else append).
        """
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env) if env is not None else clean_env()
        self.suspended = False
        #: When it was last started (time.monotonic()).
        self.started_at = float("-inf")
        self._log_mode = "wb" if fresh_log else "ab"
        self._popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        """Start (or start again) the process."""
        with open(self.log_path, self._log_mode) as log:  # the child keeps its own copy
            self._popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )
        self._log_mode = "ab"
        self.started_at = time.monotonic()
        self.suspended = False
        return self

    @property
    def popen(self) -> subprocess.Popen[bytes]:
        """The running (or last) child."""
        if self._popen is None:
            raise HarnessError(f"{self.name} was not started")
        return self._popen

    @property
    def pid(self) -> int:
        """The process id."""
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        """The exit code once it exited (negative: killed by that signal), else None."""
        return None if self._popen is None else self._popen.poll()

    @property
    def running(self) -> bool:
        """Started and not exited (a suspended process runs)."""
        return self._popen is not None and self._popen.poll() is None

    def check_running(self) -> None:
        """Raise `HarnessError`, with the log's tail, if the process has exited."""
        if not self.running:
            raise HarnessError(f"{self.name} exited with {self.returncode}\n{self.log_tail()}")

    def signal(self, signum: int) -> None:
        """Send `signum` to the process alone, if it runs."""
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signum)

    def signal_group(self, signum: int) -> None:
        """Send `signum` to the process and its group, as a terminal's Ctrl-C does."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signum)

    def suspend(self) -> None:
        """SIGSTOP the process alone (not its children)."""
        self.signal(signal.SIGSTOP)
        self.suspended = True

    def resume(self) -> None:
        """SIGCONT."""
        self.signal(signal.SIGCONT)
        self.suspended = False

    def terminate(self) -> None:
        """SIGCONT (a stopped process cannot act on SIGTERM), then SIGTERM."""
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        self.suspended = False

    def kill(self) -> None:
        """SIGKILL the process alone, and reap it; its children in other sessions live on."""
        if self.running:
            self.popen.kill()
            self.popen.wait(STOP_TIMEOUT_S)
        self.suspended = False

    def wait(self, timeout: float) -> int:
        """The exit code, once the process exits by itself within `timeout` seconds.

        Raises:
            HarnessError: it still runs; shows the log.
        """
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise HarnessError(
                f"{self.name} still runs after {timeout:g}s\n{self.log_tail()}"
            ) from None

    def wait_or_kill(self, timeout: float) -> int | None:
        """Wait `timeout` s for it to exit, else SIGKILL its whole group; the exit code."""
        if self._popen is None:
            return None
        try:
            return self._popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal_group(signal.SIGKILL)
            return self._popen.wait()
        finally:
            self.signal_group(signal.SIGKILL)  # whatever it left in its group

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """`terminate`, then SIGKILL to its whole group after `timeout` seconds; the exit code."""
        self.terminate()
        return self.wait_or_kill(timeout)

    def log(self) -> str:
        """Everything it printed so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def last_lines(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last `lines` lines it printed."""
        return "\n".join(self.log().splitlines()[-lines:])

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last lines it printed, headed by its name and log file."""
        return f"--- {self.name} ({self.log_path}), last lines ---\n{self.last_lines(lines)}"


def stop_together(processes: Iterable[Process], timeout: float = STOP_TIMEOUT_S) -> None:
    """`terminate` them all at once, then SIGKILL those still there after `timeout` s."""
    processes = list(processes)
    for process in processes:
        process.terminate()
    deadline = time.monotonic() + timeout
    for process in processes:
        process.wait_or_kill(max(0.0, deadline - time.monotonic()))


class Processes:
    """Starts processes logging to one directory; `close` stops every one, newest first."""

    def __init__(
        self, log_dir: Path, *, env: Mapping[str, str] | None = None, fresh_logs: bool = False
    ) -> None:
        """Nothing starts yet.

        Args:
            env: the environment of every process; default `clean_env()`.
            fresh_logs: empty each log file at its process's first start.
        """
        self.log_dir = log_dir
        self.env = dict(env) if env is not None else clean_env()
        self.fresh_logs = fresh_logs
        self.started: list[Process] = []
        log_dir.mkdir(parents=True, exist_ok=True)

    def start(
        self, name: str, argv: Sequence[str], *, env: Mapping[str, str] | None = None
    ) -> Process:
        """Start ``argv`` now, with `env` added to the environment; logs to
        ``<log_dir>/<name>.log``."""
        log_path = self.log_dir / f"{name}.log"
        environ = {**self.env, **(env or {})}
        process = Process(name, argv, log_path, environ, fresh_log=self.fresh_logs)
        self.started.append(process)
        return process.start()

    def close(self) -> None:
        """Stop everything started, newest first."""
        for process in reversed(self.started):
            with contextlib.suppress(Exception):
                process.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def run_checked(
    argv: Sequence[str], *, timeout: float, log_path: Path, what: str
) -> subprocess.CompletedProcess[str]:
    """Run a short command to completion in a session of its own; its output is
    appended to `log_path`.

    Raises:
        HarnessError: it failed or timed out; the message shows its output.
    """
    try:
        done = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            env=clean_env(),
            timeout=timeout,
            check=False,
            start_new_session=True,
        )
    except subprocess.TimeoutExpired as error:
        raise HarnessError(f"{what} did not finish within {timeout:g}s") from error
    with open(log_path, "a") as log:
        log.write(f"$ {' '.join(argv)}\n{done.stdout}{done.stderr}(exit {done.returncode})\n")
    if done.returncode != 0:
        raise HarnessError(f"{what} exited {done.returncode}:\n{done.stdout}{done.stderr}")
    return done
