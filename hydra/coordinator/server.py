"""The coordinator process: gRPC server plus trigger loop, dispatcher and reaper,
all sharing work with other coordinators only through PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta

import grpc
import psycopg
import tenacity
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from psycopg_pool import AsyncConnectionPool

import hydra
from hydra import stream_batches
from hydra.config import DEFAULT_MAX_CONCURRENT_RPCS, DEFAULT_MAX_STREAMS
from hydra.coordinator.agents.commands import AgentCommand, Verb
from hydra.coordinator.agents.sessions import SessionRegistry
from hydra.coordinator.agents.stream import AgentStreams
from hydra.coordinator.api.agents import AgentApi
from hydra.coordinator.api.audit import AuditApi
from hydra.coordinator.api.auth import CredentialInterceptor, OnRefused
from hydra.coordinator.api.caller import RefusedCall
from hydra.coordinator.api.cluster import ClusterApi
from hydra.coordinator.api.credentials import CredentialApi
from hydra.coordinator.api.identities import Identities
from hydra.coordinator.api.instrumentation import MetricsInterceptor
from hydra.coordinator.api.limits import LoadLimits
from hydra.coordinator.api.logs import LogFollowers
from hydra.coordinator.api.notifications import NotificationApi
from hydra.coordinator.api.runs import RunApi
from hydra.coordinator.api.tasks import TaskApi
from hydra.coordinator.api.watch import RunWatchHub
from hydra.coordinator.cluster_metrics import ClusterCollector, ScrapeAuthorizer
from hydra.coordinator.loops.deadlines import DeadlineLoop
from hydra.coordinator.loops.deliveries import Deliveries
from hydra.coordinator.loops.dispatcher import Dispatcher
from hydra.coordinator.loops.health import Reachability
from hydra.coordinator.loops.presence import ALIVE_WINDOW, Presence
from hydra.coordinator.loops.pruner import PRUNE_BATCH, PRUNE_INTERVAL, Pruner
from hydra.coordinator.loops.reaper import Reaper
from hydra.coordinator.loops.refusals import RefusalLog
from hydra.coordinator.loops.timing import forever
from hydra.coordinator.loops.triggers import TriggerLoop
from hydra.coordinator.metrics import CoordinatorMetrics, PoolCollector, PrunerCollector
from hydra.coordinator.migrate import check_current, migrate
from hydra.coordinator.notifications import Listener
from hydra.coordinator.rendering import WORKER_WAIT, RenderPool
from hydra.coordinator.sandbox import DEFAULT_RENDER_TIMEOUT
from hydra.coordinator.store import Database, open_pool, outbox
from hydra.coordinator.store.records import LeaseTimes
from hydra.coordinator.tls import ServerTls, check_listen, server_credentials
from hydra.coordinator.webhooks import DeliveryConfig
from hydra.domain import Retention
from hydra.errors import HydraError
from hydra.limits import message_size_options
from hydra.metrics_http import MetricsServer, MetricsTls, check_metrics_listen
from hydra.v1 import agent_service_pb2 as agent_pb
from hydra.v1 import (
    agent_service_pb2_grpc,
    audit_service_pb2,
    audit_service_pb2_grpc,
    cluster_service_pb2,
    cluster_service_pb2_grpc,
    credential_service_pb2,
    credential_service_pb2_grpc,
    notification_service_pb2,
    notification_service_pb2_grpc,
    run_service_pb2,
    run_service_pb2_grpc,
    task_service_pb2,
    task_service_pb2_grpc,
)

log = logging.getLogger("hydra.coordinator")

#: How long a starting coordinator waits for its database before giving up.
DATABASE_WAIT = timedelta(minutes=2)
#: Connections of the control loops (dispatcher, trigger loop, reaper, heartbeats,
#: presence, the agents' report batches), apart from the API's --pool.
CONTROL_POOL = 4
#: Seconds PostgreSQL lets one statement of an API call run.
API_STATEMENT_TIMEOUT = 10.0
#: Seconds PostgreSQL lets one statement of a control loop run.
CONTROL_STATEMENT_TIMEOUT = 30.0
#: The client-side deadline of a transaction is its statement timeout plus this:
#: a live server's own timeout comes first; a frozen one's connection is severed.
DEADLINE_MARGIN = 2.0
#: Seconds a control loop waits for a free connection of its pool.
CONTROL_POOL_WAIT = 10.0
#: Connections of the deliveries of notifications: a flood of events cannot take
#: the connections of the control loops or of the API.
DELIVERY_POOL = 2
#: Seconds a stopping coordinator spends recording the refused calls still queued.
REFUSALS_FLUSH_SECONDS = 5.0


def _default_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True, kw_only=True, slots=True)
class CoordinatorConfig:
    """How to run one coordinator."""

    conninfo: str
    listen: str = "127.0.0.1:7070"
    pool_size: int = 10
    times: LeaseTimes = field(default_factory=LeaseTimes)
    output_limit: int = 1024 * 1024
    coordinator_id: str = field(default_factory=_default_id)
    #: Serve without authentication, and allow plaintext beyond loopback
    #: (`--insecure`; docs/security.md). Logged as a warning and shown by `cluster status`.
    insecure: bool = False
    #: Serve TLS with these files (re-read when they change); None: plaintext, which
    #: only loopback addresses allow unless ``insecure``.
    tls: ServerTls | None = None
    #: Watch and TailLogs streams served at once.
    max_streams: int = DEFAULT_MAX_STREAMS
    #: Unary calls handled at once (agents' streams not counted).
    max_concurrent_rpcs: int = DEFAULT_MAX_CONCURRENT_RPCS
    #: Apply pending migrations at start; else only check that the schema is current.
    migrate: bool = True
    #: Time limit of one run's templates (those that render in a worker).
    render_timeout: timedelta = DEFAULT_RENDER_TIMEOUT
    #: host:port of the Prometheus endpoint (`--metrics-listen`); None: not served.
    metrics_listen: str | None = None
    #: The certificate `/metrics` serves TLS with (None: plaintext, loopback unless insecure).
    metrics_tls: MetricsTls | None = None
    #: Notifications: default webhooks, secrets, time limits and tries.
    notify: DeliveryConfig = field(default_factory=DeliveryConfig)
    #: The retention of tasks that say nothing (`--retention`; the same on every coordinator).
    retention: Retention = field(default_factory=Retention)
    #: How long audit entries are kept (`--audit-retention`); None: forever.
    audit_retention: timedelta | None = None
    #: Pause between two pruning passes (`--prune-interval`).
    prune_interval: timedelta = PRUNE_INTERVAL
    #: Runs deleted per pruning transaction at most.
    prune_batch: int = PRUNE_BATCH
    #: The newest agent protocol version spoken (hydra.stream_batches); tests set 1 to
    #: stand for a coordinator older than batches.
    agent_protocol_version: int = stream_batches.NEWEST


class CoordinatorServer:
    """One coordinator process: its database, loops and gRPC server. Start it,
    serve, stop it.

    Everything is wired here, at construction: the sessions of the agents
    connected to this coordinator, the dispatcher that leases them work, and
    the loops and services that make work available and call the dispatcher
    in their transactions (see docs/architecture.md).
    """

    def __init__(self, config: CoordinatorConfig, *, on_refused: OnRefused | None = None) -> None:
        """Wire a coordinator; `on_refused` is told of every call refused for its
        credential (the audit log's sink)."""
        self.config = config
        self._on_refused = on_refused
        self.port = 0
        #: Every metric of this coordinator, in a registry of its own (docs/metrics.md).
        self.metrics = CoordinatorMetrics()
        self._metrics_server: MetricsServer | None = None
        self._sessions = SessionRegistry()
        self._api_pool = open_pool(
            config.conninfo, config.pool_size, statement_timeout=API_STATEMENT_TIMEOUT
        )
        self._control_pool = open_pool(
            config.conninfo,
            CONTROL_POOL,
            statement_timeout=CONTROL_STATEMENT_TIMEOUT,
            wait=CONTROL_POOL_WAIT,
            name="hydra-control",
        )
        self._delivery_pool = open_pool(
            config.conninfo,
            DELIVERY_POOL,
            statement_timeout=CONTROL_STATEMENT_TIMEOUT,
            wait=CONTROL_POOL_WAIT,
            name="hydra-deliveries",
        )
        # The pruner's own connection: its batches never take one the loops need.
        self._prune_pool = open_pool(
            config.conninfo,
            1,
            statement_timeout=CONTROL_STATEMENT_TIMEOUT,
            wait=CONTROL_POOL_WAIT,
            name="hydra-pruner",
        )
        #: The RPC handlers' database: API load cannot take the control loops' connections.
        self.database = self._database(self._api_pool, API_STATEMENT_TIMEOUT, "api")
        #: The control loops' database.
        self.control = self._database(self._control_pool, CONTROL_STATEMENT_TIMEOUT, "control")
        pools = {"api": self._api_pool, "control": self._control_pool}
        self.metrics.register(
            PoolCollector({**pools, "deliveries": self._delivery_pool, "pruner": self._prune_pool})
        )
        self._pools = (self._api_pool, self._control_pool, self._delivery_pool, self._prune_pool)
        self._reachability = Reachability(
            conninfo=config.conninfo, api=self.database, control=self.control
        )
        self._listener = Listener(config.conninfo)
        # Watchers and log followers read through the API's database, as RunApi does.
        self._watchers = RunWatchHub(self.database, self._listener)
        self._followers = LogFollowers(self.database, self._listener)
        # Waiting for a worker and rendering must end well before the lease does.
        self._renderer = RenderPool(
            timeout=config.render_timeout, worker_wait=min(WORKER_WAIT, config.times.ttl / 4)
        )
        self._dispatcher = Dispatcher(
            self.control, self._sessions, config.times, renderer=self._renderer
        )
        self._triggers = TriggerLoop(self.control, self._dispatcher)
        self._reaper = Reaper(self.control, self._dispatcher, config.times.ttl)
        self._deadlines = DeadlineLoop(self.control, config.notify.deadline_interval)
        # Bodies render in a worker of their own: a runaway one cannot hold dispatch's.
        self._deliveries = Deliveries(
            self._database(self._delivery_pool, CONTROL_STATEMENT_TIMEOUT, "deliveries"),
            config.coordinator_id,
            config.notify,
            RenderPool(timeout=config.render_timeout, workers=1),
        )
        #: Deletes what is past retention, one coordinator at a time; its ``stats``
        #: count what this coordinator pruned (for the metrics).
        self.pruner = Pruner(
            self._database(self._prune_pool, CONTROL_STATEMENT_TIMEOUT, "pruner"),
            config.coordinator_id,
            defaults=config.retention,
            audit_retention=config.audit_retention,
            interval=config.prune_interval,
            batch=config.prune_batch,
        )
        self.metrics.register(PrunerCollector(self.pruner.stats))
        self._presence: Presence | None = None
        self._streams = AgentStreams(
            database=self.control,
            dispatcher=self._dispatcher,
            sessions=self._sessions,
            times=config.times,
            coordinator_id=config.coordinator_id,
            output_limit=config.output_limit,
            metrics=self.metrics,
            protocol_version=config.agent_protocol_version,
        )
        #: The sink of refused calls (the credential interceptor calls its
        #: ``on_refused``); its loop records them in the audit log in batches.
        self.refusals = RefusalLog(self.control)
        #: Who each presented secret stands for; None with `insecure` (nothing is checked).
        self._identities = None if config.insecure else Identities(self.database)
        self._health = health.aio.HealthServicer()
        self._server: grpc.aio.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def _database(self, pool: AsyncConnectionPool, statement_timeout: float, name: str) -> Database:
        return Database(
            pool,
            coordinator_id=self.config.coordinator_id,
            work_available=self._sessions.slots_changed,
            deadline=statement_timeout + DEADLINE_MARGIN,
            metrics=self.metrics,
            name=name,
        )

    @property
    def metrics_address(self) -> str | None:
        """host:port `/metrics` is served on, once started (None: not served)."""
        return None if self._metrics_server is None else self._metrics_server.address

    def _serve_metrics(self) -> None:
        """Bind `/metrics` (if configured): the cluster's figures and the scrape's
        credential check run on this event loop."""
        listen = self.config.metrics_listen
        if listen is None:
            return
        tls = self.config.metrics_tls
        host, port = check_metrics_listen(listen, tls=tls, insecure=self.config.insecure)
        loop = asyncio.get_running_loop()
        self.metrics.register(ClusterCollector(self.database, loop))
        authorize = None if self._identities is None else ScrapeAuthorizer(self._identities, loop)
        server = MetricsServer(self.metrics.registry, host, port, authorize=authorize, tls=tls)
        server.start()
        self._metrics_server = server

    @property
    def address(self) -> str:
        """host:port the coordinator serves on."""
        host = self.config.listen.rsplit(":", 1)[0]
        return f"{host}:{self.port}"

    async def start(self) -> None:
        """Bind, migrate, connect, start the loops and the gRPC server."""
        config = self.config
        check_listen(config.listen, tls=config.tls, insecure=config.insecure)
        self._server = self._build_server()
        self.port = self._bind(self._server)
        self._serve_metrics()
        await self._wait_for_database()
        for pool in self._pools:
            await pool.open(wait=True, timeout=30)
        await self.control.run(
            outbox.write_defaults, self.config.notify.defaults, self.config.coordinator_id
        )
        self._listener.start()
        self._watchers.start()
        self._followers.start()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._listener.connected.wait(), timeout=10)
        # Present before any agent connects, so no peer takes its agents for orphans.
        self._presence = Presence(
            self.control,
            self.config.coordinator_id,
            self.address,
            hydra.__version__,
            insecure=self.config.insecure,
            tls=self.config.tls is not None,
        )
        await self._presence.announce()
        await self._renderer.start()
        await self._server.start()
        await self._health.set("", health_pb2.HealthCheckResponse.SERVING)
        self._reachability.on_change(self._database_reachable)
        self._start_loops(self._presence)
        log.info(
            "coordinator %s serving %s on %s",
            self.config.coordinator_id,
            _transport_words(self.config.tls),
            self.address,
        )
        if self.config.insecure:
            log.warning(
                "--insecure: serving WITHOUT authentication%s; `hydractl cluster status` "
                "shows this coordinator as insecure",
                "" if self.config.tls else " and in plaintext",
            )

    async def _wait_for_database(self) -> None:
        """Migrate (or, with migrate off, check that the schema is current), waiting
        (with backoff, up to DATABASE_WAIT) for a database that is down or
        restarting: a coordinator started during an outage does not give up.

        Raises:
            MigrationError: the schema is older than this Hydra and migrate is
                off, or newer than this Hydra: the message says what to do.
        """
        retrying = tenacity.AsyncRetrying(
            retry=tenacity.retry_if_exception_type(psycopg.OperationalError),
            wait=tenacity.wait_random_exponential(multiplier=0.2, max=2.0),
            stop=tenacity.stop_after_delay(DATABASE_WAIT.total_seconds()),
            before_sleep=_log_database_wait,
            reraise=True,
        )
        applied: list[str] = []
        async for attempt in retrying:
            with attempt:
                if self.config.migrate:
                    applied = await migrate(self.config.conninfo)
                else:
                    await check_current(self.config.conninfo)
        if applied:
            log.info("applied migrations: %s", ", ".join(applied))

    def _bind(self, server: grpc.aio.Server) -> int:
        """Bind the listen address before anything else, so a taken port fails fast."""
        tls = self.config.tls
        # Bad certificate files raise InvalidArgument here, naming the flag.
        credentials = server_credentials(tls) if tls is not None else None
        try:
            if credentials is None:
                port = server.add_insecure_port(self.config.listen)
            else:
                port = server.add_secure_port(self.config.listen, credentials)
        except RuntimeError:
            port = 0
        if port == 0:
            raise CannotListen(
                f"cannot listen on {self.config.listen}: the address is in use or not "
                "available (choose another with --listen or HYDRA_LISTEN)"
            )
        return port

    def _build_server(self) -> grpc.aio.Server:
        # The same message limit as agents and clients, both ways (hydra.limits).
        options = [*message_size_options(), ("grpc.so_reuseport", 0)]
        limits = LoadLimits(
            max_streams=self.config.max_streams,
            max_concurrent_rpcs=self.config.max_concurrent_rpcs,
        )
        # The credential first: a refused call takes no place under the limits.
        # Metrics first of all: refused calls are counted with their code.
        interceptors: list[grpc.aio.ServerInterceptor] = [
            MetricsInterceptor(self.metrics),
            CredentialInterceptor(self._identities, on_refused=self._refused),
            limits,
        ]
        server = grpc.aio.server(options=options, interceptors=interceptors)
        db, dispatcher = self.database, self._dispatcher
        task_service_pb2_grpc.add_TaskServiceServicer_to_server(
            TaskApi(db, self.config.retention), server
        )
        run_service_pb2_grpc.add_RunServiceServicer_to_server(
            RunApi(db, dispatcher, self._watchers, self._followers), server
        )
        agent_service_pb2_grpc.add_AgentServiceServicer_to_server(
            AgentApi(db, self._streams), server
        )
        cluster_service_pb2_grpc.add_ClusterServiceServicer_to_server(
            ClusterApi(db, self.config.coordinator_id, ALIVE_WINDOW), server
        )
        audit_service_pb2_grpc.add_AuditServiceServicer_to_server(AuditApi(db), server)
        notification_service_pb2_grpc.add_NotificationServiceServicer_to_server(
            NotificationApi(db), server
        )
        credential_service_pb2_grpc.add_CredentialServiceServicer_to_server(
            CredentialApi(db), server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            [
                task_service_pb2.DESCRIPTOR.services_by_name["TaskService"].full_name,
                run_service_pb2.DESCRIPTOR.services_by_name["RunService"].full_name,
                agent_pb.DESCRIPTOR.services_by_name["AgentService"].full_name,
                cluster_service_pb2.DESCRIPTOR.services_by_name["ClusterService"].full_name,
                audit_service_pb2.DESCRIPTOR.services_by_name["AuditService"].full_name,
                notification_service_pb2.DESCRIPTOR.services_by_name[
                    "NotificationService"
                ].full_name,
                credential_service_pb2.DESCRIPTOR.services_by_name["CredentialService"].full_name,
                health.SERVICE_NAME,
                reflection.SERVICE_NAME,
            ],
            server,
        )
        return server

    def _start_loops(self, presence: Presence) -> None:
        coordinator_id = self.config.coordinator_id

        def others_made_work(sender: str) -> None:
            # Our own transactions dispatched inline or woke the dispatcher already.
            if sender != coordinator_id:
                self._dispatcher.wake()

        self._listener.subscribe("hydra_dispatch", others_made_work)
        self._listener.subscribe("hydra_triggers", lambda _: self._triggers.wake.set())
        self._listener.subscribe("hydra_agent_command", self._agent_command)
        self._listener.subscribe("hydra_outbox", lambda _: self._deliveries.wake.set())
        if self._identities is not None:
            self._listener.subscribe("hydra_credentials", self._credential_revoked)
            self._spawn("credentials last used", self._identities.write_last_used)
        self._spawn("dispatcher", self._dispatcher.step)
        self._spawn("trigger loop", self._triggers.step)
        self._spawn("reaper", self._reaper.step)
        self._spawn("pruner", self.pruner.step)
        self._spawn("presence", presence.step)
        self._spawn("database health", self._reachability.step)
        self._spawn("refused calls", self.refusals.step)
        self._spawn("deadlines", self._deadlines.step)
        self._spawn("deliveries", self._deliveries.step)

    def _spawn(self, name: str, step: Callable[[], Awaitable[None]]) -> None:
        self._tasks.append(asyncio.create_task(forever(name, step), name=f"hydra-{name}"))

    async def _database_reachable(self, reachable: bool) -> None:
        """Health follows the database: NOT_SERVING while this coordinator cannot reach it."""
        status = health_pb2.HealthCheckResponse
        await self._health.set("", status.SERVING if reachable else status.NOT_SERVING)

    def _refused(self, refused: RefusedCall) -> Awaitable[None] | None:
        """A call refused for its credential: into the audit log, and to `on_refused`."""
        self.refusals.on_refused(refused)
        return None if self._on_refused is None else self._on_refused(refused)

    def _credential_revoked(self, name: str) -> None:
        """Forget a revoked credential ("": every credential), and end the streams
        of agents connected with it (they are refused when they reconnect)."""
        assert self._identities is not None
        self._identities.forget(name)
        for session in self._sessions:
            if name and session.credential == name:
                log.warning(
                    "credential %r revoked: ending agent %s's stream", name, session.agent_id
                )
                session.close()

    def _agent_command(self, payload: str) -> None:
        """Carry out a command of another coordinator (or ours) for an agent we hold."""
        command = AgentCommand.decode(payload)
        session = None if command is None else self._sessions.get(command.agent_id)
        if command is None or session is None:
            return
        if command.verb is Verb.DRAIN:
            session.drain("drain requested")
        elif command.lease is not None:
            session.cancel(command.lease, "cancelled by request")
            self._sessions.slots_changed.set()

    async def stop(self, grace: float = 5.0) -> None:
        """Stop serving: agents are told to move elsewhere, in-flight RPCs finish.

        Every step runs even if one before it failed (or the start did not get that
        far), so that nothing is left open: pools, the listener, render workers."""
        await _step("the health service", self._health.enter_graceful_shutdown())
        for session in list(self._sessions):
            try:
                session.drain("coordinator shutting down", reconnect_elsewhere=True)
                session.close()
            except Exception as error:
                log.warning("stopping agent %s's stream failed: %s", session.agent_id, error)
        if self._server is not None:
            await _step("the gRPC server", self._server.stop(grace))
        await _step("agent streams", self._streams.close())
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await _step("deliveries", self._deliveries.stop())
        await _step("the refusals", self._flush_refusals())
        if self._identities is not None:
            await _step("agent identities", self._identities.flush())
        await _step("watchers", self._watchers.stop())
        try:
            self._followers.stop()
        except Exception as error:
            log.warning("stopping the followers failed: %s", error)
        await _step("render workers", self._renderer.stop())
        await _step("the listener", self._listener.stop())
        if self._presence is not None:
            await _step("the presence", self._presence.withdraw())
        await _step("reachability", self._reachability.close())
        for pool in self._pools:
            await _step("a database pool", pool.close())
        if self._metrics_server is not None:
            await _step("/metrics", asyncio.to_thread(self._metrics_server.stop))

    async def _flush_refusals(self) -> None:
        try:
            await asyncio.wait_for(self.refusals.flush(), REFUSALS_FLUSH_SECONDS)
        except Exception as error:
            log.warning("refused calls not recorded at stop: %s", error)


async def _step(what: str, stopping: Awaitable[object]) -> None:
    """One step of a stop: a failure is logged, and the stop goes on. A step that
    ends cancelled (a library's own cancellation) does not end the stop either,
    unless it is the stop that is being cancelled."""
    try:
        await stopping
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise
        log.warning("stopping %s was cancelled", what)
    except Exception as error:
        log.warning("stopping %s failed: %s", what, error)


def _transport_words(tls: ServerTls | None) -> str:
    if tls is None:
        return "plaintext"
    return "TLS, client certificates required," if tls.mutual else "TLS"


def _log_database_wait(state: tenacity.RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    log.warning("database unavailable (%s); retrying", error)


class CannotListen(HydraError):
    """The coordinator cannot listen on its address."""

    status_code_name = "UNAVAILABLE"


async def run_coordinator(config: CoordinatorConfig) -> int:
    """Run until SIGTERM or SIGINT, then stop gracefully (also when the signal came
    while starting)."""
    coordinator = CoordinatorServer(config)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    starting = asyncio.create_task(coordinator.start())
    signalled = asyncio.create_task(stopping.wait())
    try:
        await asyncio.wait({starting, signalled}, return_when=asyncio.FIRST_COMPLETED)
        if starting.done():
            starting.result()  # a failed start raises here
            await signalled
        log.info("stopping coordinator %s", config.coordinator_id)
    finally:
        for task in (starting, signalled):
            task.cancel()
        await asyncio.gather(starting, signalled, return_exceptions=True)
        await coordinator.stop()
    return 0
