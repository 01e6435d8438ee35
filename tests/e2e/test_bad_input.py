"""Bad input, through hydractl and straight over gRPC: a clear message naming
the field, the right exit code or status, no traceback, and nothing changed in
the database (docs/architecture.md, guarantees).

Nothing here may change the database, so the tests share one coordinator (and
one database, checked before and after every case) to stay fast.
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
from google.protobuf.duration_pb2 import Duration
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from psycopg import sql

from harness.hydra import HYDRA, Hydractl
from harness.processes import clean_env
from hydra.v1 import run_service_pb2 as run_pb
from hydra.v1 import run_service_pb2_grpc as run_grpc
from hydra.v1 import task_service_pb2 as task_pb
from hydra.v1 import task_service_pb2_grpc as task_grpc
from hydra.v1 import types_pb2 as pb

from support.db import Databases
from support.processes import processes_in

UNKNOWN_RUN = "00000000-0000-4000-8000-000000000000"
TEN_MB = 10 * 1024 * 1024
ONE_MB = 1024 * 1024
#: Tables whose rows nothing but a request changes (agents and coordinators heartbeat).
CONTENT_TABLES = (
    "hydra_tasks",
    "hydra_task_versions",
    "hydra_triggers",
    "hydra_runs",
    "hydra_attempts",
    "hydra_attempt_output",
)


@dataclass(frozen=True)
class World:
    """A coordinator with a task ``greet`` (param ``who``) and one SUCCEEDED run of it."""

    hydractl: Hydractl
    conninfo: str
    succeeded_run: str


@pytest.fixture(scope="module")
def world(
    databases: Databases, db_template: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    name = databases.create(template=db_template)
    conninfo = databases.conninfo(name)
    try:
        with processes_in(tmp_path_factory.mktemp("bad-input")) as processes:
            coordinator = processes.coordinator(conninfo)
            agent = processes.agent(coordinator, "agent-1")
            hydractl = coordinator.hydractl
            greet = processes.log_dir / "greet.yaml"
            greet.write_text(
                'name: greet\ncommand: [echo, "hi {{ params.who }}"]\nparams: {who: x}\n'
            )
            hydractl.ok("apply", "-f", str(greet))
            run_id = hydractl.ok("run", "greet", "--wait").strip()
            agent.stop()  # nothing more to run; fewer moving parts
            yield World(hydractl, conninfo, run_id)
    finally:
        databases.drop(name)


def snapshot(conninfo: str) -> dict[str, Any]:
    """Row counts of every ``hydra_*`` table (of the audit log: its OK entries), and a
    digest of the rows of `CONTENT_TABLES`."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT tablename FROM pg_tables"
                " WHERE schemaname = current_schema() AND tablename LIKE 'hydra\\_%'"
            )
        ]
        assert set(CONTENT_TABLES) <= set(tables)
        state: dict[str, Any] = {}
        for table in tables:
            ident = sql.Identifier(table)
            query = sql.SQL("SELECT count(*) FROM {}").format(ident)
            if table == "hydra_audit":  # records failed calls too: only OK entries must not grow
                query = sql.SQL("SELECT count(*) FROM hydra_audit WHERE outcome = 'OK'")
            if table in CONTENT_TABLES:
                query = sql.SQL(
                    "SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), ''))"
                    " FROM {} t"
                ).format(ident)
            state[table] = conn.execute(query).fetchone()
    return state


@pytest.fixture
def unchanged(world: World) -> Iterator[None]:
    """Fails the test if the database differs after it."""
    before = snapshot(world.conninfo)
    yield
    assert snapshot(world.conninfo) == before


# --- hydractl ------------------------------------------------------------------

GOOD = "command: [echo]\n"
BAD_SPECS = {
    "invalid cron": (GOOD + 'triggers: [{cron: "61 * * * *"}]\n', "triggers[0].cron"),
    "unknown time zone": (
        GOOD + 'triggers: [{cron: "1 * * * *", timezone: Mars/Olympus_Mons}]\n',
        "triggers[0].timezone",
    ),
    "empty command": ("command: []\n", "command"),
    "negative timeout": (GOOD + "timeout: -5s\n", "timeout"),
    "10 MB argument": (f"command: [echo, {'x' * TEN_MB}]\n", "command[1]"),
}


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(("yaml_body", "field"), BAD_SPECS.values(), ids=BAD_SPECS.keys())
def test_apply_refuses_a_bad_spec_naming_the_field(
    world: World, tmp_path: Path, yaml_body: str, field: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\n" + yaml_body)
    done = world.hydractl.run("apply", "-f", str(path))
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("hydractl: error:"), done.stderr
    assert f"{field}:" in done.stderr, f"the message does not name {field}: {done.stderr}"
    assert done.stdout == ""


#: args (``{run}`` is the SUCCEEDED run), exit code, what the message must name.
BAD_COMMANDS = {
    "unknown task": (["run", "nope"], 3, "'nope'"),
    "unknown run id": (["runs", "get", UNKNOWN_RUN], 3, UNKNOWN_RUN),
    "logs of an unknown run": (["logs", UNKNOWN_RUN], 3, UNKNOWN_RUN),
    "retry of an unknown run": (["retry", UNKNOWN_RUN], 3, UNKNOWN_RUN),
    "cancel of an unknown run": (["cancel", UNKNOWN_RUN], 3, UNKNOWN_RUN),
    "--param without =": (["run", "greet", "--param", "who"], 2, "--param"),
    "--param not declared": (["run", "greet", "--param", "color=red"], 2, "params.color"),
    "retry of a SUCCEEDED run": (["retry", "{run}"], 4, "{run}"),
    "cancel of a finished run": (["cancel", "{run}"], 4, "{run}"),
}


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(("args", "code", "named"), BAD_COMMANDS.values(), ids=BAD_COMMANDS.keys())
def test_hydractl_refuses_with_a_clear_message_and_exit_code(
    world: World, args: list[str], code: int, named: str
) -> None:
    run = world.succeeded_run
    done = world.hydractl.run(*(arg.format(run=run) for arg in args))
    assert done.returncode == code, done.stderr
    assert "error:" in done.stderr and named.format(run=run) in done.stderr, done.stderr
    assert done.stdout == ""


# --- gRPC, bypassing the client's validation -------------------------------------


@dataclass(frozen=True)
class Stubs:
    tasks: task_grpc.TaskServiceStub
    runs: run_grpc.RunServiceStub


@pytest.fixture
def stubs(world: World) -> Iterator[Stubs]:
    with grpc.insecure_channel(world.hydractl.address) as channel:
        yield Stubs(task_grpc.TaskServiceStub(channel), run_grpc.RunServiceStub(channel))


def apply_spec(**fields: Any) -> Callable[[Stubs, str], object]:
    spec = pb.TaskSpec(name="bad", **{"command": ["echo"], **fields})
    return lambda stubs, _: stubs.tasks.Apply(task_pb.ApplyTaskRequest(spec=spec), timeout=30)


def cron(expression: str, timezone: str = "") -> list[pb.Trigger]:
    return [pb.Trigger(cron=pb.CronTrigger(expression=expression, timezone=timezone))]


INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
CONFLICT = grpc.StatusCode.FAILED_PRECONDITION
#: The call (given stubs and the SUCCEEDED run), its status, what the details must name.
BAD_CALLS: dict[str, tuple[Callable[[Stubs, str], object], grpc.StatusCode, str]] = {
    "no spec": (
        lambda s, _: s.tasks.Apply(task_pb.ApplyTaskRequest(), timeout=30),
        INVALID,
        "spec",
    ),
    "invalid cron": (apply_spec(triggers=cron("61 * * * *")), INVALID, "spec.triggers[0].cron"),
    "unknown time zone": (
        apply_spec(triggers=cron("1 * * * *", "Mars/Olympus_Mons")),
        INVALID,
        "spec.triggers[0].timezone",
    ),
    "empty command": (apply_spec(command=[]), INVALID, "spec.command"),
    "negative timeout": (apply_spec(timeout=Duration(seconds=-5)), INVALID, "spec.timeout"),
    "1 MB argument": (apply_spec(command=["echo", "x" * ONE_MB]), INVALID, "spec.command[1]"),
    # Past the message limit (hydra.limits), gRPC refuses the request before Hydra sees it.
    "10 MB request": (
        apply_spec(command=["echo", "x" * TEN_MB]),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "larger than max",
    ),
    "unknown task": (
        lambda s, _: s.runs.Trigger(run_pb.TriggerRunRequest(task="nope"), timeout=30),
        NOT_FOUND,
        "'nope'",
    ),
    "unknown run id": (
        lambda s, _: s.runs.Get(run_pb.GetRunRequest(id=UNKNOWN_RUN), timeout=30),
        NOT_FOUND,
        UNKNOWN_RUN,
    ),
    "param with an empty name": (
        lambda s, _: s.runs.Trigger(
            run_pb.TriggerRunRequest(task="greet", params={"": "x"}), timeout=30
        ),
        INVALID,
        "params",
    ),
    "param not declared": (
        lambda s, _: s.runs.Trigger(
            run_pb.TriggerRunRequest(task="greet", params={"color": "red"}), timeout=30
        ),
        INVALID,
        "params.color",
    ),
    "retry of a SUCCEEDED run": (
        lambda s, run: s.runs.Retry(run_pb.RetryRunRequest(id=run), timeout=30),
        CONFLICT,
        "succeeds at most once",
    ),
    "cancel of a finished run": (
        lambda s, run: s.runs.Cancel(run_pb.CancelRunRequest(id=run), timeout=30),
        CONFLICT,
        "SUCCEEDED",
    ),
}


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(("call", "code", "named"), BAD_CALLS.values(), ids=BAD_CALLS.keys())
def test_grpc_refuses_with_the_right_status_naming_the_field(
    world: World,
    stubs: Stubs,
    call: Callable[[Stubs, str], object],
    code: grpc.StatusCode,
    named: str,
) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        call(stubs, world.succeeded_run)
    error: Any = raised.value
    assert error.code() == code, error.details()
    assert named in error.details(), f"the details do not name {named}: {error.details()}"


def test_health_says_serving(world: World) -> None:
    with grpc.insecure_channel(world.hydractl.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        answer = health.Check(health_pb2.HealthCheckRequest(), timeout=30)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_and_describes_the_services(world: World) -> None:
    with grpc.insecure_channel(world.hydractl.address) as channel:
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        requests = [
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol="hydra.v1.RunService"),
        ]
        listed, described = reflection.ServerReflectionInfo(iter(requests), timeout=30)
    services = {service.name for service in listed.list_services_response.service}
    assert {"hydra.v1.TaskService", "hydra.v1.RunService", "hydra.v1.AgentService"} <= services
    assert "grpc.health.v1.Health" in services
    assert described.file_descriptor_response.file_descriptor_proto, described


# --- the hydra command -----------------------------------------------------------


def test_coordinator_on_a_taken_port_says_so_without_a_traceback(db_conninfo: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        done = subprocess.run(
            [*HYDRA, "coordinator", "--db", db_conninfo, "--listen", address],
            capture_output=True,
            text=True,
            env=clean_env(),
            timeout=60,
            check=False,
        )
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr
    assert "hydra: error:" in done.stderr and address in done.stderr, done.stderr
