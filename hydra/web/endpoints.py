"""The JSON API's endpoints, one per RPC, read from the proto descriptors (docs/http-api.md).

Which services are public and the collection each is served under are chosen
here; their methods come from ``DESCRIPTOR.services_by_name``, so a new RPC of
one of these services gets its endpoint (and its OpenAPI path) without a line
of code. The path is Google's custom-method shape (AIP-136),
``/<collection>:<verb>``: ``/runs:trigger``, ``/tasks:apply``.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from hydra.coordinator.api.roles import ROLES
from hydra.domain import Role
from hydra.v1 import (
    agent_service_pb2,
    audit_service_pb2,
    cluster_service_pb2,
    credential_service_pb2,
    notification_service_pb2,
    run_service_pb2,
    task_service_pb2,
)

#: Service name -> (the collection in its paths, the generated module holding it).
SERVICES: dict[str, tuple[str, ModuleType]] = {
    "TaskService": ("tasks", task_service_pb2),
    "RunService": ("runs", run_service_pb2),
    "AgentService": ("agents", agent_service_pb2),
    "ClusterService": ("cluster", cluster_service_pb2),
    "AuditService": ("audit", audit_service_pb2),
    "NotificationService": ("notifications", notification_service_pb2),
    "CredentialService": ("credentials", credential_service_pb2),
}
#: Methods that read by their name, whatever role they need.
_STANDARD_READS = frozenset({"Get", "List"})


@dataclass(frozen=True, kw_only=True, slots=True)
class Endpoint:
    """One RPC as an HTTP endpoint."""

    #: The service's short name, as the backend calls it: ``RunService``.
    service: str
    method: MethodDescriptor
    #: Below /api/v1: ``/runs:trigger``.
    path: str

    @property
    def name(self) -> str:
        """``RunService.Trigger``."""
        return f"{self.service}.{self.method.name}"

    @property
    def streaming(self) -> bool:
        """A server stream, answered as server-sent events or NDJSON."""
        return bool(self.method.server_streaming)

    @property
    def read_only(self) -> bool:
        """GET is allowed too: the call reads only. Those are the standard Get and
        List methods (AIP-131, AIP-132) and every call a viewer may make, since a
        viewer changes nothing (docs/security.md; its test keeps the role table
        complete)."""
        if self.method.name in _STANDARD_READS:
            return True
        role = ROLES.get(f"/{self.method.containing_service.full_name}/{self.method.name}")
        return role is Role.VIEWER

    @property
    def http_methods(self) -> tuple[str, ...]:
        return ("GET", "POST") if self.read_only else ("POST",)

    def request(self) -> Message:
        """A new, empty request message."""
        return GetMessageClass(self.method.input_type)()


def verb(method: MethodDescriptor) -> str:
    """The custom verb of a method: lowerCamelCase of its name (``TailLogs`` -> ``tailLogs``)."""
    return method.name[:1].lower() + method.name[1:]


def service_descriptor(service: str) -> ServiceDescriptor:
    module = SERVICES[service][1]
    descriptor: ServiceDescriptor = module.DESCRIPTOR.services_by_name[service]
    return descriptor


def endpoints() -> list[Endpoint]:
    """Every endpoint, in the services' order, then the proto's method order.

    Methods streaming from the client (the agents' Connect) have none: HTTP/1.1
    JSON cannot carry them, and only agents may call them.
    """
    found = []
    for service, (collection, _module) in SERVICES.items():
        for method in service_descriptor(service).methods:
            if method.client_streaming:
                continue
            path = f"/{collection}:{verb(method)}"
            found.append(Endpoint(service=service, method=method, path=path))
    return found
