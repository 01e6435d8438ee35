"""Calls to a coordinator cluster: failover between targets, retries, status mapping.

A call is sent to the first target that accepts a connection, so a dead
coordinator costs a failed connect, never a lost or doubled request. Only calls
the caller declares idempotent are repeated after an UNAVAILABLE answer, and
only through :func:`hydra.retrying.grpc_retrying`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hydra.errors import ERRORS_BY_STATUS, HydraError, Unavailable
from hydra.limits import message_size_options
from hydra.retrying import grpc_retrying
from hydra.tls import ClientTls, TlsProblem, connection_problem
from hydra.v1.agent_service_pb2_grpc import AgentServiceStub
from hydra.v1.audit_service_pb2_grpc import AuditServiceStub
from hydra.v1.cluster_service_pb2_grpc import ClusterServiceStub
from hydra.v1.credential_service_pb2_grpc import CredentialServiceStub
from hydra.v1.notification_service_pb2_grpc import NotificationServiceStub
from hydra.v1.run_service_pb2_grpc import RunServiceStub
from hydra.v1.task_service_pb2_grpc import TaskServiceStub

Request = TypeVar("Request")
Response = TypeVar("Response")
_Message_co = TypeVar("_Message_co", covariant=True)

#: Longest wait for a target to accept a connection before trying the next.
CONNECT_TIMEOUT = 5.0
#: Longest wait for the health call that asks a failed channel why it failed.
_PROBE_TIMEOUT = 2.0

# A channel that failed to connect is replaced by a fresh one; a local
# subchannel pool keeps the fresh one from inheriting the old one's backoff.
# Messages are bounded as on the coordinator, both ways (hydra.limits).
_CHANNEL_OPTIONS = (("grpc.use_local_subchannel_pool", 1), *message_size_options())

_IDLE = grpc.ChannelConnectivity.IDLE
_READY = grpc.ChannelConnectivity.READY
_BROKEN = frozenset({grpc.ChannelConnectivity.TRANSIENT_FAILURE, grpc.ChannelConnectivity.SHUTDOWN})


class _StreamingCall(Protocol[_Message_co]):
    def __iter__(self) -> Iterator[_Message_co]: ...
    def cancel(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class Stubs:
    """The service stubs on one channel."""

    tasks: TaskServiceStub
    runs: RunServiceStub
    agents: AgentServiceStub
    cluster: ClusterServiceStub
    audit: AuditServiceStub
    credentials: CredentialServiceStub
    notifications: NotificationServiceStub


class _Connection:
    """One channel to one target, and what its connectivity was last seen as.

    The channel is watched by one subscription for its whole life: grpcio's
    connectivity poller can fail on a channel closed just after a second
    subscription, so there never is one.
    """

    def __init__(self, target: str, tls: ClientTls | None) -> None:
        self.target = target
        self.tls = tls
        self.channel = _channel(target, tls)
        self.stubs = Stubs(
            tasks=TaskServiceStub(self.channel),
            runs=RunServiceStub(self.channel),
            agents=AgentServiceStub(self.channel),
            cluster=ClusterServiceStub(self.channel),
            audit=AuditServiceStub(self.channel),
            credentials=CredentialServiceStub(self.channel),
            notifications=NotificationServiceStub(self.channel),
        )
        self._changed = threading.Condition()
        self._state: grpc.ChannelConnectivity | None = None
        self._has_connected = False
        #: The last failure was TLS not agreeing (wait_ready said how).
        self.tls_failed = False
        self.channel.subscribe(self._on_change, try_to_connect=True)

    def _on_change(self, state: grpc.ChannelConnectivity) -> None:
        with self._changed:
            self._state = state
            self._has_connected |= state is _READY
            self._changed.notify_all()

    @property
    def worn_out(self) -> bool:
        """True once the channel failed, or went idle after being connected."""
        with self._changed:
            return self._state in _BROKEN or (self._state is _IDLE and self._has_connected)

    def wait_ready(self, timeout: float) -> str | None:
        """None once the channel is connected, else why it is not."""
        with self._changed:
            self._changed.wait_for(lambda: self._state is _READY or self._state in _BROKEN, timeout)
            state = self._state
        if state is _READY:
            return None
        return self._why_failed() if state in _BROKEN else f"no connection within {timeout:g}s"

    def _why_failed(self) -> str:
        """What a call says: the connectivity state alone does not.

        The call goes on a channel of its own, never subscribed: closing a
        subscribed channel whose state is changing (as a call on it would make
        it) can crash grpcio's connectivity poller.
        """
        try:
            with _channel(self.target, self.tls) as probe:
                health_pb2_grpc.HealthStub(probe).Check(
                    health_pb2.HealthCheckRequest(), timeout=_PROBE_TIMEOUT
                )
        except grpc.RpcError as error:
            problem = connection_problem(self.target, error.details() or "", self.tls)
            self.tls_failed = problem is not None
            return problem or "connection failed"
        return "connection failed"


def _unreachable(reasons: list[str], *, tls: bool) -> str:
    if len(reasons) > 1:
        return f"cannot reach any coordinator ({'; '.join(reasons)})"
    return reasons[0] if tls else f"cannot reach coordinator at {reasons[0]}"


def _channel(target: str, tls: ClientTls | None) -> grpc.Channel:
    if tls is None:
        return grpc.insecure_channel(target, options=_CHANNEL_OPTIONS)
    options = (*_CHANNEL_OPTIONS, *tls.channel_options())
    return grpc.secure_channel(target, tls.credentials(), options=options)


class CallError(grpc.RpcError):
    """A failed call, with the target it went to and whether it was sent at all.

    It is a ``grpc.RpcError`` so that the shared retry predicate applies to it.
    """

    def __init__(
        self, code: grpc.StatusCode, details: str, target: str, *, sent: bool, tls: bool = False
    ) -> None:
        super().__init__(details)
        self._code = code
        self._details = details
        self.target = target
        self.sent = sent
        #: The connection failed because TLS did not agree.
        self.tls = tls

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


def to_hydra_error(error: CallError) -> HydraError:
    """The :mod:`hydra.errors` exception for a failed call, keeping the server's message.

    Codes without an exception of their own become a plain ``HydraError`` whose
    ``status_code_name`` still tells the code.
    """
    name = error.code().name
    if name == "UNAVAILABLE":
        if error.sent:
            return Unavailable(f"coordinator at {error.target} is unavailable: {error.details()}")
        if error.tls:
            return TlsProblem(error.details())
        return Unavailable(error.details())  # _connect said which targets and why
    mapped = ERRORS_BY_STATUS.get(name)
    if mapped is not None:
        return mapped(error.details())
    unmapped = HydraError(f"{name}: {error.details()}" if error.details() else name)
    unmapped.status_code_name = name
    return unmapped


class Transport:
    """Channels to every target and the rules for sending calls over them."""

    def __init__(
        self,
        targets: Sequence[str],
        *,
        metadata: tuple[tuple[str, str], ...] = (),
        timeout: float | None = 30.0,
        connect_timeout: float = CONNECT_TIMEOUT,
        tls: ClientTls | None = None,
    ) -> None:
        if not targets:
            raise ValueError("at least one coordinator target is needed")
        self.targets = tuple(targets)
        self._tls = tls
        self._metadata = metadata
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._connections: dict[str, _Connection] = {}
        self._preferred = 0
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close every channel."""
        with self._lock:
            connections, self._connections = list(self._connections.values()), {}
        for connection in connections:
            connection.channel.close()

    def unary(
        self,
        method: Callable[[Stubs], grpc.UnaryUnaryMultiCallable[Request, Response]],
        request: Request,
        *,
        idempotent: bool,
    ) -> Response:
        """Send one unary call; retry it on retryable codes only if ``idempotent``.

        Raises:
            HydraError: the mapped status of the last failure.
        """

        def send() -> Response:
            return self._send(method, request)

        try:
            return grpc_retrying()(send) if idempotent else send()
        except CallError as error:
            mapped = to_hydra_error(error)
            if isinstance(mapped, Unavailable) and error.sent and not idempotent:
                # Not repeated: a repeat could do it twice. Say so, for whoever retries.
                mapped = Unavailable(f"{mapped.message}; the request may have taken effect")
            raise mapped from None

    def stream(
        self,
        method: Callable[[Stubs], grpc.UnaryStreamMultiCallable[Request, Response]],
        request: Request,
        *,
        timeout: float | None = None,
    ) -> Generator[Response, None, None]:
        """Start a server-streaming call now and return its messages as an iterator.

        Streams are never retried: a repeat could replay what was already seen.
        Closing the iterator cancels the call.
        """
        try:
            connection = self._connect()
        except CallError as error:
            raise to_hydra_error(error) from None
        call = method(connection.stubs)(request, timeout=timeout, metadata=self._metadata)
        return self._messages(connection, call)

    def _messages(
        self, connection: _Connection, call: _StreamingCall[Response]
    ) -> Generator[Response, None, None]:
        try:
            yield from call
        except grpc.RpcError as error:
            raise to_hydra_error(self._failure(connection, error)) from None
        finally:
            call.cancel()

    def _send(
        self,
        method: Callable[[Stubs], grpc.UnaryUnaryMultiCallable[Request, Response]],
        request: Request,
    ) -> Response:
        connection = self._connect()
        try:
            return method(connection.stubs)(request, timeout=self._timeout, metadata=self._metadata)
        except grpc.RpcError as error:
            raise self._failure(connection, error) from None

    def _failure(self, connection: _Connection, error: grpc.RpcError) -> CallError:
        code = error.code()
        if code is grpc.StatusCode.UNAVAILABLE:
            self._prefer_next(connection.target)
        return CallError(code, error.details() or code.name, connection.target, sent=True)

    def _connect(self) -> _Connection:
        """The first target, from the preferred one on, that accepts a connection."""
        reasons: list[str] = []
        tls = False
        start = self._preferred
        for offset in range(len(self.targets)):
            target = self.targets[(start + offset) % len(self.targets)]
            connection = self._connection(target)
            reason = connection.wait_ready(self._connect_timeout)
            if reason is None:
                self._preferred = self.targets.index(target)
                return connection
            self._discard(connection)
            tls |= connection.tls_failed
            # A TLS problem's line names its target and says what to do.
            reasons.append(reason if connection.tls_failed else f"{target}: {reason}")
        raise CallError(
            grpc.StatusCode.UNAVAILABLE,
            _unreachable(reasons, tls=tls),
            ", ".join(self.targets),
            sent=False,
            tls=tls,
        )

    def _connection(self, target: str) -> _Connection:
        """The target's channel; a fresh one if the last one is worn out."""
        with self._lock:
            connection = self._connections.get(target)
            if connection is not None and not connection.worn_out:
                return connection
            self._connections[target] = fresh = _Connection(target, self._tls)
        if connection is not None:
            connection.channel.close()
        return fresh

    def _discard(self, connection: _Connection) -> None:
        with self._lock:
            if self._connections.get(connection.target) is connection:
                del self._connections[connection.target]
        connection.channel.close()

    def _prefer_next(self, target: str) -> None:
        self._preferred = (self.targets.index(target) + 1) % len(self.targets)
