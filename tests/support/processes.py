"""Hydra as real processes, for end-to-end tests: `hydra coordinator`, `hydra agent`,
`hydra dev` and `hydractl`, each started as ``python -m ...`` with this interpreter.

Every process runs in a session of its own with its output in a log file, and
`Processes` stops whatever it started (SIGTERM, then SIGKILL after a deadline),
newest first, so a failing test leaves nothing running.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from support.net import free_port
from support.wait import wait_for

HYDRA = (sys.executable, "-m", "hydra")
HYDRACTL = (sys.executable, "-m", "hydra.client.hydractl")
#: Lease timing of the brief: failures show within seconds.
FAST_TIMING = ("--lease-ttl", "2s", "--heartbeat", "400ms", "--kill-grace", "1s")
#: SIGTERM to SIGKILL, when stopping a process at the end of a test.
STOP_TIMEOUT_S = 15.0
#: Generous: a loaded 2-core machine starts Python, gRPC and PostgreSQL slowly.
START_TIMEOUT_S = 30.0
LOG_TAIL_LINES = 40


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without any ``HYDRA_*`` setting of the developer's, plus `extra`."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("HYDRA_")}
    env.update(extra)
    return env


def is_alive(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie is not)."""
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"


def children_of(pid: int) -> list[int]:
    """Pids of the live children of `pid`."""
    pids = (int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit())
    return [
        child
        for child in pids
        if (fields := _stat(child)) and fields[0] != "Z" and int(fields[1]) == pid
    ]


def _stat(pid: int) -> list[str] | None:
    """Fields of ``/proc/<pid>/stat`` after the command name: state, ppid, ..."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rsplit(")", 1)[-1].split()


def processes_mentioning(*markers: str) -> list[str]:
    """Live processes whose command line or working directory contains any marker.

    Each as ``"<pid> <command line>"``; the calling process is left out.
    """
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(entry / "cwd")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if any(m in cmdline or m in cwd for m in markers) and is_alive(int(entry.name)):
            found.append(f"{entry.name} {cmdline.strip()}")
    return found


class Process:
    """One child process in a session of its own, its output in ``log_path``."""

    def __init__(
        self, name: str, argv: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env) if env is not None else clean_env()
        self._popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        with open(self.log_path, "ab") as log:  # the child keeps its own copy
            self._popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )
        return self

    @property
    def popen(self) -> subprocess.Popen[bytes]:
        assert self._popen is not None, f"{self.name} was not started"
        return self._popen

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def signal(self, signum: int) -> None:
        """Send `signum` to the process alone."""
        self.popen.send_signal(signum)

    def signal_group(self, signum: int) -> None:
        """Send `signum` to the process and its children, as a terminal's Ctrl-C does."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signum)

    def wait(self, timeout: float) -> int:
        """The exit code, once the process exits by itself within `timeout` seconds."""
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.name} still runs after {timeout:g}s\n{self.log_tail()}"
            ) from None

    def assert_running(self) -> None:
        """Fail, showing the log, if the process has exited."""
        code = self.returncode
        assert code is None, f"{self.name} exited with {code}\n{self.log_tail()}"

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM, then SIGKILL to its whole group after `timeout` seconds; the exit code."""
        if self._popen is None:
            return 0
        if self._popen.poll() is None:
            self._popen.terminate()
        try:
            return self._popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal_group(signal.SIGKILL)
            return self._popen.wait()
        finally:
            self.signal_group(signal.SIGKILL)  # children it left behind, if any

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        tail = "\n".join(self.log().splitlines()[-lines:])
        return f"--- {self.name} ({self.log_path}), last lines ---\n{tail}"


@dataclass(frozen=True)
class Hydractl:
    """Runs ``hydractl`` against one coordinator; no call may print a traceback."""

    address: str
    timeout: float = 60.0

    def run(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        """The finished ``hydractl --coordinator ADDRESS ARGS...``, output captured."""
        done = subprocess.run(
            [*HYDRACTL, "--coordinator", self.address, *args],
            capture_output=True,
            text=True,
            env=clean_env(),
            timeout=self.timeout,
            check=False,
        )
        assert "Traceback" not in done.stderr, f"hydractl {' '.join(args)}:\n{done.stderr}"
        if check:
            assert done.returncode == 0, (
                f"hydractl {' '.join(args)} exited {done.returncode}:\n{done.stderr}"
            )
        return done

    def ok(self, *args: str) -> str:
        """Stdout of a call that must exit 0."""
        return self.run(*args, check=True).stdout

    def json(self, *args: str) -> Any:
        """The parsed ``-o json`` output of a call that must exit 0."""
        return json.loads(self.ok(*args, "-o", "json"))

    def wait_run(self, run_id: str, *states: str, timeout: float = 30.0) -> dict[str, Any]:
        """``runs get RUN -o json``, once the run is in one of `states`."""

        def reached() -> dict[str, Any] | None:
            run: dict[str, Any] = self.json("runs", "get", run_id)
            return run if run["state"] in states else None

        message = f"run {run_id} to be {' or '.join(states)}"
        return wait_for(reached, timeout=timeout, interval=0.2, message=message)


@dataclass
class Coordinator:
    """A `hydra coordinator` process and where it serves."""

    process: Process
    address: str

    @property
    def hydractl(self) -> Hydractl:
        return Hydractl(self.address)


def wait_serving(process: Process, address: str, timeout: float = START_TIMEOUT_S) -> None:
    """Wait until gRPC health says SERVING at `address`; fail early if `process` exits."""
    with grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)

        def serving() -> bool:
            process.assert_running()
            try:
                status = health.Check(health_pb2.HealthCheckRequest(), timeout=1).status
            except grpc.RpcError:
                return False
            return bool(status == health_pb2.HealthCheckResponse.SERVING)

        wait_for(
            serving, timeout=timeout, interval=0.1, message=f"{process.name} serving on {address}"
        )


def wait_agent_state(
    hydractl: Hydractl, agent_id: str, state: str, timeout: float = START_TIMEOUT_S
) -> dict[str, Any]:
    """The agent as ``agents list --all -o json`` shows it, once it is in `state`."""

    def reached() -> dict[str, Any] | None:
        agents = hydractl.json("agents", "list", "--all")
        return next((a for a in agents if a["id"] == agent_id and a["state"] == state), None)

    return wait_for(
        reached, timeout=timeout, interval=0.2, message=f"agent {agent_id} to be {state}"
    )


class Processes:
    """Starts Hydra processes; `close` stops every one, newest first."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[Process] = []

    def start(
        self, name: str, argv: Sequence[str], env: Mapping[str, str] | None = None
    ) -> Process:
        """Start ``argv`` now; its log is ``<log_dir>/<name>.log``."""
        process = Process(name, argv, self.log_dir / f"{name}.log", env)
        self.started.append(process)
        return process.start()

    def coordinator(self, conninfo: str, name: str = "coordinator") -> Coordinator:
        """A `hydra coordinator` on `conninfo` and a free local port, once it serves."""
        for _ in range(3):  # another process may take the free port before we bind it
            address = f"127.0.0.1:{free_port()}"
            argv = [*HYDRA, "--log-level", "debug", "coordinator", "--db", conninfo]
            process = self.start(name, [*argv, "--listen", address, *FAST_TIMING])
            try:
                wait_serving(process, address)
            except AssertionError:
                if process.returncode is None or not _lost_the_port(process.log()):
                    raise
                continue
            return Coordinator(process, address)
        raise AssertionError(f"{name} found no free port\n{process.log_tail()}")

    def agent(
        self,
        coordinator: Coordinator,
        agent_id: str,
        *,
        capacity: int = 2,
        drain_grace: str = "2s",
        wait: bool = True,
    ) -> Process:
        """A `hydra agent`; with `wait`, once the coordinator lists it connected."""
        argv = [*HYDRA, "--log-level", "debug", "agent", "--coordinator", coordinator.address]
        argv += ["--id", agent_id, "--capacity", str(capacity), "--drain-grace", drain_grace]
        process = self.start(agent_id, argv)
        if wait:
            wait_agent_state(coordinator.hydractl, agent_id, "connected")
        return process

    def close(self) -> None:
        """Stop everything started, newest first; print the logs (shown if the test failed)."""
        for process in reversed(self.started):
            process.stop()
        for process in self.started:
            print(process.log_tail())

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _lost_the_port(log: str) -> bool:
    return "Failed to bind to address" in log or "cannot listen on" in log


@dataclass
class Cluster:
    """A `hydra coordinator` process on the test's database; start agents with `processes`."""

    processes: Processes
    coordinator: Coordinator
    conninfo: str

    @property
    def hydractl(self) -> Hydractl:
        return self.coordinator.hydractl

    def agent(
        self, agent_id: str, *, capacity: int = 2, drain_grace: str = "2s", wait: bool = True
    ) -> Process:
        """Start a `hydra agent`; with `wait`, return once it is connected."""
        return self.processes.agent(
            self.coordinator, agent_id, capacity=capacity, drain_grace=drain_grace, wait=wait
        )


def stop_postgres_of(home: Path, timeout: float = STOP_TIMEOUT_S) -> None:
    """Stop an embedded PostgreSQL that a killed process left running in `home`.

    Fast shutdown (SIGINT to the postmaster), then SIGKILL after `timeout`.
    """
    pid_file = home / "pgdata" / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().split()[0])
    except (FileNotFoundError, IndexError, ValueError):
        return
    try:
        if not is_alive(pid) or str(home) not in os.readlink(f"/proc/{pid}/cwd"):
            return
    except FileNotFoundError:
        return
    os.kill(pid, signal.SIGINT)
    try:
        wait_for(lambda: not is_alive(pid), timeout=timeout, interval=0.1, message="postgres")
    except AssertionError:
        os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def processes_in(log_dir: Path, home: Path | None = None) -> Iterator[Processes]:
    """`Processes` that are all stopped on exit, then any PostgreSQL left in `home`."""
    try:
        with Processes(log_dir) as started:
            yield started
    finally:
        if home is not None:
            stop_postgres_of(home)
