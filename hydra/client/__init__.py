"""The Hydra Python SDK: typed task specs and a client of the coordinators.

Example::

    from datetime import timedelta
    from hydra.client import Client, Cron, Retry, Task

    export = Task(
        name="billing.export",
        command=("python", "export.py", "--day", "{{ ds }}"),
        triggers=(Cron(expression="30 2 * * *", timezone="Australia/Sydney"),),
        retry=Retry(max_attempts=3, backoff=timedelta(seconds=30)),
    )
    # Over TLS: Client(tls=ClientTls(ca=Path("ca.pem"))), or HYDRA_TLS_CA, or a context.
    with Client() as client:
        client.apply(export)
        run, _ = client.trigger("billing.export", idempotency_key="2025-01-31")
        print(client.wait(run.id).state)
"""

from __future__ import annotations

from hydra.client._client import Client
from hydra.client._types import ApplyResult, BackfillResult, ClusterStatus, LogChunk, TaskDetails
from hydra.domain import (
    After,
    Agent,
    At,
    Attempt,
    AttemptState,
    AuditEntry,
    Catchup,
    CommandCheck,
    Concurrency,
    Coordinator,
    Credential,
    Cron,
    FileCheck,
    HttpCheck,
    Interval,
    NewCredential,
    Notification,
    NotificationState,
    NotifyEvent,
    OnTimeout,
    Overlap,
    PreconditionVerdict,
    Retention,
    Retry,
    Role,
    Run,
    RunState,
    SecretRef,
    TaskVersion,
    TcpCheck,
    Webhook,
)
from hydra.domain import Task as RegisteredTask
from hydra.domain import TaskSpec as Task
from hydra.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldProblem,
    HydraError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)
from hydra.occurrences import Explanation, Fact, FactKind, SkipReason
from hydra.tls import ClientTls, TlsProblem

__all__ = [
    "After",
    "Agent",
    "AlreadyExists",
    "ApplyResult",
    "At",
    "Attempt",
    "AttemptState",
    "AuditEntry",
    "BackfillResult",
    "Catchup",
    "Client",
    "ClientTls",
    "ClusterStatus",
    "CommandCheck",
    "Concurrency",
    "Coordinator",
    "Credential",
    "Cron",
    "Explanation",
    "Fact",
    "FactKind",
    "FailedPrecondition",
    "FieldProblem",
    "FileCheck",
    "HttpCheck",
    "HydraError",
    "Interval",
    "InvalidArgument",
    "LogChunk",
    "NewCredential",
    "NotFound",
    "Notification",
    "NotificationState",
    "NotifyEvent",
    "OnTimeout",
    "Overlap",
    "PermissionDenied",
    "PreconditionVerdict",
    "RegisteredTask",
    "Retention",
    "Retry",
    "Role",
    "Run",
    "RunState",
    "SecretRef",
    "SkipReason",
    "Task",
    "TaskDetails",
    "TaskVersion",
    "TcpCheck",
    "TlsProblem",
    "Unauthenticated",
    "Unavailable",
    "Webhook",
]
