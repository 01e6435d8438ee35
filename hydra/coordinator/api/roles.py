"""The role table: which role each RPC needs, in one place (docs/security.md).

The credential interceptor (api/auth.py) applies it to every call; handlers
never check roles themselves. tests/integration/test_roles.py walks every
method of every service, so an RPC missing here fails it (and the interceptor
refuses a call to a method it does not know, PERMISSION_DENIED).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from hydra.domain import Role

_TASKS = "/hydra.v1.TaskService/"
_RUNS = "/hydra.v1.RunService/"
_AGENTS = "/hydra.v1.AgentService/"
_CLUSTER = "/hydra.v1.ClusterService/"
_CREDENTIALS = "/hydra.v1.CredentialService/"
_AUDIT = "/hydra.v1.AuditService/"
_NOTIFICATIONS = "/hydra.v1.NotificationService/"

#: Full gRPC method name -> the role a credential needs to call it.
ROLES: Mapping[str, Role] = MappingProxyType(
    {
        # viewer: read
        _TASKS + "Get": Role.VIEWER,
        _TASKS + "List": Role.VIEWER,
        _RUNS + "Get": Role.VIEWER,
        _RUNS + "List": Role.VIEWER,
        _RUNS + "Watch": Role.VIEWER,
        _RUNS + "TailLogs": Role.VIEWER,
        _RUNS + "Why": Role.VIEWER,
        _AGENTS + "List": Role.VIEWER,
        _CLUSTER + "Status": Role.VIEWER,
        _NOTIFICATIONS + "List": Role.VIEWER,
        # operator: steer what exists
        _TASKS + "Pause": Role.OPERATOR,
        _TASKS + "Resume": Role.OPERATOR,
        _RUNS + "Trigger": Role.OPERATOR,
        _RUNS + "Retry": Role.OPERATOR,
        _RUNS + "Cancel": Role.OPERATOR,
        _RUNS + "Backfill": Role.OPERATOR,
        _AGENTS + "Drain": Role.OPERATOR,
        # admin: change what runs, and who may
        _TASKS + "Apply": Role.ADMIN,
        _TASKS + "Delete": Role.ADMIN,
        _CREDENTIALS + "Create": Role.ADMIN,
        _CREDENTIALS + "List": Role.ADMIN,
        _CREDENTIALS + "Revoke": Role.ADMIN,
        _AUDIT + "List": Role.ADMIN,
        # agent: its stream, nothing else
        _AGENTS + "Connect": Role.AGENT,
    }
)

#: Methods that need an unscoped credential: they are not about one task and
#: reach beyond any scope (an agent runs every task's runs; credentials and
#: the audit log concern everyone).
UNSCOPED_ONLY: frozenset[str] = frozenset(
    {
        _AGENTS + "Drain",
        _CREDENTIALS + "Create",
        _CREDENTIALS + "List",
        _CREDENTIALS + "Revoke",
        _AUDIT + "List",
    }
)

#: Services open to anyone, without a credential.
OPEN_SERVICES: frozenset[str] = frozenset({"/grpc.health.v1.Health/"})
#: Services any valid credential (whatever its role) may call.
ANY_CREDENTIAL_SERVICES: frozenset[str] = frozenset(
    {
        "/grpc.reflection.v1alpha.ServerReflection/",
        "/grpc.reflection.v1.ServerReflection/",
    }
)


def service_of(method: str) -> str:
    """'/hydra.v1.TaskService/Apply' -> '/hydra.v1.TaskService/'."""
    return method[: method.rfind("/") + 1]


def short_name(method: str) -> str:
    """'/hydra.v1.TaskService/Apply' -> 'TaskService/Apply', as messages say it."""
    service, _, name = method.rpartition("/")
    return f"{service.rsplit('.', 1)[-1]}/{name}"
