"""The agent daemon: stays connected, fences itself, drains, exits.

The daemon keeps one :class:`~hydra.agent.session.Session` at a time and
reconnects through :func:`hydra.retrying.async_grpc_retrying`, moving to the
next target after every failure. Attempts keep running while it is
disconnected; their reports wait in the lease book until a coordinator
acknowledges them. A lease that cannot be renewed for the lease TTL has its
attempt killed and reported ``FENCED``.

Preconditions are checked in the background under the lease, on a slot of
their own; checks also keep going across a reconnection, but verdicts reached
while disconnected are not sent (an attempt that is ready still starts; a lease
that is not ready is forgotten and expires on the coordinator). When the agent
drains or stops, checks in progress are stopped and their leases given back
with ``LeaseRejected``, so the coordinator re-queues those runs at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from types import MappingProxyType
from typing import Any

import grpc

from hydra import config as hydra_config
from hydra.agent.attempt import AttemptResult, OutputStream, Started
from hydra.agent.isolation import Isolation, RunAs
from hydra.agent.leases import LeaseBook
from hydra.agent.metrics import AgentMetrics, AgentNow
from hydra.agent.output import OutputsDirectory
from hydra.agent.preconditions import MAX_CONCURRENT_CHECKS
from hydra.agent.session import AgentState, Session, SessionEnd
from hydra.agent.token_file import check_token_file, warn_of_token_in_environment
from hydra.domain import AttemptOutcome, LeaseKey, PreconditionVerdict, agent_id_problem
from hydra.metrics_http import MetricsServer, MetricsTls, check_metrics_listen
from hydra.retrying import async_grpc_retrying, is_reconnectable
from hydra.spec import format_duration
from hydra.tls import ClientTls, client_tls, connection_problem

log = logging.getLogger("hydra.agent")

#: After the drain grace, how long killed attempts' reports may wait for acknowledgement.
REPORT_FLUSH_SECONDS = 5.0
#: How long a closing stream may take to deliver what is queued.
CLOSE_SECONDS = 2.0


@dataclass(frozen=True, kw_only=True, slots=True)
class AgentConfig:
    """How an agent runs. ``hydra agent`` builds it from flags and the environment."""

    #: Coordinator addresses (``host:port``), tried in turn.
    targets: Sequence[str]
    agent_id: str = field(default_factory=socket.gethostname)
    hostname: str = field(default_factory=socket.gethostname)
    #: Matched against task selectors.
    labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    #: Attempts run at once.
    capacity: int = field(default_factory=lambda: os.cpu_count() or 1)
    #: On SIGTERM or Drain: how long running attempts may take before they are killed.
    drain_grace: timedelta = timedelta(minutes=5)
    #: Longest wait between two connection attempts.
    reconnect_max_backoff: timedelta = timedelta(seconds=5)
    #: SIGTERM → SIGKILL delay when an offer does not set one.
    default_kill_grace: timedelta = timedelta(seconds=10)
    #: Sent as ``authorization: Bearer <token>`` when set (and no ``token_file``).
    token: str | None = None
    #: A file holding the credential, read at every connection; wins over ``token``.
    token_file: str | None = None
    #: More variables (names or patterns) passed from the agent's environment to tasks.
    pass_env: Sequence[str] = ()
    #: The user attempts and command checks run as; None: the agent's.
    run_as: str | None = None
    #: Where secrets are read from, one file per secret.
    secrets_dir: str | None = None
    #: TLS to the coordinators (CA, client certificate for mTLS); None: plaintext.
    tls: ClientTls | None = None
    #: Precondition checks evaluated at once, across all leases.
    max_concurrent_checks: int = MAX_CONCURRENT_CHECKS
    #: host:port of the Prometheus endpoint (`--metrics-listen`); None: not served.
    metrics_listen: str | None = None
    #: The certificate `/metrics` serves TLS with (None: plaintext).
    metrics_tls: MetricsTls | None = None
    #: Serve `/metrics` in plaintext beyond loopback (`--metrics-insecure`).
    metrics_insecure: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "targets", tuple(self.targets))
        object.__setattr__(self, "pass_env", tuple(self.pass_env))
        if not self.targets:
            raise ValueError("an agent needs at least one coordinator target")
        if self.capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {self.capacity}")
        if (problem := agent_id_problem(self.agent_id)) is not None:
            raise ValueError(f"agent_id: {problem}")
        if self.max_concurrent_checks < 1:
            raise ValueError(
                f"max_concurrent_checks must be at least 1, got {self.max_concurrent_checks}"
            )

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ, **overrides: Any) -> AgentConfig:
        """Targets from ``HYDRA_COORDINATORS``, token from ``HYDRA_TOKEN`` or
        ``HYDRA_TOKEN_FILE``, TLS from ``HYDRA_TLS_*``, isolation from ``HYDRA_PASS_ENV``,
        ``HYDRA_RUN_AS`` and ``HYDRA_SECRETS_DIR``, then ``overrides``."""
        base = cls(
            targets=hydra_config.coordinators(environ),
            token=hydra_config.token(environ),
            token_file=hydra_config.token_file(environ),
            tls=client_tls(environ=environ),
            pass_env=hydra_config.pass_env(environ),
            run_as=hydra_config.run_as(environ),
            secrets_dir=hydra_config.secrets_dir(environ),
        )
        return replace(base, **overrides)


class AgentDaemon:
    """One agent: :meth:`run` until drained or stopped."""

    def __init__(self, config: AgentConfig) -> None:
        """Checks what isolation and the token file need.

        Raises:
            IsolationError: ``run_as`` is no user, or one the agent cannot run as.
            TokenFileError: ``token_file`` is missing, unreadable or empty.
        """
        self.config = config
        self.isolation = isolation(config)
        if config.token_file is not None:
            check_token_file(config.token_file)
        self._outputs = OutputsDirectory(config.agent_id, owner=self.isolation.owner)
        #: Every metric of this agent, in a registry of its own (docs/metrics.md).
        self.metrics = AgentMetrics()
        self._metrics_server = _metrics_server(config, self.metrics)
        self._book = LeaseBook(
            self,
            max_concurrent_checks=config.max_concurrent_checks,
            outputs=self._outputs,
            isolation=self.isolation,
            metrics=self.metrics,
        )
        self.metrics.watch(self._now)
        self._state = AgentState(config=config, book=self._book, request_drain=self.request_drain)
        self._session: Session | None = None
        self._target_index = 0
        self._drain_requested = asyncio.Event()
        self._stop_requested = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False

    @property
    def metrics_address(self) -> str | None:
        """host:port `/metrics` is served on, once running (None: not served)."""
        server = self._metrics_server
        return None if server is None or not server.port else server.address

    def _now(self) -> AgentNow:
        """What the agent holds now: a scrape (on the metrics thread) reads it on the
        event loop, which owns the lease book."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return self._snapshot()

        async def snapshot() -> AgentNow:
            return self._snapshot()

        return asyncio.run_coroutine_threadsafe(snapshot(), loop).result(timeout=5)

    def _snapshot(self) -> AgentNow:
        return AgentNow(
            attempts_running=self._book.processes(),
            slots_used=self._book.active(),
            capacity=self.config.capacity,
            connected=self._ready_session() is not None,
            draining=self._state.draining,
        )

    @property
    def draining(self) -> bool:
        """Takes no new leases and exits once its attempts are done."""
        return self._state.draining

    def request_drain(self, reason: str = "asked to drain") -> None:
        """Takes no new leases; exits when attempts are done (or killed after the grace)."""
        if self._state.draining:
            return
        log.info("draining (%s): taking no new leases", reason)
        self._state.draining = True
        self._drain_requested.set()
        self._give_back_checking_leases("the agent is draining")
        if self._session is not None:
            self._session.heartbeat_now()

    def request_stop(self) -> None:
        """Kills every attempt at once and exits."""
        log.warning("stopping now: killing every attempt")
        self._stop_requested.set()

    async def run(self) -> int:
        """Serves until drained (0), stopped (0) or refused by a coordinator (1)."""
        log.info(
            "agent %s starting: capacity %d, coordinators %s",
            self.config.agent_id,
            self.config.capacity,
            ", ".join(self.config.targets),
        )
        self._log_isolation()
        self._outputs.remove_stale()
        self._loop = asyncio.get_running_loop()
        if self._metrics_server is not None:
            self._metrics_server.start()
        connection = asyncio.create_task(self._stay_connected())
        fencing = asyncio.create_task(self._fence_expired_leases())
        drained = asyncio.create_task(self._drain_when_asked())
        stopped = asyncio.create_task(self._stop_requested.wait())
        immediately = True  # also when run() itself is cancelled
        try:
            await asyncio.wait({connection, drained, stopped}, return_when=asyncio.FIRST_COMPLETED)
            immediately = self._stop_requested.is_set()
        finally:
            for helper in (fencing, drained, stopped):
                helper.cancel()
            await asyncio.gather(fencing, drained, stopped, return_exceptions=True)
            await self._shut_down(connection, immediately=immediately)
            if self._metrics_server is not None:
                await asyncio.to_thread(self._metrics_server.stop)
        return self._exit_code(connection)

    def _log_isolation(self) -> None:
        """Says whom attempts run as; warns of what would expose the agent to them."""
        run_as = self.isolation.run_as
        switches = run_as is not None and run_as.switches
        if run_as is not None and switches:
            log.info("attempts and command checks run as %s (uid %d)", run_as.user, run_as.uid)
        elif os.geteuid() == 0:
            log.warning("the agent runs as root, and attempts with it; --run-as USER changes that")
        warn_of_token_in_environment(os.environ, tasks_run_as_agent=not switches)
        secrets_dir = self.isolation.secrets_dir
        if secrets_dir is not None and not os.path.isdir(secrets_dir):
            log.warning(
                "--secrets-dir %s is no directory: attempts needing secrets fail", secrets_dir
            )

    # --- LeaseListener: relay attempt events to the current stream ---------------

    def attempt_started(self, lease: LeaseKey, argv: Sequence[str], started: Started) -> None:
        """Announces the start while connected; otherwise the report will tell."""
        if (session := self._ready_session()) is not None:
            session.send_started(lease, argv, started)

    def attempt_output(self, lease: LeaseKey, stream: OutputStream, data: bytes) -> bool:
        """Forwards output while a welcomed stream exists; False (dropped) otherwise."""
        session = self._ready_session()
        return session is not None and session.send_output(lease, stream, data)

    def attempt_finished(self, lease: LeaseKey, result: AttemptResult) -> None:
        """Sends the report now if connected; otherwise it goes after the next Welcome."""
        if (session := self._ready_session()) is not None:
            session.send_report(lease, result)

    def preconditions_checked(self, lease: LeaseKey, verdicts: list[PreconditionVerdict]) -> None:
        """Sends the verdicts while connected; dropped otherwise (see the module doc)."""
        if (session := self._ready_session()) is not None:
            session.send_verdicts(lease, verdicts)
        else:
            log.info("lease %s: precondition verdicts not sent: not connected", lease)

    def _ready_session(self) -> Session | None:
        session = self._session
        return session if session is not None and session.ready else None

    def _give_back_checking_leases(self, reason: str) -> None:
        """Stops all precondition checks; their leases go back to the coordinator."""
        for lease in self._book.stop_all_checks(reason):
            if (session := self._ready_session()) is not None:
                session.send_rejection(lease, reason)

    # --- connection -----------------------------------------------------------

    async def _stay_connected(self) -> None:
        while not self._closing:
            end: SessionEnd | None = SessionEnd.CLOSED
            max_backoff = self.config.reconnect_max_backoff.total_seconds()
            async for attempt in async_grpc_retrying(maximum=max_backoff):
                with attempt:
                    end = await self._connect_once()
            if end is SessionEnd.CLOSED:
                return
            # A session that worked ended: start again at once, with a fresh backoff.

    async def _connect_once(self) -> SessionEnd | None:
        """One session; None when a working session broke (reconnect at once)."""
        if self._closing:
            return SessionEnd.CLOSED
        targets = self.config.targets
        session = Session(targets[self._target_index % len(targets)], self._state)
        self._session = session
        try:
            end = await session.run()
        except grpc.RpcError as error:
            self._target_index += 1
            if error.code() is grpc.StatusCode.ALREADY_EXISTS:
                # Retried with the backoff: a restarted agent gets in once its old session ends.
                log.error("%s; is another agent running with this id?", error.details())
            else:
                log.warning("%s", self._problem(session.target, error))
            if session.healthy and is_reconnectable(error):
                return None
            raise
        finally:
            self._session = None
            self._book.interrupt_output()
        if end is SessionEnd.RELOCATE:
            self._target_index += 1
        return end

    def _problem(self, target: str, error: grpc.RpcError) -> str:
        """One line: TLS problems say what to do; anything else gives its status."""
        problem = connection_problem(target, error.details() or "", self.config.tls)
        return problem or f"stream to {target}: {_describe(error)}"

    async def _shut_down(self, connection: asyncio.Task[None], *, immediately: bool) -> None:
        """Kills what still runs, lets the last reports out, closes the stream."""
        self._give_back_checking_leases("the agent is stopping")
        if self._book.processes():
            self._book.kill_all(AttemptOutcome.CANCELLED, "agent stopped", immediately=immediately)
        await self._book.close()
        self._closing = True
        if self._session is not None and not connection.done():
            self._session.close()
            await asyncio.wait({connection}, timeout=CLOSE_SECONDS)
        connection.cancel()
        await asyncio.gather(connection, return_exceptions=True)
        log.info("agent %s stopped", self.config.agent_id)

    def _exit_code(self, connection: asyncio.Task[None]) -> int:
        if connection.cancelled() or (error := connection.exception()) is None:
            return 0
        if isinstance(error, grpc.RpcError):
            log.error("giving up: %s", _describe(error))
        else:
            log.error("giving up after an internal error", exc_info=error)
        return 1

    # --- fencing and draining -------------------------------------------------

    async def _fence_expired_leases(self) -> None:
        """Kills attempts whose lease could not be renewed for the TTL."""
        while True:
            ttl = self._state.lease_ttl
            if ttl is not None:
                for lease in self._book.expired(ttl):
                    message = (
                        f"lease could not be renewed for {format_duration(timedelta(seconds=ttl))}"
                        "; killed to avoid a duplicate"
                    )
                    self._book.kill(lease, AttemptOutcome.FENCED, message)
            await asyncio.sleep(min(max((ttl or 1.0) / 20, 0.02), 1.0))

    async def _drain_when_asked(self) -> None:
        """Once draining: waits for attempts (killing them after the grace), then reports."""
        await self._drain_requested.wait()
        loop = asyncio.get_running_loop()
        grace = self.config.drain_grace.total_seconds()
        deadline = loop.time() + grace
        book = self._book
        if not await book.wait_until(lambda: book.processes() == 0, grace):
            log.warning("drain grace %s is over", format_duration(self.config.drain_grace))
            book.kill_all(AttemptOutcome.CANCELLED, "agent drained: the drain grace is over")
            await book.wait_until(lambda: book.processes() == 0, None)
        flush = max(deadline - loop.time(), REPORT_FLUSH_SECONDS)
        if not await book.wait_until(lambda: book.idle, flush):
            log.warning("exiting with %d unacknowledged reports", len(book.pending()))
        log.info("drained")


def _metrics_server(config: AgentConfig, metrics: AgentMetrics) -> MetricsServer | None:
    """The agent's `/metrics` server (not started), if configured.

    Raises:
        InvalidArgument: `metrics_listen` is no HOST:PORT, or beyond loopback without
            TLS or `metrics_insecure`.
    """
    if config.metrics_listen is None:
        return None
    host, port = check_metrics_listen(
        config.metrics_listen,
        tls=config.metrics_tls,
        insecure=config.metrics_insecure,
        insecure_flag="--metrics-insecure",
    )
    return MetricsServer(metrics.registry, host, port, tls=config.metrics_tls)


def isolation(config: AgentConfig) -> Isolation:
    """How the agent's processes are isolated, as configured.

    Raises:
        IsolationError: see :meth:`RunAs.lookup`, and an agent-only variable in ``pass_env``.
    """
    run_as = RunAs.lookup(config.run_as) if config.run_as else None
    return Isolation(pass_env=tuple(config.pass_env), run_as=run_as, secrets_dir=config.secrets_dir)


async def run_agent(config: AgentConfig) -> int:
    """Runs an agent until it is drained; what ``hydra agent`` calls.

    SIGTERM and SIGINT start a drain (the coordinator hears of it at once via a
    heartbeat with ``draining``); a second SIGINT kills every attempt and exits.
    """
    daemon = AgentDaemon(config)
    loop = asyncio.get_running_loop()

    def on_signal(signum: signal.Signals) -> None:
        if signum is signal.SIGINT and daemon.draining:
            daemon.request_stop()
        else:
            daemon.request_drain(f"got {signum.name}")

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        return await daemon.run()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


def _describe(error: grpc.RpcError) -> str:
    code = error.code()
    return f"{getattr(code, 'name', code)}: {error.details()}"
