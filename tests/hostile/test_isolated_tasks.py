"""Isolated tasks and secrets that never reach the record (issue 12, parts 6 and 7).

A task inherited the agent's whole environment (``AWS_SECRET_ACCESS_KEY`` came
through), could read the agent's token from ``/proc/$PPID/environ``, ran as the
agent's user, and a secret in its env was stored with every attempt. Now a task
gets an allow-listed environment, the agent's credential comes from a file,
``--run-as`` runs tasks as another user, and ``{secret: NAME}`` env values are
read on the agent from its secrets directory and masked in what it reports.
Real coordinator, real agent processes, real commands, real database.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from harness.hydra import Hydractl, wait_agents
from harness.wait import wait_for
from hydra.client import (
    Client,
    CommandCheck,
    Concurrency,
    Retry,
    Role,
    RunState,
    SecretRef,
    Task,
)

from support.cluster import AgentProcess, CoordinatorThread, Database
from support.credentials import make_credential

TOKEN = "agent-credential-7f3a9c"
AWS_KEY = "aws-secret-key-5b1e77"
PASSWORD = "warehouse-pw-91d2c0"
AS_ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="--run-as needs the agent to run as root")


@pytest.fixture
def coordinator(db_conninfo: str) -> Iterator[CoordinatorThread]:
    coordinator = CoordinatorThread(db_conninfo).start()
    try:
        yield coordinator
    finally:
        coordinator.stop()


@pytest.fixture
def secured(db_conninfo: str) -> Iterator[CoordinatorThread]:
    """A coordinator that authenticates: the agent's token file holds a real credential."""
    coordinator = CoordinatorThread(db_conninfo, insecure=False).start()
    try:
        yield coordinator
    finally:
        coordinator.stop()


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "agent.token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def secrets_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "secrets"
    directory.mkdir(mode=0o700)
    (directory / "warehouse-db").write_text(PASSWORD + "\n")
    return directory


def start_agent(
    conninfo: str,
    coordinator: CoordinatorThread,
    tmp_path: Path,
    *,
    env: dict[str, str] | None = None,
    token_file: Path | None = None,
    extra_args: Sequence[str] = (),
    agent_id: str = "agent-0",
) -> AgentProcess:
    agent = AgentProcess(
        agent_id,
        [coordinator.address],
        log_path=tmp_path / f"{agent_id}.log",
        token_file=token_file,
        extra_args=extra_args,
        env={"AWS_SECRET_ACCESS_KEY": AWS_KEY, **(env or {})},
    ).start()
    try:
        wait_agents(conninfo, [agent_id], watched=[agent], timeout=30)
    except BaseException:
        agent.stop()
        raise
    return agent


def logs(client: Client, run_id: str) -> str:
    return b"".join(chunk.data for chunk in client.tail_logs(run_id)).decode()


def run_once(client: Client, task: Task) -> tuple[str, RunState, str]:
    client.apply(task)
    run, _ = client.trigger(task.name)
    final = client.wait(run.id, timeout=30)
    return run.id, final.state, logs(client, run.id)


@pytest.fixture(autouse=True)
def no_token_in_this_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HYDRA_TOKEN", raising=False)


def test_a_task_sees_neither_the_agents_variables_nor_its_credential(
    db_conninfo: str, secured: CoordinatorThread, tmp_path: Path
) -> None:
    credential = make_credential(db_conninfo, "agent-0", Role.AGENT, agent_id="agent-0")
    admin = make_credential(db_conninfo, "admin", Role.ADMIN)
    token_file = tmp_path / "agent.token"
    token_file.write_text(credential + "\n")
    token_file.chmod(0o600)
    agent = start_agent(db_conninfo, secured, tmp_path, token_file=token_file)
    script = 'env; echo "PPID=$PPID"; echo "---"; tr "\\0" "\\n" < /proc/$PPID/environ'
    try:
        with Client(secured.address, token=admin) as client:
            _, state, printed = run_once(client, Task(name="snoop", command=("sh", "-c", script)))
    finally:
        agent.stop()

    assert state is RunState.SUCCEEDED, printed
    own_env, _, agent_environ = printed.partition("---\n")
    assert f"PPID={agent.pid}\n" in own_env  # $PPID really is the agent
    assert "PATH=" in own_env and "HYDRA_RUN_ID=" in own_env
    assert AWS_KEY not in own_env and "AWS_SECRET_ACCESS_KEY" not in own_env
    assert credential not in own_env and "HYDRA_TOKEN" not in own_env
    assert AWS_KEY in agent_environ  # the agent's own environment, read through /proc ...
    assert credential not in agent_environ  # ... holds no credential: it came from the file
    assert "hydra_" not in agent_environ


def test_hydra_token_in_the_agents_environment_is_warned_of_and_still_not_passed(
    db_conninfo: str, coordinator: CoordinatorThread, tmp_path: Path
) -> None:
    agent = start_agent(db_conninfo, coordinator, tmp_path, env={"HYDRA_TOKEN": TOKEN})
    try:
        with Client(coordinator.address, token=TOKEN) as client:
            _, state, printed = run_once(client, Task(name="env", command=("env",)))
    finally:
        agent.stop()

    assert state is RunState.SUCCEEDED
    assert TOKEN not in printed and AWS_KEY not in printed
    log = agent.log_path.read_text()
    assert "HYDRA_TOKEN is in the agent's environment" in log
    assert "use --token-file" in log or "with --token-file" in log


def test_pass_env_passes_what_it_names(
    db_conninfo: str, coordinator: CoordinatorThread, token_file: Path, tmp_path: Path
) -> None:
    agent = start_agent(
        db_conninfo,
        coordinator,
        tmp_path,
        token_file=token_file,
        env={"AWS_REGION": "eu-west-1", "PIP_INDEX_URL": "https://pypi.example"},
        extra_args=["--pass-env", "AWS_REGION", "--pass-env", "PIP_*"],
    )
    try:
        with Client(coordinator.address, token=TOKEN) as client:
            _, state, printed = run_once(client, Task(name="env", command=("env",)))
    finally:
        agent.stop()

    assert state is RunState.SUCCEEDED
    assert "AWS_REGION=eu-west-1" in printed and "PIP_INDEX_URL=https://pypi.example" in printed
    assert AWS_KEY not in printed


@pytest.mark.parametrize(
    "extra_args",
    [
        pytest.param([], id="posix_spawn"),
        pytest.param(["--run-as", "nobody"], id="run-as, Popen in its workdir", marks=AS_ROOT),
    ],
)
def test_a_task_gets_none_of_the_agents_descriptors_but_0_1_and_2(
    db_conninfo: str,
    coordinator: CoordinatorThread,
    token_file: Path,
    tmp_path: Path,
    extra_args: list[str],
) -> None:
    # Spawning no longer closes what it does not pass on: the agent's gRPC sockets, its
    # pidfds and the pipes of the attempt that runs meanwhile must all be close-on-exec.
    agent = start_agent(
        db_conninfo, coordinator, tmp_path, token_file=token_file, extra_args=extra_args
    )
    try:
        with Client(coordinator.address, token=TOKEN) as client:
            client.apply(Task(name="holds.pipes", command=("sleep", "60")))
            holder, _ = client.trigger("holds.pipes")
            wait_for(
                lambda: client.get_run(holder.id).state is RunState.RUNNING,
                timeout=30,
                message="the holding attempt running",
            )
            listed = Task(name="lists.fds", command=("sh", "-c", "ls /proc/$$/fd"))
            _, state, printed = run_once(client, listed)
            client.cancel(holder.id)
    finally:
        agent.stop()

    assert state is RunState.SUCCEEDED, printed
    assert printed.split() == ["0", "1", "2"]


@AS_ROOT
def test_run_as_nobody_runs_attempts_and_command_checks_as_nobody(
    db_conninfo: str, coordinator: CoordinatorThread, token_file: Path, tmp_path: Path
) -> None:
    agent = start_agent(
        db_conninfo, coordinator, tmp_path, token_file=token_file, extra_args=["--run-as", "nobody"]
    )
    task = Task(
        name="as.nobody",
        concurrency=Concurrency(max_active_runs=4),
        command=("sh", "-c", 'id -u; echo "{\\"uid\\": $(id -u)}" > "$HYDRA_OUTPUT"'),
        # Not ready (and never run) unless the check runs as nobody too.
        preconditions=(CommandCheck(argv=("sh", "-c", 'test "$(id -u)" = 65534')),),
    )
    try:
        with Client(coordinator.address, token=TOKEN) as client:
            run_id, state, printed = run_once(client, task)
            run = client.get_run(run_id)
            # Switching user by subprocess's user= forked the agent, and with its gRPC
            # threads running a fork died of SIGSEGV or SIGABRT now and then: many runs.
            many = [client.trigger(task.name)[0].id for _ in range(20)]
            ends = [client.wait(run_id, timeout=30) for run_id in many]
    finally:
        agent.stop()

    assert state is RunState.SUCCEEDED, (printed, run.reason, run.precondition_verdicts)
    assert [end.reason for end in ends if end.state is not RunState.SUCCEEDED] == []
    assert printed == "65534\n"
    assert json.loads(run.outputs_json) == {"uid": 65534}
    assert run.precondition_verdicts[0].ready


def test_a_secret_is_resolved_on_the_agent_masked_and_absent_from_every_stored_row(
    db_conninfo: str,
    coordinator: CoordinatorThread,
    token_file: Path,
    secrets_dir: Path,
    tmp_path: Path,
) -> None:
    agent = start_agent(
        db_conninfo,
        coordinator,
        tmp_path,
        token_file=token_file,
        extra_args=["--secrets-dir", str(secrets_dir)],
    )
    digest = hashlib.sha256(PASSWORD.encode()).hexdigest()
    script = (
        f'test "$(printf %s "$DB_PASSWORD" | sha256sum | cut -c1-64)" = {digest} || exit 7; '
        'echo "connecting with $DB_PASSWORD"; echo "again: $DB_PASSWORD" >&2; '
        'printf \'{"dsn": "u:%s@db"}\' "$DB_PASSWORD" > "$HYDRA_OUTPUT"'
    )
    task = Task(
        name="billing.load",
        command=("sh", "-c", script),
        env={"DB_PASSWORD": SecretRef(name="warehouse-db"), "REGION": "eu"},
    )
    try:
        with Client(coordinator.address, token=TOKEN) as client:
            run_id, state, printed = run_once(client, task)
            run = client.get_run(run_id)
            stored = client.get_task("billing.load").task.spec
    finally:
        agent.stop()

    assert state is RunState.SUCCEEDED, (printed, run.reason)
    assert "connecting with ***\n" in printed and "again: ***\n" in printed
    assert json.loads(run.outputs_json) == {"dsn": "u:***@db"}
    assert stored.env == {"DB_PASSWORD": SecretRef(name="warehouse-db"), "REGION": "eu"}
    rows = every_stored_row(db_conninfo)
    assert {"hydra_attempts", "hydra_attempt_output", "hydra_task_versions"} <= set(rows)
    in_hex = PASSWORD.encode().hex()  # as bytea columns show in a row's text
    leaks = [
        (table, text)
        for table, texts in rows.items()
        for text in texts
        if PASSWORD in text or in_hex in text
    ]
    assert not leaks, "the secret's value was stored"
    masked = b"connecting with ***".hex()
    assert any(masked in text for text in rows["hydra_attempt_output"])  # the output, masked
    specs = Database(db_conninfo).rows("SELECT spec::text AS spec FROM hydra_task_versions")
    assert '"DB_PASSWORD": {"secret": "warehouse-db"}' in specs[0]["spec"]


def test_a_missing_secret_fails_the_attempt_naming_it_and_retries_apply(
    db_conninfo: str,
    coordinator: CoordinatorThread,
    token_file: Path,
    secrets_dir: Path,
    tmp_path: Path,
) -> None:
    agent = start_agent(
        db_conninfo,
        coordinator,
        tmp_path,
        token_file=token_file,
        extra_args=["--secrets-dir", str(secrets_dir)],
    )
    task = Task(
        name="needs.secret",
        command=("true",),
        env={"API_KEY": SecretRef(name="not-there")},
        retry=Retry(max_attempts=2, backoff=timedelta(0)),
    )
    try:
        with Client(coordinator.address, token=TOKEN) as client:
            run_id, state, _ = run_once(client, task)
            run = client.get_run(run_id)
    finally:
        agent.stop()

    assert state is RunState.FAILED
    expected = f"cannot start: secret 'not-there' not found in {secrets_dir}"
    assert [attempt.message for attempt in run.attempts] == [expected, expected]
    assert "Traceback" not in agent.log_path.read_text()


def every_stored_row(conninfo: str) -> dict[str, list[str]]:
    """Every row of every table of the schema, each whole row as text, by table."""
    tables = [
        row["table_name"]
        for row in Database(conninfo).rows(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'"
        )
    ]
    found: dict[str, list[str]] = {}
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for table in tables:
            query = f'SELECT t::text FROM "{table}" t'  # names from the catalog
            found[table] = [text for (text,) in conn.execute(query).fetchall()]
    return found


SECRET_YAML = """\
name: warehouse.check
command: ["sh", "-c", 'echo "pw=$DB_PASSWORD region=$REGION"']
env:
  REGION: eu
  DB_PASSWORD: {secret: warehouse-db}
"""


def test_a_secret_reference_in_yaml_through_hydractl(
    db_conninfo: str,
    coordinator: CoordinatorThread,
    token_file: Path,
    secrets_dir: Path,
    tmp_path: Path,
) -> None:
    agent = start_agent(
        db_conninfo,
        coordinator,
        tmp_path,
        token_file=token_file,
        extra_args=["--secrets-dir", str(secrets_dir)],
    )
    hydractl = Hydractl(coordinator.address)
    spec_file = tmp_path / "task.yaml"
    spec_file.write_text(SECRET_YAML)
    bad_file = tmp_path / "bad.yaml"
    bad_file.write_text(SECRET_YAML.replace("{secret: warehouse-db}", "{secret: ../shadow}"))
    try:
        hydractl.ok("--token", TOKEN, "apply", "-f", str(spec_file))
        shown = hydractl.json("--token", TOKEN, "tasks", "get", "warehouse.check")
        run_id = hydractl.ok("--token", TOKEN, "run", "warehouse.check").split()[-1]
        wait_for(
            lambda: hydractl.json("--token", TOKEN, "runs", "get", run_id)["state"] == "SUCCEEDED",
            timeout=30,
            message="the run to succeed",
        )
        printed = hydractl.ok("--token", TOKEN, "logs", run_id)
        refused = hydractl.run("--token", TOKEN, "apply", "-f", str(bad_file))
    finally:
        agent.stop()

    assert json.dumps(shown).count('"DB_PASSWORD": {"secret": "warehouse-db"}') == 1, shown
    assert PASSWORD not in json.dumps(shown)
    assert printed == "pw=*** region=eu\n"
    assert refused.returncode != 0
    assert "env.DB_PASSWORD.secret" in refused.stderr and "not a secret name" in refused.stderr
