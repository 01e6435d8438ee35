"""The coordinator process: gRPC server plus trigger loop, dispatcher and reaper,
all sharing work with other coordinators only through PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import signal
import socket
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import grpc
import psycopg
import tenacity
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

import hydra
from hydra.coordinator.agent_api import AgentApi
from hydra.coordinator.agent_stream import AgentStreams
from hydra.coordinator.cluster_api import ClusterApi
from hydra.coordinator.dispatcher import Dispatcher
from hydra.coordinator.lease_store import LeaseStore
from hydra.coordinator.loop import forever
from hydra.coordinator.migrate import migrate
from hydra.coordinator.notifications import Listener
from hydra.coordinator.reaper import Reaper
from hydra.coordinator.records import LeaseTimes
from hydra.coordinator.run_api import RunApi
from hydra.coordinator.sessions import SessionRegistry
from hydra.coordinator.store import open_pool
from hydra.coordinator.task_api import TaskApi
from hydra.coordinator.trigger_loop import TriggerLoop
from hydra.errors import HydraError
from hydra.v1 import agent_service_pb2 as agent_pb
from hydra.v1 import (
    agent_service_pb2_grpc,
    cluster_service_pb2,
    cluster_service_pb2_grpc,
    run_service_pb2,
    run_service_pb2_grpc,
    task_service_pb2,
    task_service_pb2_grpc,
)

log = logging.getLogger("hydra.coordinator")

#: Requests may carry large specs; validation, not the transport, refuses oversized ones.
MAX_MESSAGE_BYTES = 32 * 1024 * 1024
#: How often a coordinator records that it is alive.
PRESENCE_SECONDS = 2.0
#: How long a starting coordinator waits for its database before giving up.
DATABASE_WAIT = timedelta(minutes=2)
#: A coordinator silent for this long is listed as gone and its agents as disconnected.
ALIVE_WINDOW = timedelta(seconds=10)


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
    token: str | None = None


class Coordinator:
    """One coordinator: start it, serve, stop it."""

    def __init__(self, config: CoordinatorConfig) -> None:
        self.config = config
        self.port = 0
        self._pool = open_pool(config.conninfo, config.pool_size)
        self.store = LeaseStore(self._pool)
        self._listener = Listener(config.conninfo)
        self._sessions = SessionRegistry()
        self._server: grpc.aio.Server | None = None
        self._streams: AgentStreams | None = None
        self._health = health.aio.HealthServicer()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def address(self) -> str:
        """host:port the coordinator serves on."""
        host = self.config.listen.rsplit(":", 1)[0]
        return f"{host}:{self.port}"

    async def start(self) -> None:
        """Bind, migrate, connect, start the loops and the gRPC server."""
        self._server = self._build_server()
        self.port = self._bind(self._server)
        await self._wait_for_database()
        await self._pool.open(wait=True, timeout=30)
        self._listener.start()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._listener.connected.wait(), timeout=10)
        # Present before any agent connects, so no peer takes its agents for orphans.
        await self.store.register_coordinator(
            self.config.coordinator_id, self.address, hydra.__version__
        )
        await self._server.start()
        self._start_loops()
        await self._health.set("", health_pb2.HealthCheckResponse.SERVING)
        log.info("coordinator %s serving on %s", self.config.coordinator_id, self.address)

    async def _wait_for_database(self) -> None:
        """Migrate, waiting (with backoff, up to DATABASE_WAIT) for a database that is
        down or restarting: a coordinator started during an outage does not give up."""
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
                applied = await migrate(self.config.conninfo)
        if applied:
            log.info("applied migrations: %s", ", ".join(applied))

    def _bind(self, server: grpc.aio.Server) -> int:
        """Bind the listen address before anything else, so a taken port fails fast."""
        try:
            port = server.add_insecure_port(self.config.listen)
        except RuntimeError:
            port = 0
        if port == 0:
            raise CannotListen(
                f"cannot listen on {self.config.listen}: the address is in use or not "
                "available (choose another with --listen or HYDRA_LISTEN)"
            )
        return port

    def _build_server(self) -> grpc.aio.Server:
        options = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES), ("grpc.so_reuseport", 0)]
        interceptors = [TokenInterceptor(self.config.token)] if self.config.token else []
        server = grpc.aio.server(options=options, interceptors=interceptors)
        self._streams = streams = AgentStreams(
            store=self.store,
            sessions=self._sessions,
            times=self.config.times,
            coordinator_id=self.config.coordinator_id,
            output_limit=self.config.output_limit,
        )
        task_service_pb2_grpc.add_TaskServiceServicer_to_server(TaskApi(self.store), server)
        run_service_pb2_grpc.add_RunServiceServicer_to_server(
            RunApi(self.store, self._listener), server
        )
        agent_service_pb2_grpc.add_AgentServiceServicer_to_server(
            AgentApi(self.store, streams), server
        )
        cluster_service_pb2_grpc.add_ClusterServiceServicer_to_server(
            ClusterApi(self.store, self.config.coordinator_id, ALIVE_WINDOW), server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            [
                task_service_pb2.DESCRIPTOR.services_by_name["TaskService"].full_name,
                run_service_pb2.DESCRIPTOR.services_by_name["RunService"].full_name,
                agent_pb.DESCRIPTOR.services_by_name["AgentService"].full_name,
                cluster_service_pb2.DESCRIPTOR.services_by_name["ClusterService"].full_name,
                health.SERVICE_NAME,
                reflection.SERVICE_NAME,
            ],
            server,
        )
        return server

    def _start_loops(self) -> None:
        dispatcher = Dispatcher(self.store, self._sessions, self.config.times)
        triggers = TriggerLoop(self.store)
        reaper = Reaper(self.store, self.config.times.ttl)
        coordinator_id = self.config.coordinator_id
        self.store.coordinator_id = coordinator_id

        def others_made_work(sender: str) -> None:
            # Our own transactions dispatched inline or woke the dispatcher already.
            if sender != coordinator_id:
                dispatcher.wake()

        self._listener.subscribe("hydra_dispatch", others_made_work)
        self.store.on_dispatch = dispatcher.wake
        self.store.dispatch_inline = dispatcher.dispatch_inline
        self._listener.subscribe("hydra_triggers", lambda _: triggers.wake.set())
        self._listener.subscribe("hydra_agent_command", self._agent_command)
        self._spawn("dispatcher", dispatcher.step)
        self._spawn("trigger loop", triggers.step)
        self._spawn("reaper", reaper.step)
        self._spawn("presence", self._presence)

    def _spawn(self, name: str, step: Callable[[], Awaitable[None]]) -> None:
        self._tasks.append(asyncio.create_task(forever(name, step), name=f"hydra-{name}"))

    async def _presence(self) -> None:
        await self.store.register_coordinator(
            self.config.coordinator_id, self.address, hydra.__version__
        )
        await self.store.forget_dead_coordinators(ALIVE_WINDOW)
        await asyncio.sleep(PRESENCE_SECONDS)

    def _agent_command(self, payload: str) -> None:
        verb, _, rest = payload.partition(":")
        agent_id, _, lease = rest.partition(":")
        session = self._sessions.get(agent_id)
        if session is None:
            return
        if verb == "drain":
            session.draining = True
            session.send(
                agent_pb.CoordinatorMessage(drain=agent_pb.Drain(reason="drain requested"))
            )
        elif verb == "cancel":
            run_id, _, token = lease.partition(":")
            session.held.discard((run_id, int(token)))
            session.send(
                agent_pb.CoordinatorMessage(
                    cancel=agent_pb.CancelAttempt(
                        lease=agent_pb.LeaseRef(run_id=run_id, lease_token=int(token)),
                        reason="cancelled by request",
                    )
                )
            )
            self._sessions.slots_changed.set()

    async def stop(self, grace: float = 5.0) -> None:
        """Stop serving: agents are told to move elsewhere, in-flight RPCs finish."""
        await self._health.enter_graceful_shutdown()
        for session in self._sessions:
            session.send(
                agent_pb.CoordinatorMessage(
                    drain=agent_pb.Drain(
                        reason="coordinator shutting down", reconnect_elsewhere=True
                    )
                )
            )
            session.close()
        if self._server is not None:
            await self._server.stop(grace)
        if self._streams is not None:
            await self._streams.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._listener.stop()
        with contextlib.suppress(Exception):
            await self.store.unregister_coordinator(self.config.coordinator_id)
        await self._pool.close()


def _log_database_wait(state: tenacity.RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    log.warning("database unavailable (%s); retrying", error)


class CannotListen(HydraError):
    """The coordinator cannot listen on its address."""

    status_code_name = "UNAVAILABLE"


class TokenInterceptor(grpc.aio.ServerInterceptor):
    """Refuses calls without `authorization: Bearer <HYDRA_TOKEN>` (health checks and
    reflection excepted), with UNAUTHENTICATED, whatever the kind of the method."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}"

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        metadata = dict(handler_call_details.invocation_metadata or ())
        if handler is None or handler_call_details.method.startswith("/grpc."):
            return handler
        if hmac.compare_digest(str(metadata.get("authorization", "")), self._expected):
            return handler
        return _denying(handler)


def _denying(handler: Any) -> Any:
    """A handler of the same kind as `handler` that refuses the call."""

    async def deny_unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong HYDRA_TOKEN")

    async def deny_streaming(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await deny_unary(request, context)
        yield  # pragma: no cover - abort raises

    kinds = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }
    make = kinds[(handler.request_streaming, handler.response_streaming)]
    deny = deny_streaming if handler.response_streaming else deny_unary
    return make(
        deny,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


async def run_coordinator(config: CoordinatorConfig) -> int:
    """Run until SIGTERM or SIGINT, then stop gracefully (also when the signal came
    while starting)."""
    coordinator = Coordinator(config)
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
