"""The audit log under authentication: entries name the credential and its role;
calls the interceptor refuses (no credential, too small a role) reach the log
through the refusal sink; credential changes are recorded, over gRPC and with
database access (the operator's bootstrap)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from harness.wait import wait_for
from hydra.client import Client, PermissionDenied, Role, Task, Unauthenticated

from support.cluster import CoordinatorThread, Database
from support.credentials import make_credential


@pytest.fixture
def secured(db_conninfo: str) -> Iterator[CoordinatorThread]:
    coordinator = CoordinatorThread(db_conninfo, name="secured", insecure=False).start()
    yield coordinator
    coordinator.stop()


def _entries(db: Database, action: str) -> list[dict[str, Any]]:
    return db.rows("SELECT * FROM hydra_audit WHERE action = %s ORDER BY id", action)


def test_entries_name_the_credential_and_refusals_are_recorded(
    secured: CoordinatorThread, db_conninfo: str
) -> None:
    db = Database(db_conninfo)
    admin = make_credential(db_conninfo, "deployer", Role.ADMIN)
    viewer = make_credential(db_conninfo, "dashboard", Role.VIEWER)
    with Client(secured.address, token=admin) as client:
        client.apply(Task(name="audited.job", command=("true",)))
    [applied] = _entries(db, "TaskService/Apply")
    assert (applied["who"], applied["role"], applied["outcome"]) == ("deployer", "admin", "OK")

    with Client(secured.address, token=viewer) as client, pytest.raises(PermissionDenied):
        client.trigger("audited.job")
    with Client(secured.address, token="") as client, pytest.raises(Unauthenticated):
        client.pause("audited.job")

    def refusals() -> list[dict[str, Any]] | None:
        found = [
            *_entries(db, "RunService/Trigger"),
            *_entries(db, "TaskService/Pause"),
        ]
        return found if len(found) == 2 else None

    denied, unauthenticated = wait_for(refusals, timeout=10, message="both refusals recorded")
    assert (denied["who"], denied["role"], denied["outcome"]) == (
        "dashboard",
        "viewer",
        "PERMISSION_DENIED",
    )
    assert "needs role operator" in denied["detail"]
    assert denied["peer"].startswith("ipv4:127.0.0.1:")
    assert (unauthenticated["who"], unauthenticated["outcome"]) == ("", "UNAUTHENTICATED")
    # Nothing was changed by either: the task is not paused and has no run.
    assert db.value("SELECT paused FROM hydra_tasks WHERE name = 'audited.job'") is False
    assert db.value("SELECT count(*) FROM hydra_runs") == 0


def test_credential_changes_are_recorded_over_grpc_and_with_database_access(
    secured: CoordinatorThread, db_conninfo: str
) -> None:
    db = Database(db_conninfo)
    admin = make_credential(db_conninfo, "root", Role.ADMIN)
    [bootstrap] = _entries(db, "CredentialService/Create")
    assert bootstrap["who"] == "tests"  # created_by of the database-access path
    assert bootstrap["detail"] == "credential root (admin) created"
    with Client(secured.address, token=admin) as client:
        client.create_credential("ci", Role.OPERATOR, scope="billing.")
        client.revoke_credential("ci")
    created = _entries(db, "CredentialService/Create")[-1]
    revoked = _entries(db, "CredentialService/Revoke")[-1]
    assert (created["who"], created["detail"]) == ("root", "credential ci (operator) created")
    assert (revoked["who"], revoked["detail"]) == ("root", "credential ci (operator) revoked")
    assert created["peer"].startswith("ipv4:127.0.0.1:")
    # No secret ever reaches the log.
    assert db.value("SELECT count(*) FROM hydra_audit WHERE strpos(detail, %s) > 0", admin) == 0
