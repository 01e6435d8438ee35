"""Hydra's own processes: ``hydra coordinator``, ``hydra agent`` and ``hydractl``,
each run as ``python -m ...`` with this interpreter, and the waits until they
serve."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import psycopg
from grpc_health.v1 import health_pb2, health_pb2_grpc

from harness.net import free_port
from harness.processes import Process, Processes, clean_env
from harness.wait import HarnessError, wait_for
from hydra.tls import ClientTls

HYDRA = (sys.executable, "-m", "hydra")
HYDRACTL = (sys.executable, "-m", "hydra.client.hydractl")
#: A loaded 2-core machine starts Python, gRPC and the migrations slowly.
START_TIMEOUT_S = 60.0


@dataclass(frozen=True, kw_only=True, slots=True)
class LeaseTiming:
    """A coordinator's lease flags, as the command line spells them (``"400ms"``)."""

    ttl: str
    heartbeat: str
    kill_grace: str

    def flags(self) -> list[str]:
        """``--lease-ttl TTL --heartbeat H --kill-grace G``."""
        return [
            "--lease-ttl",
            self.ttl,
            "--heartbeat",
            self.heartbeat,
            "--kill-grace",
            self.kill_grace,
        ]


def coordinator_argv(
    conninfo: str,
    listen: str,
    *,
    timing: LeaseTiming | None = None,
    coordinator_id: str | None = None,
    pool: int | None = None,
    log_level: str | None = "info",
    insecure: bool = True,
) -> list[str]:
    """The command line of a ``hydra coordinator``; None leaves a flag at its default.

    `insecure` (the default, so that tests and benchmarks need no credentials)
    serves without authentication; tests of security turn it off."""
    argv = [*HYDRA, *(["--log-level", log_level] if log_level else [])]
    argv += ["coordinator", "--db", conninfo, "--listen", listen]
    argv += ["--insecure"] if insecure else []
    argv += ["--id", coordinator_id] if coordinator_id else []
    argv += ["--pool", str(pool)] if pool is not None else []
    return argv + (timing.flags() if timing else [])


def agent_argv(
    coordinators: Sequence[str],
    agent_id: str,
    *,
    capacity: int,
    drain_grace: str,
    labels: Mapping[str, str] | None = None,
    log_level: str = "info",
) -> list[str]:
    """The command line of a ``hydra agent`` that tries `coordinators` in order."""
    argv = [*HYDRA, "--log-level", log_level, "agent", "--coordinator", ",".join(coordinators)]
    argv += ["--id", agent_id, "--capacity", str(capacity), "--drain-grace", drain_grace]
    return argv + [arg for k, v in (labels or {}).items() for arg in ("--label", f"{k}={v}")]


@dataclass(frozen=True)
class Hydractl:
    """Runs ``hydractl`` against one coordinator; no call may print a traceback."""

    address: str
    timeout: float = 60.0
    #: ``HYDRA_*`` settings it runs with (none of the developer's own are kept),
    #: e.g. the HYDRA_HOME whose contexts file names its credential.
    env: Mapping[str, str] = field(default_factory=dict)

    def run(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        """The finished ``hydractl --coordinator ADDRESS ARGS...``, output captured."""
        done = subprocess.run(
            [*HYDRACTL, "--coordinator", self.address, *args],
            capture_output=True,
            text=True,
            env=clean_env(**self.env),
            timeout=self.timeout,
            check=False,
        )
        if "Traceback" in done.stderr:
            raise HarnessError(f"hydractl {' '.join(args)}:\n{done.stderr}")
        if check and done.returncode != 0:
            raise HarnessError(
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


@dataclass(frozen=True)
class Coordinator:
    """A ``hydra coordinator`` process and where it serves."""

    process: Process
    address: str

    @property
    def hydractl(self) -> Hydractl:
        """hydractl against this coordinator."""
        return Hydractl(self.address)


def start_coordinator(
    processes: Processes,
    conninfo: str,
    *,
    name: str = "coordinator",
    timing: LeaseTiming | None = None,
    pool: int | None = None,
    log_level: str = "info",
    timeout: float = START_TIMEOUT_S,
    insecure: bool = True,
    extra_args: Sequence[str] = (),
    tls: ClientTls | None = None,
) -> Coordinator:
    """A ``hydra coordinator`` on a free local port, once gRPC health says SERVING
    (without authentication unless `insecure` is off).

    ``extra_args`` go on its command line (``--tls-cert ...``); ``tls`` is how
    to reach it then.
    """
    for attempt in range(3):  # another process may take the free port before we bind it
        address = f"127.0.0.1:{free_port()}"
        argv = coordinator_argv(
            conninfo, address, timing=timing, pool=pool, log_level=log_level, insecure=insecure
        )
        argv += extra_args
        process = processes.start(f"{name}-{attempt}" if attempt else name, argv)
        try:
            wait_serving(process, address, timeout, tls=tls)
        except HarnessError:
            if process.running or not _lost_the_port(process.log()):
                raise
            continue
        return Coordinator(process, address)
    raise HarnessError(f"{name} found no free port\n{process.log_tail()}")


def _lost_the_port(log: str) -> bool:
    return "Failed to bind to address" in log or "cannot listen on" in log


def start_agent(
    processes: Processes,
    coordinators: Coordinator | Sequence[str],
    agent_id: str,
    *,
    capacity: int,
    drain_grace: str = "2s",
    labels: Mapping[str, str] | None = None,
    log_level: str = "info",
    extra_args: Sequence[str] = (),
) -> Process:
    """A ``hydra agent`` process, not waited for (see `wait_agents`, `wait_agent_state`);
    ``extra_args`` go on its command line (``--tls-ca ...``)."""
    targets = [coordinators.address] if isinstance(coordinators, Coordinator) else coordinators
    argv = agent_argv(
        targets,
        agent_id,
        capacity=capacity,
        drain_grace=drain_grace,
        labels=labels,
        log_level=log_level,
    )
    return processes.start(agent_id, [*argv, *extra_args])


def wait_serving(
    process: Process,
    address: str,
    timeout: float = START_TIMEOUT_S,
    *,
    tls: ClientTls | None = None,
) -> None:
    """Wait until gRPC health says SERVING at `address` (over `tls` if given); fail
    early if `process` exits."""
    with _channel(address, tls) as channel:
        health = health_pb2_grpc.HealthStub(channel)

        def serving() -> bool:
            process.check_running()
            try:
                status = health.Check(health_pb2.HealthCheckRequest(), timeout=1).status
            except grpc.RpcError:
                return False
            return bool(status == health_pb2.HealthCheckResponse.SERVING)

        message = f"{process.name} serving on {address}"
        wait_for(serving, timeout=timeout, interval=0.1, message=message)


def _channel(address: str, tls: ClientTls | None) -> grpc.Channel:
    if tls is None:
        return grpc.insecure_channel(address)
    return grpc.secure_channel(address, tls.credentials(), options=tls.channel_options())


def wait_agents(
    conninfo: str,
    ids: Sequence[str],
    *,
    watched: Sequence[Process] = (),
    timeout: float = START_TIMEOUT_S,
    interval: float = 0.1,
) -> None:
    """Wait until the database records every one of `ids` as connected; fail
    early if a `watched` process exits. A database error counts as not yet."""

    def connected() -> bool:
        for process in watched:
            process.check_running()
        with psycopg.connect(conninfo, autocommit=True, connect_timeout=5) as conn:
            row = conn.execute(
                "SELECT count(*) FROM hydra_agents WHERE id = ANY(%s) AND state = 'connected'",
                (list(ids),),
            ).fetchone()
        return row is not None and row[0] == len(ids)

    message = f"agents {list(ids)} connected"
    wait_for(
        connected, timeout=timeout, interval=interval, message=message, not_yet=(psycopg.Error,)
    )


def wait_agent_state(
    hydractl: Hydractl, agent_id: str, state: str, timeout: float = START_TIMEOUT_S
) -> dict[str, Any]:
    """The agent as ``agents list --all -o json`` shows it, once it is in `state`."""

    def reached() -> dict[str, Any] | None:
        agents = hydractl.json("agents", "list", "--all")
        return next((a for a in agents if a["id"] == agent_id and a["state"] == state), None)

    message = f"agent {agent_id} to be {state}"
    return wait_for(reached, timeout=timeout, interval=0.2, message=message)
