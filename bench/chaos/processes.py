"""Child processes of a chaos run, each in a session of its own with its output
in a log file, so that Ctrl-C reaches only the chaos tool, which then stops them."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

PYTHON = sys.executable
HYDRA = (PYTHON, "-m", "hydra")
HYDRACTL = (PYTHON, "-m", "hydra.client.hydractl")
#: SIGTERM to SIGKILL when stopping a process at the end.
STOP_TIMEOUT_S = 15.0


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without any ``HYDRA_*`` setting, plus `extra`."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("HYDRA_")}
    env.update(extra)
    return env


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host` that was free a moment ago (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
    return port


def listening(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on `host`:`port`."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
        return True
    return False


class ManagedProcess:
    """One child process that can be started, killed, stopped and continued, and
    started again with the same command line; its output goes to `log_path`."""

    def __init__(
        self, name: str, argv: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env) if env is not None else clean_env()
        self.suspended = False
        #: When it was last started (time.monotonic()).
        self.started_at = float("-inf")
        self._popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start (or start again) the process."""
        with open(self.log_path, "ab") as log:  # the child keeps its own copy
            self._popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )
        self.started_at = time.monotonic()
        self.suspended = False

    @property
    def running(self) -> bool:
        """Started and not exited (a suspended process runs)."""
        return self._popen is not None and self._popen.poll() is None

    @property
    def exit_code(self) -> int | None:
        """The exit code once it exited (negative: killed by that signal)."""
        return None if self._popen is None else self._popen.poll()

    def kill(self) -> None:
        """SIGKILL, and wait for it; its children in other process groups live on."""
        if self.running:
            assert self._popen is not None
            self._popen.kill()
            self._popen.wait(timeout=STOP_TIMEOUT_S)
        self.suspended = False

    def suspend(self) -> None:
        """SIGSTOP the process alone (not its children)."""
        self._send(signal.SIGSTOP)
        self.suspended = True

    def resume(self) -> None:
        """SIGCONT."""
        self._send(signal.SIGCONT)
        self.suspended = False

    def terminate(self) -> None:
        """SIGCONT (a stopped process cannot act on SIGTERM), then SIGTERM."""
        self._send(signal.SIGCONT)
        self._send(signal.SIGTERM)
        self.suspended = False

    def wait_or_kill(self, timeout: float) -> None:
        """Wait `timeout` s for it to exit, then SIGKILL its whole group."""
        if self._popen is None:
            return
        try:
            self._popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self._signal_group(signal.SIGKILL)
            self._popen.wait()
        self._signal_group(signal.SIGKILL)  # whatever it left in its group

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGCONT, SIGTERM, then SIGKILL to its whole group after `timeout` seconds."""
        self.terminate()
        self.wait_or_kill(timeout)

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of its log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _send(self, signum: int) -> None:
        if self.running:
            assert self._popen is not None
            with contextlib.suppress(ProcessLookupError):
                self._popen.send_signal(signum)

    def _signal_group(self, signum: int) -> None:
        assert self._popen is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._popen.pid, signum)


def run_checked(
    argv: Sequence[str], *, timeout: float, log_path: Path, what: str
) -> subprocess.CompletedProcess[str]:
    """Run a short command to completion; its output is appended to `log_path`.

    Raises:
        RuntimeError: it failed or timed out; the message shows its output.
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
        raise RuntimeError(f"{what} did not finish within {timeout:g}s") from error
    with open(log_path, "a") as log:
        log.write(f"$ {' '.join(argv)}\n{done.stdout}{done.stderr}(exit {done.returncode})\n")
    if done.returncode != 0:
        raise RuntimeError(f"{what} exited {done.returncode}:\n{done.stdout}{done.stderr}")
    return done
