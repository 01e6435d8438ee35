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
