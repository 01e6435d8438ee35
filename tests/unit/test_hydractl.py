"""hydractl without a server: argument parsing, rendering, errors and exit codes."""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest

from harness.net import free_port
from hydra.client import _commands as commands
from hydra.client import _render as render
from hydra.client import hydractl
from hydra.client._types import ApplyResult, LogChunk, TaskDetails
from hydra.domain import (
    After,
    Attempt,
    AttemptState,
    AuditEntry,
    Cron,
    FileCheck,
    Interval,
    Retry,
    Run,
    RunState,
    TaskSpec,
    TaskVersion,
)
from hydra.domain import Task as RegisteredTask
from hydra.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldProblem,
    HydraError,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from hydra.spec import load_task_documents

T0 = datetime(2025, 1, 31, 2, 30, tzinfo=UTC)
RUN_ID = "0b9c3c55-8a0e-4d7e-9a43-5f1c2d7e8a10"

RUN = Run(
    id=RUN_ID,
    task="billing.export",
    task_version=3,
    occurrence=T0,
    state=RunState.FAILED,
    cause="manual",
    created_at=T0,
    not_before=T0,
    params={"region": "au"},
    started_at=T0 + timedelta(seconds=1),
    finished_at=T0 + timedelta(minutes=3, seconds=5),
    attempts_used=2,
    max_attempts=2,
    reason="attempt 2 timed out",
    attempts=(
        Attempt(
            number=1,
            state=AttemptState.FAILED,
            agent="agent-a",
            argv=("python", "export.py", "--day", "2025-01-31"),
            lease_token=7,
            started_at=T0 + timedelta(seconds=1),
            finished_at=T0 + timedelta(seconds=2.2),
            exit_code=1,
            message="exit code 1",
        ),
        Attempt(
            number=2,
            state=AttemptState.TIMED_OUT,
            agent="agent-b",
            argv=("python", "export.py", "--day", "2025-01-31"),
            lease_token=9,
            started_at=T0 + timedelta(seconds=31),
            finished_at=T0 + timedelta(minutes=3, seconds=5),
            signal=9,
            message="timed out after 2m",
        ),
    ),
    outputs_json='{"rows": 12}',
)


@pytest.fixture
def sydney(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Local time is Australia/Sydney (UTC+11 in January)."""
    monkeypatch.setenv("TZ", "Australia/Sydney")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


class FakeClient:
    """Stands in for hydra.client.Client; records calls, returns or raises as told."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.error: BaseException | None = None
        self.run = RUN
        self.chunks: list[LogChunk] = []

    def __enter__(self) -> FakeClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def _record(self, name: str, *args: Any, **kwargs: Any) -> None:
        self.calls.append((name, args, kwargs))
        if self.error is not None:
            raise self.error

    def get_run(self, run_id: str) -> Run:
        self._record("get_run", run_id)
        return self.run

    def list_runs(self, **kwargs: Any) -> list[Run]:
        self._record("list_runs", **kwargs)
        return [self.run]

    def trigger(self, task: str, **kwargs: Any) -> tuple[Run, bool]:
        self._record("trigger", task, **kwargs)
        return self.run, True

    def wait(self, run_id: str, timeout: float | None = None) -> Run:
        self._record("wait", run_id, timeout=timeout)
        return self.run

    def watch(self, **kwargs: Any) -> Iterator[Run]:
        self._record("watch", **kwargs)
        yield self.run

    def tail_logs(self, run_id: str, **kwargs: Any) -> Iterator[LogChunk]:
        self._record("tail_logs", run_id, **kwargs)
        yield from self.chunks


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeClient:
    client = FakeClient()
    monkeypatch.setattr(hydractl, "Client", lambda *args, **kwargs: client)
    return client


def parse(command: str) -> dict[str, Any]:
    return vars(hydractl.build_parser().parse_args(shlex.split(command)))


# --- parsing ------------------------------------------------------------------

LOCAL_MIDNIGHT = datetime(2025, 1, 1).astimezone()


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (
            "apply -f a.yaml -f - --dry-run",
            {"handler": commands.apply, "filename": ["a.yaml", "-"], "dry_run": True},
        ),
        ("tasks list --prefix billing.", {"handler": commands.tasks_list, "prefix": "billing."}),
        (
            "tasks get billing.export --versions",
            {"handler": commands.tasks_get, "name": "billing.export", "versions": True},
        ),
        ("tasks pause a", {"handler": commands.tasks_pause, "name": "a"}),
        ("tasks resume a", {"handler": commands.tasks_resume, "name": "a"}),
        ("tasks delete a --force", {"handler": commands.tasks_delete, "name": "a", "force": True}),
        (
            "run billing.export --param region=au --param q=a=b --idempotency-key k1"
            " --wait --timeout 90s",
            {
                "handler": commands.run,
                "task": "billing.export",
                "param": [("region", "au"), ("q", "a=b")],
                "idempotency_key": "k1",
                "wait": True,
                "timeout": 90.0,
            },
        ),
        ("run t --timeout 2.5", {"param": [], "wait": False, "timeout": 2.5}),
        (
            "runs list --task t --state failed --state QUEUED --limit 10 --watch",
            {
                "handler": commands.runs_list,
                "task": "t",
                "state": [RunState.FAILED, RunState.QUEUED],
                "limit": 10,
                "watch": True,
            },
        ),
        ("runs list", {"task": "", "state": [], "limit": 50, "watch": False}),
        ("runs get R", {"handler": commands.runs_get, "run": "R"}),
        ("logs R -f --attempt 2", {"handler": commands.logs, "follow": True, "attempt": 2}),
        ("logs R", {"follow": False, "attempt": 0}),
        ("retry R", {"handler": commands.retry, "run": "R"}),
        ("cancel R --reason 'wrong day'", {"handler": commands.cancel, "reason": "wrong day"}),
        (
            "backfill t --from 2025-01-01 --to 2025-01-02T00:00Z --dry-run",
            {
                "handler": commands.backfill,
                "task": "t",
                "start": LOCAL_MIDNIGHT,
                "end": datetime(2025, 1, 2, tzinfo=UTC),
                "dry_run": True,
            },
        ),
        ("agents list --all", {"handler": commands.agents_list, "all": True}),
        ("agents drain a-1", {"handler": commands.agents_drain, "agent_id": "a-1"}),
        (
            "audit list --since 2025-01-31T02:30Z --who ci --task t --limit 5",
            {
                "handler": commands.audit_list,
                "since": T0,
                "who": "ci",
                "task": "t",
                "limit": 5,
            },
        ),
        ("audit list", {"since": None, "who": "", "task": "", "limit": 100}),
        (
            "why billing.export --occurrence 2025-01-31T02:30Z",
            {"handler": commands.why, "task": "billing.export", "occurrence": T0},
        ),
    ],
)
def test_every_command_parses(command: str, expected: dict[str, Any]) -> None:
    args = parse(command)
    assert {key: args[key] for key in expected} == expected
    assert args["output"] == "table"


def test_global_options_go_before_or_after_the_command() -> None:
    before = parse("-o json --coordinator a:1,b:2 --coordinator c:3 --token s runs get R")
    after = parse("runs get R -o json --coordinator a:1,b:2 --coordinator c:3 --token s")
    for args in (before, after):
        assert args["output"] == "json"
        assert args["token"] == "s"
        assert hydractl._targets(args["coordinator"]) == ["a:1", "b:2", "c:3"]
    assert parse("runs get R")["coordinator"] is None


@pytest.mark.parametrize(
    ("command", "message"),
    [
        ("run t --param region", "argument --param: expected KEY=VALUE, got 'region'"),
        ("backfill t --from yesterday --to 2025-01-01", "argument --from: not a time: 'yesterday'"),
        ("backfill t --from 2025-01-01", "the following arguments are required: --to"),
        ("runs list --state bogus", "argument --state: unknown state 'bogus'"),
        ("runs list --limit 0", "argument --limit: expected a positive whole number"),
        ("run t --wait --timeout soon", "argument --timeout: not a duration: 'soon'"),
        ("audit list --since soon", "argument --since: not a time or a duration: 'soon'"),
        ("audit list --limit 0", "argument --limit: expected a positive whole number"),
        ("why t --occurrence soon", "argument --occurrence: not a time: 'soon'"),
        ("why t", "the following arguments are required: --occurrence"),
        ("-o yaml tasks list", "argument -o/--output: invalid choice: 'yaml'"),
        ("tasks", "the following arguments are required: COMMAND"),
        ("", "the following arguments are required: COMMAND"),
    ],
)
def test_bad_arguments_exit_2_with_a_clear_message(
    command: str, message: str, fake: FakeClient, capsys: pytest.CaptureFixture[str]
) -> None:
    assert hydractl.main(shlex.split(command)) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
    assert fake.calls == []


def test_audit_since_a_duration_is_that_long_before_now() -> None:
    since = parse("audit list --since 90m")["since"]
    expected = datetime.now(UTC) - timedelta(minutes=90)
    assert abs((since - expected).total_seconds()) < 5


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert hydractl.main(["--help"]) == 0
    assert "backfill" in capsys.readouterr().out


# --- rendering ----------------------------------------------------------------


def test_run_json_shape() -> None:
    assert render.run_json(RUN) == {
        "id": RUN_ID,
        "task": "billing.export",
        "task_version": 3,
        "occurrence": "2025-01-31T02:30:00Z",
        "state": "FAILED",
        "cause": "manual",
        "params": {"region": "au"},
        "created_at": "2025-01-31T02:30:00Z",
        "started_at": "2025-01-31T02:30:01Z",
        "finished_at": "2025-01-31T02:33:05Z",
        "attempts_used": 2,
        "max_attempts": 2,
        "reason": "attempt 2 timed out",
        "agent": "",
        "outputs": {"rows": 12},
        "attempts": [
            {
                "number": 1,
                "state": "FAILED",
                "agent": "agent-a",
                "argv": ["python", "export.py", "--day", "2025-01-31"],
                "exit_code": 1,
                "signal": None,
                "started_at": "2025-01-31T02:30:01Z",
                "finished_at": "2025-01-31T02:30:02.200000Z",
                "message": "exit code 1",
            },
            {
                "number": 2,
                "state": "TIMED_OUT",
                "agent": "agent-b",
                "argv": ["python", "export.py", "--day", "2025-01-31"],
                "exit_code": None,
                "signal": 9,
                "started_at": "2025-01-31T02:30:31Z",
                "finished_at": "2025-01-31T02:33:05Z",
                "message": "timed out after 2m",
            },
        ],
        "precondition_checks": 0,
        "precondition_verdicts": [],
    }


def test_run_json_without_outputs_or_times() -> None:
    queued = replace(RUN, state=RunState.QUEUED, started_at=None, finished_at=None)
    data = render.run_json(replace(queued, attempts=(), outputs_json=""))
    assert data["outputs"] is None
    assert data["started_at"] is None
    assert data["attempts"] == []


def test_audit_json_shape() -> None:
    entry = AuditEntry(
        id=7,
        at=T0,
        who="ci",
        role="operator",
        action="RunService/Trigger",
        task="billing.export",
        run_id=RUN_ID,
        peer="ipv4:127.0.0.1:5000",
        detail=f"run {RUN_ID}",
    )
    assert render.audit_json(entry) == {
        "id": 7,
        "at": "2025-01-31T02:30:00Z",
        "who": "ci",
        "role": "operator",
        "action": "RunService/Trigger",
        "task": "billing.export",
        "run_id": RUN_ID,
        "peer": "ipv4:127.0.0.1:5000",
        "outcome": "OK",
        "detail": f"run {RUN_ID}",
    }
    table = render.audit_table([entry, replace(entry, task=None, run_id=None, outcome="NOT_FOUND")])
    header, first, second = table.splitlines()
    assert header.split() == [
        "TIME", "WHO", "ROLE", "ACTION", "TASK", "RUN", "PEER", "OUTCOME", "DETAIL"
    ]  # fmt: skip
    assert "RunService/Trigger  billing.export" in first
    assert "NOT_FOUND" in second and " - " in second


def test_runs_get_json(fake: FakeClient, capsys: pytest.CaptureFixture[str]) -> None:
    assert hydractl.main(["runs", "get", RUN_ID, "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == render.run_json(RUN)
    assert fake.calls == [("get_run", (RUN_ID,), {})]


def test_runs_list_json_is_an_array(fake: FakeClient, capsys: pytest.CaptureFixture[str]) -> None:
    assert hydractl.main(["-o", "json", "runs", "list", "--state", "failed"]) == 0
    assert json.loads(capsys.readouterr().out) == [render.run_json(RUN)]
    assert fake.calls[0][2] == {
        "task": "",
        "states": [RunState.FAILED],
        "limit": 50,
        "occurrence_from": None,
        "occurrence_to": None,
    }


def test_run_detail_table(sydney: None) -> None:
    text = render.run_detail(RUN)
    fields, attempts, outputs = text.split("\n\n")
    assert fields.splitlines()[:4] == [
        f"id:         {RUN_ID}",
        "task:       billing.export v3",
        "state:      FAILED",
        "reason:     attempt 2 timed out",
    ]
    assert "occurrence: 2025-01-31 13:30:00" in fields  # local time, to the second
    assert "duration:   3m04s" in fields
    assert "attempts:   2/2" in fields
    header, first, second = attempts.splitlines()
    assert header.split() == [
        "#", "STATE", "AGENT", "EXIT", "STARTED", "FINISHED", "DURATION", "ARGV", "MESSAGE",
    ]  # fmt: skip
    for column in ("STATE", "AGENT", "EXIT", "STARTED", "DURATION", "ARGV", "MESSAGE"):
        position = header.index(column)
        assert first[position - 1] == " " and second[position - 1] == " "
        assert first[position] != " " and second[position] != " "
    assert first.startswith("1  FAILED     agent-a  1 ")
    assert "2025-01-31 13:30:01" in first and "1.2s" in first
    assert "signal 9" in second and "2m34s" in second
    assert "python export.py --day 2025-01-31" in second
    assert second.endswith("timed out after 2m")
    assert outputs == 'outputs:\n{\n  "rows": 12\n}'


def test_runs_table_prints_full_ids_aligned(sydney: None) -> None:
    other = replace(RUN, id="short", task="x", state=RunState.SUCCEEDED)
    lines = render.runs_table([RUN, other]).splitlines()
    assert lines[0].split() == [
        "ID", "TASK", "STATE", "OCCURRENCE", "ATTEMPTS", "CAUSE", "DURATION",
    ]  # fmt: skip
    assert lines[1].startswith(RUN_ID + "  billing.export")
    assert lines[2].index("x") == lines[1].index("billing.export")
    assert lines[1].index("FAILED") == lines[2].index("SUCCEEDED") == lines[0].index("STATE")
    assert all(line == line.rstrip() for line in lines)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0071, "7ms"),
        (0.4, "0.4s"),
        (1.24, "1.2s"),
        (59.9, "59.9s"),
        (59.97, "1m00s"),
        (184, "3m04s"),
        (3600 + 5 * 60, "1h05m"),
        (2 * 86400 + 3 * 3600, "2d03h"),
    ],
)
def test_human_durations(seconds: float, text: str) -> None:
    assert render.human_duration(timedelta(seconds=seconds)) == text


def test_run_summary_names_the_failure() -> None:
    assert render.run_summary(RUN) == (
        f"run {RUN_ID} FAILED in 3m04s after 2/2 attempts: exit signal 9, attempt 2 timed out"
    )


def test_logs_write_raw_bytes_by_stream(
    fake: FakeClient, capfdbinary: pytest.CaptureFixture[bytes]
) -> None:
    fake.chunks = [
        LogChunk(attempt=1, stream="stdout", data=b"rows: 12\n"),
        LogChunk(attempt=1, stream="stderr", data=b"\xffwarn\n"),
        LogChunk(attempt=1, stream="stdout", data=b"done\n"),
    ]
    assert hydractl.main(["logs", RUN_ID, "-f", "--attempt", "1"]) == 0
    captured = capfdbinary.readouterr()
    assert captured.out == b"rows: 12\ndone\n"
    assert captured.err == b"\xffwarn\n"
    assert fake.calls == [("tail_logs", (RUN_ID,), {"attempt": 1, "follow": True})]


def test_logs_show_where_output_was_dropped_on_a_line_of_its_own(
    fake: FakeClient, capfdbinary: pytest.CaptureFixture[bytes]
) -> None:
    fake.chunks = [
        LogChunk(attempt=1, stream="stdout", data=b"1\n2\n3"),
        LogChunk(attempt=1, stream="stderr", data=b"warn\n"),
        LogChunk(attempt=1, stream="stdout", data=b"", dropped_bytes=12_345_678),
        LogChunk(attempt=1, stream="stdout", data=b"99\nEND\n"),
    ]
    assert hydractl.main(["logs", RUN_ID]) == 0
    captured = capfdbinary.readouterr()
    assert captured.out == b"1\n2\n3\n... [hydra: 12,345,678 bytes dropped] ...\n99\nEND\n"
    assert captured.err == b"warn\n"


# --- errors and exit codes ----------------------------------------------------


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (InvalidArgument("params.region: must not be empty"), 2),
        (NotFound("run 'x' not found"), 3),
        (FailedPrecondition("run x already finished"), 4),
        (AlreadyExists("task exists"), 4),
        (Unavailable("cannot reach coordinator at 127.0.0.1:7070: connection failed"), 5),
        (HydraError("PERMISSION_DENIED: bad token"), 1),
    ],
)
def test_errors_map_to_exit_codes(
    error: HydraError, code: int, fake: FakeClient, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.error = error
    assert hydractl.main(["runs", "get", "x"]) == code
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"hydractl: error: {error.message}\n")
    assert "Traceback" not in captured.err
    assert ("hydra dev" in captured.err) == isinstance(error, Unavailable)


def test_many_problems_print_one_per_line(
    fake: FakeClient, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.error = InvalidArgument(
        [FieldProblem(path="name", message="is required"), FieldProblem(path="x", message="bad")]
    )
    assert hydractl.main(["runs", "get", "x"]) == 2
    assert capsys.readouterr().err == (
        "hydractl: error: 2 problems:\n  name: is required\n  x: bad\n"
    )


def test_ctrl_c_exits_130_quietly(fake: FakeClient, capsys: pytest.CaptureFixture[str]) -> None:
    fake.error = KeyboardInterrupt()
    assert hydractl.main(["runs", "list", "--watch"]) == 130
    assert capsys.readouterr() == ("", "")


def test_wait_timeout_exits_124(fake: FakeClient, capsys: pytest.CaptureFixture[str]) -> None:
    def wait(run_id: str, timeout: float | None = None) -> Run:
        raise TimeoutError(f"run {run_id} is not finished yet")

    fake.wait = wait  # type: ignore[method-assign]
    assert hydractl.main(["run", "t", "--wait", "--timeout", "1"]) == 124
    captured = capsys.readouterr()
    assert captured.out == f"{RUN_ID}\n"
    assert captured.err == f"hydractl: error: run {RUN_ID} is not finished yet\n"


@pytest.mark.parametrize(("state", "code"), [(RunState.SUCCEEDED, 0), (RunState.FAILED, 1)])
def test_run_wait_exit_code_tells_the_outcome(
    state: RunState, code: int, fake: FakeClient, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.run = replace(RUN, state=state)
    assert hydractl.main(["run", "t", "--param", "a=1", "--wait"]) == code
    assert capsys.readouterr().out == f"{RUN_ID}\n"
    assert fake.calls[0] == (
        "trigger",
        ("t",),
        {"params": {"a": "1"}, "idempotency_key": None, "occurrence": None},
    )


def test_run_for_a_given_occurrence(fake: FakeClient) -> None:
    assert hydractl.main(["run", "t", "--occurrence", "2026-11-27T02:00:00Z"]) == 0
    assert fake.calls[0][2]["occurrence"] == datetime(2026, 11, 27, 2, tzinfo=UTC)


# --- apply --------------------------------------------------------------------

INVALID_TASKS = """\
name: Billing Export
command: []
timeout: soon
---
name: billing.ingest
command: [ingest]
triggers:
  - cron: "99 * * *"
"""


@pytest.fixture
def no_channels(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records every gRPC channel opened, to show that none was."""
    opened: list[str] = []
    real = grpc.insecure_channel

    def insecure_channel(target: str, *args: Any, **kwargs: Any) -> grpc.Channel:
        opened.append(target)
        return real(target, *args, **kwargs)

    monkeypatch.setattr(grpc, "insecure_channel", insecure_channel)
    return opened


def test_apply_invalid_file_lists_every_problem_and_sends_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_channels: list[str]
) -> None:
    path = tmp_path / "tasks.yaml"
    path.write_text(INVALID_TASKS)
    closed = f"127.0.0.1:{free_port()}"
    assert hydractl.main(["--coordinator", closed, "apply", "-f", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("hydractl: error: ")
    for field in ("tasks[0] (Billing Export).name", "tasks[0] (Billing Export).command"):
        assert f"  {path}: {field}: " in captured.err
    assert f"  {path}: tasks[0] (Billing Export).timeout: invalid duration 'soon'" in captured.err
    assert f"  {path}: tasks[1] (billing.ingest).triggers[0].cron: " in captured.err
    assert "Traceback" not in captured.err
    assert "cannot reach" not in captured.err
    assert no_channels == []


def test_apply_is_all_or_nothing_across_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_channels: list[str]
) -> None:
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text("name: a\ncommand: [echo, hi]\n")
    bad.write_text("name: b\ncommand: [echo, hi]\nretry: {max_attempts: 0}\n")
    closed = f"127.0.0.1:{free_port()}"
    assert hydractl.main(["--coordinator", closed, "apply", "-f", str(good), "-f", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: tasks[0] (b).retry.max_attempts: " in err
    assert no_channels == []


def test_apply_unreadable_file_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_channels: list[str]
) -> None:
    missing = tmp_path / "missing.yaml"
    assert hydractl.main(["apply", "-f", str(missing)]) == 2
    assert capsys.readouterr().err == (
        f"hydractl: error: cannot read {missing}: No such file or directory\n"
    )
    assert no_channels == []


def test_apply_valid_file_to_a_closed_port_names_the_address(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "a.yaml"
    path.write_text("name: a\ncommand: [echo, hi]\n")
    closed = f"127.0.0.1:{free_port()}"
    assert hydractl.main(["--coordinator", closed, "apply", "-f", str(path)]) == 5
    err = capsys.readouterr().err
    assert err.startswith(f"hydractl: error: cannot reach coordinator at {closed}: ")
    assert "is `hydra dev` running?" in err
    assert "Traceback" not in err


def test_timeout_without_wait_is_a_usage_error(
    fake: FakeClient, capsys: pytest.CaptureFixture[str]
) -> None:
    assert hydractl.main(["run", "t", "--timeout", "5"]) == 2
    assert capsys.readouterr().err == "hydractl: error: --timeout: only applies with --wait\n"
    assert fake.calls == []


# --- tasks --------------------------------------------------------------------

SPEC = TaskSpec(
    name="billing.export",
    command=("python", "export.py", "--day", "{{ ds }}"),
    params={"region": "au"},
    timeout=timedelta(minutes=30),
    retry=Retry(max_attempts=3),
    triggers=(
        Cron(expression="30 2 * * *", timezone="Australia/Sydney"),
        Interval(every=timedelta(minutes=5)),
        After(tasks=("billing.ingest", "billing.fx")),
    ),
    preconditions=(FileCheck(path="/data/{{ ds }}/_READY"),),
)
REGISTERED = RegisteredTask(
    name=SPEC.name, version=2, paused=True, spec=SPEC, created_at=T0, updated_at=T0,
    next_fire_at=T0 + timedelta(days=1),
)  # fmt: skip


def test_task_detail_is_yaml_that_apply_takes_back(sydney: None) -> None:
    version = TaskVersion(version=1, spec=replace(SPEC, params={}), created_at=T0)
    text = render.task_detail(TaskDetails(REGISTERED, [version]))
    comments = [line for line in text.splitlines() if line.startswith("#")]
    assert comments[0] == "# billing.export v2, paused, next fire 2025-02-01 13:30:00"
    assert "# 1        2025-01-31 13:30:00" in comments
    assert text.splitlines()[len(comments)] == "name: billing.export"
    assert load_task_documents(text, "<tasks get>") == [SPEC]


def test_tasks_table_summarises_triggers(sydney: None) -> None:
    header, row = render.tasks_table([REGISTERED]).splitlines()
    assert header.split() == ["NAME", "VERSION", "PAUSED", "TRIGGERS", "NEXT", "FIRE"]
    assert row.startswith("billing.export  2        yes     cron(30 2 * * * Australia/Sydney), ")
    assert "every 5m, after billing.ingest,billing.fx" in row
    assert row.endswith("2025-02-01 13:30:00")


@pytest.mark.parametrize(
    ("changed", "previous", "line"),
    [
        (True, 0, "created billing.export v2"),
        (True, 1, "updated billing.export v1 → v2"),
        (False, 2, "unchanged billing.export v2"),
    ],
)
def test_apply_lines(changed: bool, previous: int, line: str) -> None:
    result = ApplyResult(task=REGISTERED, changed=changed, previous_version=previous)
    assert render.apply_line(result) == line
    assert render.apply_line(result, dry_run=True) == line + " (dry run)"


def test_tls_options_before_or_after_the_command() -> None:
    args = hydractl.build_parser().parse_args(
        ["--tls-ca", "ca.pem", "tasks", "list", "--tls-cert", "me.pem", "--tls-key", "me.key"]
    )
    assert args.tls_ca == Path("ca.pem") and args.tls_cert == Path("me.pem")
    assert args.tls_key == Path("me.key") and args.tls is False and args.context is None
    args = hydractl.build_parser().parse_args(["tasks", "list", "--tls", "--context", "prod"])
    assert args.tls is True and args.context == "prod" and args.tls_ca is None


def test_a_client_certificate_without_its_key_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert hydractl.main(["tasks", "list", "--tls-cert", "me.pem"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hydractl: error: --tls-key: a client certificate needs both")
