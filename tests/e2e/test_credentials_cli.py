"""Credentials from the command line, as an operator makes them: the first admin
with `hydra credentials create` and database access, then hydractl with its
secret; the secret is stored nowhere (only its hash) and never logged."""

from __future__ import annotations

import hashlib
import json
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.hydra import HYDRA, Coordinator, Hydractl
from harness.processes import clean_env

from support.cluster import Database
from support.processes import Processes, processes_in


def hydra_credentials(conninfo: str, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [*HYDRA, "credentials", *args, "--db", conninfo],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
        check=False,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done


@pytest.fixture
def secured(db_conninfo: str, tmp_path: Path) -> Iterator[tuple[Processes, Coordinator]]:
    with processes_in(tmp_path) as processes:
        yield processes, processes.coordinator(db_conninfo, insecure=False)


def _everything_stored(conninfo: str) -> str:
    """Every row of every Hydra table, as text (bytea as hex)."""
    sql = Database(conninfo)
    query = "SELECT tablename FROM pg_tables WHERE tablename LIKE 'hydra%%'"
    tables = [row["tablename"] for row in sql.rows(query)]
    return "\n".join(
        row["j"] for t in tables for row in sql.rows(f"SELECT row_to_json(t)::text AS j FROM {t} t")
    )


def test_the_bootstrap_admin_drives_hydractl(
    secured: tuple[Processes, Coordinator], db_conninfo: str, tmp_path: Path
) -> None:
    _, coordinator = secured
    done = hydra_credentials(db_conninfo, "create", "--name", "root", "--role", "admin")
    assert done.returncode == 0, done.stderr
    secret = done.stdout.strip().splitlines()[-1]
    assert secret.startswith("hydra_")
    assert "not shown again" in done.stderr
    hydractl = Hydractl(coordinator.address)
    spec = tmp_path / "t.yaml"
    spec.write_text("name: billing.t\ncommand: [echo, hi]\n")
    assert hydractl.run("apply", "-f", str(spec)).returncode != 0  # no credential
    hydractl.ok("--token", secret, "apply", "-f", str(spec))
    created = hydractl.json(
        "--token", secret, "credentials", "create", "--name", "ci", "--role", "viewer",
        "--scope", "billing.", "--expires", "90d",
    )  # fmt: skip
    assert (created["role"], created["scope"], created["created_by"]) == (
        "viewer",
        "billing.",
        "root",
    )
    viewer = created["secret"]
    assert [t["name"] for t in hydractl.json("--token", viewer, "tasks", "list")] == ["billing.t"]
    refused = hydractl.run("--token", viewer, "apply", "-f", str(spec))
    assert "TaskService/Apply needs role admin; credential 'ci' has role viewer" in refused.stderr
    listed = hydractl.ok("--token", secret, "credentials", "list")
    assert "ci" in listed and "root" in listed and viewer not in listed
    hydractl.ok("--token", secret, "credentials", "revoke", "ci")
    refused = hydractl.run("--token", viewer, "tasks", "list")
    assert "credential 'ci' was revoked" in refused.stderr
    stored = _everything_stored(db_conninfo)
    for value in (secret, viewer):
        assert value not in stored
        assert hashlib.sha256(value.encode()).hexdigest() in stored  # the hash, as bytea
    log = coordinator.process.log()
    assert secret not in log and viewer not in log


def test_output_file_gets_the_secret_with_mode_0600(db_conninfo: str, tmp_path: Path) -> None:
    path = tmp_path / "agent.token"
    done = hydra_credentials(
        db_conninfo, "create", "--name", "agent-1", "--role", "agent", "--agent-id", "web-1",
        "--label", "pool=web", "--max-capacity", "4", "--output-file", str(path), "-o", "json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["secret"] is None and shown["labels"] == {"pool": "web"}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().strip().startswith("hydra_")
    listed = json.loads(hydra_credentials(db_conninfo, "list", "-o", "json").stdout)
    assert [(c["name"], c["agent_id"], c["max_capacity"]) for c in listed] == [
        ("agent-1", "web-1", 4)
    ]


def test_bad_input_names_the_field_without_a_traceback(db_conninfo: str) -> None:
    done = hydra_credentials(db_conninfo, "create", "--name", "a b", "--role", "agent")
    assert done.returncode == 2
    assert "name: 'a b' is not a credential name" in done.stderr
    assert "agent_id: required for role agent" in done.stderr
    done = hydra_credentials(db_conninfo, "revoke", "nobody")
    assert done.returncode != 0 and "credential 'nobody' not found" in done.stderr
    bad_db = subprocess.run(
        [*HYDRA, "credentials", "list", "--db", "host=127.0.0.1 port=1 connect_timeout=2"],
        capture_output=True, text=True, env=clean_env(), timeout=60, check=False,
    )  # fmt: skip
    assert bad_db.returncode == 2 and "cannot reach the database" in bad_db.stderr
    assert "Traceback" not in bad_db.stderr
