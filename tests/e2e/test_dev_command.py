"""`hydra dev` (embedded PostgreSQL + coordinator + one agent, one command), the
embedded fallback of `hydra coordinator`, and `hydra migrate`."""

from __future__ import annotations

import signal
import socket
import subprocess
from importlib import resources
from pathlib import Path

import pytest

from harness.hydra import HYDRA, HYDRACTL, Hydractl, wait_agent_state, wait_serving
from harness.net import free_port
from harness.processes import Process, children_of, clean_env, is_alive, processes_mentioning

from support.processes import START_TIMEOUT_S, Processes

DEV_AGENT = f"{socket.gethostname()}-dev"
#: The first start runs initdb; a loaded machine takes its time.
EMBEDDED_START_S = 60.0
STOP_S = 30.0


def start_dev(processes: Processes, home: Path, name: str) -> tuple[Process, Hydractl]:
    """`hydra dev` on `home`, once it serves and its agent is connected."""
    address = f"127.0.0.1:{free_port()}"
    dev = processes.start(name, [*HYDRA, "dev", "--home", str(home), "--listen", address])
    wait_serving(dev, address, timeout=EMBEDDED_START_S)
    # The context `hydra dev` wrote in its home names the admin credential for this address.
    hydractl = Hydractl(address, env={"HYDRA_HOME": str(home)})
    wait_agent_state(hydractl, DEV_AGENT, "connected", START_TIMEOUT_S)
    return dev, hydractl


def postmaster_pid(home: Path) -> int:
    return int((home / "pgdata" / "postmaster.pid").read_text().split()[0])


def test_dev_runs_a_task_stops_cleanly_on_ctrl_c_and_keeps_its_data(
    home_processes: Processes, hydra_home: Path, tmp_path: Path
) -> None:
    dev, hydractl = start_dev(home_processes, hydra_home, "dev")
    assert "Ctrl-C stops everything" in dev.log()
    spec = tmp_path / "hello.yaml"
    spec.write_text('name: hello\ncommand: [echo, "hello from dev"]\n')
    hydractl.ok("apply", "-f", str(spec))
    run_id = hydractl.ok("run", "hello", "--wait").strip()
    assert hydractl.ok("logs", run_id) == "hello from dev\n"

    children = {pid: Path(f"/proc/{pid}/cmdline").read_text() for pid in children_of(dev.pid)}
    renderers = [pid for pid, cmdline in children.items() if "render_worker" in cmdline]
    [web] = [pid for pid, cmdline in children.items() if "\0web\0" in cmdline]
    [agent] = [pid for pid in children if pid not in renderers and pid != web]
    postgres = postmaster_pid(hydra_home)
    assert is_alive(postgres) and "agent" in children[agent] and renderers
    dev.signal_group(signal.SIGINT)  # what Ctrl-C in a terminal does
    assert dev.wait(STOP_S) == 0, dev.log_tail()
    assert not is_alive(postgres) and not is_alive(agent) and not is_alive(web)
    assert not [pid for pid in renderers if is_alive(pid)]
    # The agent names the coordinator's address; the trailing space stops a longer port matching.
    assert processes_mentioning(str(hydra_home), f"{hydractl.address} ") == []

    admin_secret = (hydra_home / "credentials" / "admin.token").read_text()
    _, again = start_dev(home_processes, hydra_home, "dev-again")
    assert [t["name"] for t in again.json("tasks", "list")] == ["hello"]
    # A restart reuses the live credentials it made.
    assert (hydra_home / "credentials" / "admin.token").read_text() == admin_secret
    [kept] = again.json("runs", "list", "--task", "hello")
    assert (kept["id"], kept["state"]) == (run_id, "SUCCEEDED")


def test_coordinator_without_a_database_uses_the_embedded_server_of_hydra_home(
    home_processes: Processes, hydra_home: Path, tmp_path: Path
) -> None:
    address = f"127.0.0.1:{free_port()}"
    argv = [*HYDRA, "coordinator", "--listen", address, "--insecure"]
    coordinator = home_processes.start("coordinator", argv, env={"HYDRA_HOME": str(hydra_home)})
    wait_serving(coordinator, address, timeout=EMBEDDED_START_S)
    postgres = postmaster_pid(hydra_home)
    assert is_alive(postgres)
    spec = tmp_path / "kept.yaml"
    spec.write_text("name: kept\ncommand: [echo]\n")
    Hydractl(address).ok("apply", "-f", str(spec))

    coordinator.signal(signal.SIGTERM)
    assert coordinator.wait(STOP_S) == 0, coordinator.log_tail()
    assert not is_alive(postgres)
    assert processes_mentioning(str(hydra_home)) == []


def migrate(conninfo: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*HYDRA, "migrate", "--db", conninfo],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
        check=False,
    )


@pytest.fixture
def shipped_migrations() -> list[str]:
    """Names of the migrations inside the installed package, in order."""
    folder = resources.files("hydra.coordinator.migrations")
    return sorted(item.name for item in folder.iterdir() if item.name.endswith(".sql"))


def test_migrate_applies_every_migration_once(
    empty_db_conninfo: str, shipped_migrations: list[str]
) -> None:
    first = migrate(empty_db_conninfo)
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == [f"applied {name}" for name in shipped_migrations]
    again = migrate(empty_db_conninfo)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == "schema is up to date"


def test_dev_authenticates_and_hydractl_finds_its_credential_without_a_flag(
    home_processes: Processes, hydra_home: Path, tmp_path: Path
) -> None:
    """issue 12: `hydra dev` stays one command with authentication on; then
    `hydractl apply -f examples/hello.yaml` works with no flag at all."""
    _, hydractl = start_dev(home_processes, hydra_home, "dev")
    credentials = hydra_home / "credentials"
    for path in (credentials / "admin.token", credentials / "agent.token"):
        assert path.stat().st_mode & 0o777 == 0o600, path
    assert (hydra_home / "config.yaml").stat().st_mode & 0o777 == 0o600
    examples = Path(__file__).parents[2] / "examples" / "hello.yaml"

    def hydractl_bare(*args: str, home: Path = hydra_home) -> subprocess.CompletedProcess[str]:
        """hydractl with nothing but HYDRA_HOME: no --coordinator, no token."""
        return subprocess.run(
            [*HYDRACTL, *args],
            capture_output=True,
            text=True,
            env=clean_env(HYDRA_HOME=str(home)),
            timeout=60,
            check=False,
        )

    applied = hydractl_bare("apply", "-f", str(examples))
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.strip() == "created hello v1"
    [entry] = hydractl.json("audit", "list", "--task", "hello")
    assert entry["who"].startswith("dev-admin-") and entry["role"] == "admin"

    # Without the context there is no credential: refused, exit code 6, one line.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    refused = subprocess.run(
        [*HYDRACTL, "--coordinator", hydractl.address, "tasks", "list"],
        capture_output=True,
        text=True,
        env=clean_env(HYDRA_HOME=str(elsewhere)),
        timeout=60,
        check=False,
    )
    assert refused.returncode == 6
    assert refused.stderr.startswith("hydractl: error: no credential")
    assert "Traceback" not in refused.stderr
