"""The web server's gRPC channel to the coordinators.

Every call carries the caller's credential (``authorization: Bearer …``); the
web server has none of its own. A call is sent by method name, so the JSON API
and the pages share one way of calling any RPC of the public contract.
"""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
from google.protobuf.message import Message

from hydra.limits import message_size_options
from hydra.tls import ClientTls
from hydra.v1 import (
    agent_service_pb2_grpc,
    audit_service_pb2_grpc,
    cluster_service_pb2_grpc,
    credential_service_pb2_grpc,
    notification_service_pb2_grpc,
    run_service_pb2_grpc,
    task_service_pb2_grpc,
)

#: Longest a unary call may take, unless the caller says otherwise.
CALL_TIMEOUT = 30.0

_STUBS: dict[str, Any] = {
    "TaskService": task_service_pb2_grpc.TaskServiceStub,
    "RunService": run_service_pb2_grpc.RunServiceStub,
    "AgentService": agent_service_pb2_grpc.AgentServiceStub,
    "ClusterService": cluster_service_pb2_grpc.ClusterServiceStub,
    "AuditService": audit_service_pb2_grpc.AuditServiceStub,
    "CredentialService": credential_service_pb2_grpc.CredentialServiceStub,
    "NotificationService": notification_service_pb2_grpc.NotificationServiceStub,
}


def channel_target(targets: Sequence[str]) -> str:
    """One gRPC target for all coordinators.

    IP addresses become one ``ipv4:``/``ipv6:`` list, which gRPC's pick_first
    policy walks in order when a coordinator is down; a name is used as it is
    (a DNS name with several addresses fails over the same way).
    """
    if len(targets) == 1:
        return targets[0]
    families = {_family(target) for target in targets}
    if len(families) == 1 and None not in families:
        return f"{families.pop()}:{','.join(targets)}"
    return targets[0]


def _family(target: str) -> str | None:
    host = target.rsplit(":", 1)[0].strip("[]")
    try:
        return "ipv4" if ipaddress.ip_address(host).version == 4 else "ipv6"
    except ValueError:
        return None


class Backend:
    """Stubs of every service on one ``grpc.aio`` channel; create it inside the event loop."""

    def __init__(self, targets: Sequence[str], tls: ClientTls | None) -> None:
        self.targets = tuple(targets)
        target = channel_target(targets)
        options: tuple[tuple[str, Any], ...] = (*message_size_options(),)
        if tls is None:
            self._channel = grpc.aio.insecure_channel(target, options=options)
        else:
            options = (*options, *tls.channel_options())
            self._channel = grpc.aio.secure_channel(target, tls.credentials(), options=options)
        self._stubs = {name: stub(self._channel) for name, stub in _STUBS.items()}

    def _method(self, service: str, method: str) -> Any:
        try:
            return getattr(self._stubs[service], method)
        except (KeyError, AttributeError):
            raise LookupError(f"no RPC {service}.{method}") from None

    async def call(
        self,
        service: str,
        method: str,
        request: Message,
        *,
        token: str | None,
        deadline: float = CALL_TIMEOUT,
    ) -> Any:
        """The response of a unary RPC (``deadline`` in seconds); raises
        ``grpc.aio.AioRpcError`` as the coordinator answered."""
        return await self._method(service, method)(
            request, metadata=metadata(token), timeout=deadline
        )

    async def stream(
        self, service: str, method: str, request: Message, *, token: str | None
    ) -> AsyncIterator[Any]:
        """The messages of a server-streaming RPC; the call is cancelled when the
        iteration stops (a browser that goes away ends its Watch)."""
        call = self.open_stream(service, method, request, token=token)
        try:
            async for message in call:
                yield message
        finally:
            call.cancel()

    def open_stream(self, service: str, method: str, request: Message, *, token: str | None) -> Any:
        """A server-streaming call, not read yet: the JSON API awaits its initial
        metadata to tell a refused call (an HTTP error status) from a stream that
        has begun. The caller must ``cancel()`` it when done."""
        return self._method(service, method)(request, metadata=metadata(token))

    async def close(self) -> None:
        await self._channel.close()


def metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    """The call metadata carrying ``token``; none without one (an --insecure cluster)."""
    return (("authorization", f"Bearer {token}"),) if token else ()
