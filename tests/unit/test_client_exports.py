"""The public names of hydra.client, pinned: removing or renaming one breaks users."""

from __future__ import annotations

import hydra.client
from hydra import domain, errors


def test_all_is_pinned() -> None:
    assert sorted(hydra.client.__all__) == [
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


def test_every_exported_name_exists() -> None:
    for name in hydra.client.__all__:
        assert getattr(hydra.client, name) is not None, name


def test_sdk_names_are_the_domain_and_error_types() -> None:
    assert hydra.client.Task is domain.TaskSpec
    assert hydra.client.RegisteredTask is domain.Task
    assert hydra.client.Run is domain.Run
    assert hydra.client.NotFound is errors.NotFound
    assert issubclass(hydra.client.Unavailable, hydra.client.HydraError)


def test_client_imports_no_server_dependencies() -> None:
    import subprocess
    import sys

    code = (
        "import sys, hydra.client, hydra.client.hydractl\n"
        "bad = {'psycopg', 'psycopg_pool', 'jinja2', 'croniter',"
        " 'hydra.coordinator', 'hydra.agent'}\n"
        "print(sorted(bad & set(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
