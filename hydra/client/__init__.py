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
    "ClusterStatus",
    "CommandCheck",
    "Concurrency",
    "Coordinator",
    "Credential",
    "Cron",
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
    "Task",
    "TaskDetails",
    "TaskVersion",
    "TcpCheck",
    "Unauthenticated",
    "Unavailable",
]
