"""Task specs: durations, parsing, validation, the canonical form, YAML files."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import textwrap
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from hydra.domain import (
    After,
    At,
    Catchup,
    CommandCheck,
    Concurrency,
    Cron,
    FileCheck,
    HttpCheck,
    Interval,
    OnTimeout,
    Overlap,
    Retention,
    Retry,
    TaskSpec,
    TcpCheck,
)
from hydra.errors import InvalidArgument
from hydra.spec import (
    format_duration,
    load_task_documents,
    parse_duration,
    retention_from_text,
    task_from_dict,
    task_to_dict,
    validate_task,
)

SPEC_EXAMPLE = """\
name: billing.export            # [a-z0-9][a-z0-9._-]{0,127}
command: ["python", "export.py", "--day", "{{ ds }}", "--region", "{{ params.region }}"]
env: {EXPORT_DIR: "/data/{{ ds }}"}
params: {region: au}            # defaults; manual runs may override
workdir: /srv/billing
timeout: 30m                    # per attempt: SIGTERM, grace, then SIGKILL to the group
retry: {max_attempts: 3, backoff: 30s, max_backoff: 10m, multiplier: 2}
triggers:
  - cron: "30 2 * * *"          # 5 fields; 6 fields = seconds first
    timezone: Australia/Sydney
  - after: [billing.ingest]     # same occurrence; all listed must have succeeded
preconditions:
  - file: "/data/{{ ds }}/_READY"
  - http: "http://warehouse:8080/health"
poke_interval: 60s              # re-check "not ready" after this
precondition_timeout: 6h        # then on_timeout: fail | skip
selector: {pool: billing}       # agent labels that must all match
concurrency: {max_active_runs: 1, overlap: queue}   # queue | skip | replace
catchup: latest                 # none | latest | all (bounded by max_catchup)
"""

SYDNEY = ZoneInfo("Australia/Sydney")

RICH_SPECS = [
    TaskSpec(name="minimal", command=("true",)),
    TaskSpec(
        name="every.field_set-1",
        description="Exports billing data.\nTwo lines, ünïcode.",
        command=("set -e; ./run.sh {{ ds }}",),
        shell=True,
        env={"A": "1", "_B": "{{ ts }}"},
        params={"region": "au", "empty": ""},
        workdir="/srv/x",
        timeout=timedelta(hours=1, minutes=30),
        retry=Retry(
            max_attempts=5,
            backoff=timedelta(microseconds=1500),
            max_backoff=timedelta(days=2, seconds=1),
            multiplier=1.5,
        ),
        triggers=(
            Cron(expression="*/15 0 2 * * MON-FRI", timezone="Australia/Sydney"),
            Cron(expression="@hourly"),
            Interval(every=timedelta(minutes=10), anchor=datetime(2025, 1, 1, 9, tzinfo=SYDNEY)),
            Interval(every=timedelta(seconds=1)),
            At(at=datetime(2030, 6, 1, 12, 0, 0, 123456, tzinfo=UTC)),
            After(tasks=("billing.ingest", "billing.fx")),
        ),
        preconditions=(
            CommandCheck(argv=("test", "-d", "/data"), timeout=timedelta(seconds=3)),
            FileCheck(path="/data/{{ ds }}/_READY", min_age=timedelta(minutes=5)),
            FileCheck(path="/x", min_age=timedelta(0)),
            HttpCheck(url="https://warehouse:8443/health?deep=1"),
            TcpCheck(host="::1", port=5432),
            TcpCheck(host="db.internal", port=1, timeout=timedelta(milliseconds=250)),
        ),
        poke_interval=timedelta(minutes=5),
        precondition_timeout=timedelta(hours=6),
        on_timeout=OnTimeout.SKIP,
        selector={"pool": "billing", "kubernetes.io/arch": "amd64"},
        concurrency=Concurrency(max_active_runs=3, overlap=Overlap.REPLACE),
        catchup=Catchup.ALL,
        max_catchup=500,
        starting_deadline=timedelta(hours=1),
        retention=Retention(
            max_age=timedelta(days=30), keep_last=0, output_max_age=timedelta(days=7)
        ),
    ),
    TaskSpec(
        name="0",
        command=("python", "-c", "print('x')"),
        triggers=(At(at=datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=-5)))),),
        concurrency=Concurrency(overlap=Overlap.SKIP),
        catchup=Catchup.NONE,
    ),
]


def valid(**fields: Any) -> dict[str, Any]:
    """A valid task dict, with some fields replaced."""
    return {"name": "t", "command": ["echo", "hi"], **fields}


def problems(data: Any, path: str = "") -> dict[str, str]:
    """The problems task_from_dict reports, as {path: message}; it must report some."""
    with pytest.raises(InvalidArgument) as info:
        task_from_dict(data, path)
    found = {problem.path: problem.message for problem in info.value.problems}
    assert len(found) == len(info.value.problems), "one problem per path"
    return found


def wrong(value: object) -> Any:
    """``value``, untyped: what an SDK user without a type checker may pass."""
    return value


def typed_problems(spec: TaskSpec, path: str = "") -> dict[str, str]:
    with pytest.raises(InvalidArgument) as info:
        validate_task(spec, path)
    return {problem.path: problem.message for problem in info.value.problems}


# --- durations ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("500ms", timedelta(milliseconds=500)),
        ("30s", timedelta(seconds=30)),
        ("10m", timedelta(minutes=10)),
        ("6h", timedelta(hours=6)),
        ("2d", timedelta(days=2)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1d2h3m4s5ms6us", timedelta(days=1, hours=2, minutes=3, seconds=4, microseconds=5006)),
        ("1.5h", timedelta(minutes=90)),
        ("0s", timedelta(0)),
        (" 10m ", timedelta(minutes=10)),
        ("45", timedelta(seconds=45)),
        (30, timedelta(seconds=30)),
        (1.5, timedelta(seconds=1.5)),
        (0, timedelta(0)),
    ],
)
def test_parse_duration(text: str | int | float, expected: timedelta) -> None:
    assert parse_duration(text, "timeout") == expected


@pytest.mark.parametrize(
    "text",
    ["", "abc", "10x", "1h 30m", "-5s", "h", "1.h", ".5s", "1hh", "99999999999d", True, None, []],
)
def test_parse_duration_refuses(text: Any) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_duration(text, "retry.backoff")
    assert [p.path for p in info.value.problems] == ["retry.backoff"]


@pytest.mark.parametrize("number", [float("nan"), float("inf")])
def test_parse_duration_refuses_non_finite(number: float) -> None:
    with pytest.raises(InvalidArgument, match="invalid duration"):
        parse_duration(number, "timeout")


@pytest.mark.parametrize(
    ("duration", "text"),
    [
        (timedelta(0), "0s"),
        (timedelta(hours=1, minutes=30), "1h30m"),
        (timedelta(milliseconds=500), "500ms"),
        (timedelta(days=2, seconds=1), "2d1s"),
        (timedelta(microseconds=1500), "1ms500us"),
        (timedelta(seconds=60), "1m"),
        (timedelta(seconds=-30), "-30s"),
    ],
)
def test_format_duration(duration: timedelta, text: str) -> None:
    assert format_duration(duration) == text


@pytest.mark.parametrize(
    "duration",
    [
        timedelta(0),
        timedelta(microseconds=1),
        timedelta(days=36500),
        timedelta(hours=25, microseconds=7),
    ],
)
def test_format_then_parse_is_identity(duration: timedelta) -> None:
    assert parse_duration(format_duration(duration), "x") == duration


# --- the example of docs/interfaces.md -----------------------------------------------------------


def test_design_example_parses() -> None:
    [spec] = load_task_documents(SPEC_EXAMPLE)
    assert spec == TaskSpec(
        name="billing.export",
        command=("python", "export.py", "--day", "{{ ds }}", "--region", "{{ params.region }}"),
        env={"EXPORT_DIR": "/data/{{ ds }}"},
        params={"region": "au"},
        workdir="/srv/billing",
        timeout=timedelta(minutes=30),
        retry=Retry(
            max_attempts=3,
            backoff=timedelta(seconds=30),
            max_backoff=timedelta(minutes=10),
            multiplier=2.0,
        ),
        triggers=(
            Cron(expression="30 2 * * *", timezone="Australia/Sydney"),
            After(tasks=("billing.ingest",)),
        ),
        preconditions=(
            FileCheck(path="/data/{{ ds }}/_READY"),
            HttpCheck(url="http://warehouse:8080/health"),
        ),
        poke_interval=timedelta(seconds=60),
        precondition_timeout=timedelta(hours=6),
        selector={"pool": "billing"},
        concurrency=Concurrency(max_active_runs=1, overlap=Overlap.QUEUE),
        catchup=Catchup.LATEST,
    )


def test_minimal_task_gets_defaults() -> None:
    assert task_from_dict(valid()) == TaskSpec(name="t", command=("echo", "hi"))


def test_null_fields_take_their_defaults() -> None:
    data = valid(env=None, retry=None, timeout=None, triggers=None, description=None)
    assert task_from_dict(data) == TaskSpec(name="t", command=("echo", "hi"))


# --- parsing ------------------------------------------------------------------------


def test_scalar_map_values_become_strings() -> None:
    spec = task_from_dict(valid(params={"n": 1, "f": 1.5, "yes": True, "no": False, "s": "x"}))
    assert spec.params == {"n": "1", "f": "1.5", "yes": "true", "no": "false", "s": "x"}


def test_tcp_forms() -> None:
    spec = task_from_dict(
        valid(preconditions=[{"tcp": "db:5432"}, {"tcp": "[::1]:6379", "timeout": "2s"}])
    )
    assert spec.preconditions == (
        TcpCheck(host="db", port=5432),
        TcpCheck(host="::1", port=6379, timeout=timedelta(seconds=2)),
    )


def test_datetimes_from_text_and_objects() -> None:
    aware = datetime(2025, 1, 1, 9, tzinfo=SYDNEY)
    spec = task_from_dict(
        valid(triggers=[{"at": "2025-01-01T00:00:00Z"}, {"interval": "1h", "anchor": aware}])
    )
    assert spec.triggers == (
        At(at=datetime(2025, 1, 1, tzinfo=UTC)),
        Interval(every=timedelta(hours=1), anchor=aware),
    )


def test_enum_values_are_case_insensitive() -> None:
    spec = task_from_dict(valid(catchup="ALL", on_timeout="Skip"))
    assert (spec.catchup, spec.on_timeout) == (Catchup.ALL, OnTimeout.SKIP)


@pytest.mark.parametrize(
    "expression",
    [
        "30 2 * * *",
        "*/15 0 2 * * MON-FRI",
        "0 0 L * *",
        "0 0 1W * *",
        "0 0 * * 5#3",
        "0 0 ? jan,FEB *",
        "@hourly",
        "@daily",
        "0-59/5 * * * sun",
    ],
)
def test_cron_shapes_accepted(expression: str) -> None:
    task_from_dict(valid(triggers=[{"cron": expression}]))


# --- one rule, one path -----------------------------------------------------------

BIG = 10 * 1024 * 1024


@pytest.mark.parametrize(
    ("data", "path", "message"),
    [
        ({"command": ["x"]}, "name", "is required"),
        (valid(name=None), "name", "is required"),
        (valid(name="Billing"), "name", "is not a task name"),
        (valid(name="-x"), "name", "is not a task name"),
        (valid(name=""), "name", "is not a task name"),
        (valid(name="a" * 129), "name", "is not a task name"),
        (valid(name=5), "name", "must be a string, not an integer"),
        ({"name": "t"}, "command", "is required"),
        (valid(command=[]), "command", "must not be empty"),
        (valid(command="echo hi"), "command", "must be a list, not a string"),
        (valid(command=["", "x"]), "command[0]", "the program must not be empty"),
        (valid(command=["a", 5]), "command[1]", "must be a string, not an integer"),
        (valid(command=["a", "b\x00c"]), "command[1]", "must not contain NUL bytes"),
        (valid(command=["a", "x" * BIG]), "command[1]", f"{BIG} bytes, at most 131072"),
        (valid(command=["a", "b"], shell=True), "command", "with shell: true"),
        (valid(shell="yes"), "shell", "must be a boolean"),
        (valid(description=["x"]), "description", "must be a string"),
        (valid(workdir=3), "workdir", "must be a string"),
        (valid(env={"1A": "x"}), "env.1A", "is not a variable name"),
        (valid(env={"A-B": "x"}), "env.A-B", "is not a variable name"),
        (valid(env={"A": "x\x00"}), "env.A", "must not contain NUL bytes"),
        (valid(env={"A": None}), "env.A", "must be a string, number or boolean, not null"),
        (valid(env=["A=1"]), "env", "must be a mapping"),
        (valid(params={"x": [1]}), "params.x", "must be a string, number or boolean"),
        (valid(params={"": "x"}), "params", "keys must not be empty"),
        (valid(timeout="0s"), "timeout", "must be positive, got 0s"),
        (valid(timeout="soon"), "timeout", "invalid duration 'soon'"),
        (valid(timeout="36501d"), "timeout", "must be at most 36500d"),
        (valid(retry={"max_attempts": 0}), "retry.max_attempts", "between 1 and 100, got 0"),
        (valid(retry={"max_attempts": 101}), "retry.max_attempts", "between 1 and 100, got 101"),
        (valid(retry={"max_attempts": "3"}), "retry.max_attempts", "must be an integer"),
        (valid(retry={"max_attempts": True}), "retry.max_attempts", "must be an integer"),
        (valid(retry={"backoff": -1}), "retry.backoff", "must not be negative"),
        (
            valid(retry={"backoff": "1m", "max_backoff": "10s"}),
            "retry.max_backoff",
            "must be at least backoff (1m), got 10s",
        ),
        (valid(retry={"multiplier": 0.5}), "retry.multiplier", "between 1 and 1000, got 0.5"),
        (valid(retry={"multiplier": "2"}), "retry.multiplier", "must be a number"),
        (valid(retry={"max_atempts": 2}), "retry.max_atempts", "did you mean 'max_attempts'?"),
        (valid(retry=3), "retry", "must be a mapping"),
        (valid(triggers={"cron": "* * * * *"}), "triggers", "must be a list"),
        (valid(triggers=["* * * * *"]), "triggers[0]", "must be a mapping, not a string"),
        (valid(triggers=[{}]), "triggers[0]", "must have one of cron, interval, at, after"),
        (valid(triggers=[{"cron": "* * * * *", "at": "x"}]), "triggers[0]", "has cron and at"),
        (valid(triggers=[{"cron": None}]), "triggers[0].cron", "must be a string, not null"),
        (valid(triggers=[{"cron": "* * *"}]), "triggers[0].cron", "5 or 6 fields, got 3"),
        (valid(triggers=[{"cron": "* * * * * * *"}]), "triggers[0].cron", "5 or 6 fields, got 7"),
        (valid(triggers=[{"cron": "0 0 * * FUNDAY"}]), "triggers[0].cron", "is not a cron field"),
        (valid(triggers=[{"cron": "0 0 $ * *"}]), "triggers[0].cron", "is not a cron field"),
        (valid(triggers=[{"cron": ""}]), "triggers[0].cron", "must not be empty"),
        (
            valid(triggers=[{"cron": "* * * * *", "timezone": "Mars/Olympus"}]),
            "triggers[0].timezone",
            "unknown time zone 'Mars/Olympus'",
        ),
        (
            valid(triggers=[{"cron": "* * * * *", "timezone": "../etc/passwd"}]),
            "triggers[0].timezone",
            "unknown time zone",
        ),
        (
            valid(triggers=[{"cron": "* * * * *", "anchor": "2025-01-01T00:00:00Z"}]),
            "triggers[0].anchor",
            "unknown field",
        ),
        (valid(triggers=[{"interval": "500ms"}]), "triggers[0].interval", "at least 1s"),
        (
            valid(triggers=[{"interval": "1h", "anchor": "2025-01-01T00:00:00"}]),
            "triggers[0].anchor",
            "must have a UTC offset",
        ),
        (valid(triggers=[{"interval": "1h", "anchor": "noon"}]), "triggers[0].anchor", "ISO 8601"),
        (valid(triggers=[{"at": datetime(2025, 1, 1)}]), "triggers[0].at", "offset"),  # noqa: DTZ001
        (valid(triggers=[{"at": date(2025, 1, 1)}]), "triggers[0].at", "ISO 8601"),
        (valid(triggers=[{"at": 1735689600}]), "triggers[0].at", "ISO 8601"),
        (valid(triggers=[{"after": []}]), "triggers[0].after", "at least one task"),
        (valid(triggers=[{"after": "up"}]), "triggers[0].after", "must be a list"),
        (valid(triggers=[{"after": ["t"]}]), "triggers[0].after[0]", "cannot come after itself"),
        (valid(triggers=[{"after": ["a", "a"]}]), "triggers[0].after[1]", "'a' is listed twice"),
        (valid(triggers=[{"after": ["a", "B"]}]), "triggers[0].after[1]", "is not a task name"),
        (valid(preconditions=[{}]), "preconditions[0]", "must have one of command, file, http"),
        (valid(preconditions=[{"command": []}]), "preconditions[0].command", "must not be empty"),
        (
            valid(preconditions=[{"command": ["", "x"]}]),
            "preconditions[0].command[0]",
            "the program must not be empty",
        ),
        (valid(preconditions=[{"command": "true"}]), "preconditions[0].command", "must be a list"),
        (valid(preconditions=[{"file": ""}]), "preconditions[0].file", "must not be empty"),
        (
            valid(preconditions=[{"file": "/x", "min_age": -5}]),
            "preconditions[0].min_age",
            "must not be negative",
        ),
        (
            valid(preconditions=[{"http": "ftp://warehouse/x"}]),
            "preconditions[0].http",
            "is not an http:// or https:// URL",
        ),
        (
            valid(preconditions=[{"http": "warehouse:8080/health"}]),
            "preconditions[0].http",
            "is not an http:// or https:// URL",
        ),
        (
            valid(preconditions=[{"http": "http://x", "min_age": "1m"}]),
            "preconditions[0].min_age",
            "unknown field",
        ),
        (valid(preconditions=[{"tcp": "db:0"}]), "preconditions[0].tcp", "between 1 and 65535"),
        (valid(preconditions=[{"tcp": "db:65536"}]), "preconditions[0].tcp", "got 65536"),
        (valid(preconditions=[{"tcp": "db"}]), "preconditions[0].tcp", "must be 'host:port'"),
        (valid(preconditions=[{"tcp": ":5432"}]), "preconditions[0].tcp", "host must not be"),
        (valid(preconditions=[{"tcp": 5432}]), "preconditions[0].tcp", "must be a 'host:port'"),
        (
            valid(preconditions=[{"file": "/x", "timeout": "0s"}]),
            "preconditions[0].timeout",
            "must be positive",
        ),
        (
            valid(preconditions=[{"tcp": "db:5432"}, {"http": "http://x", "timeout": "36500d"}]),
            "preconditions[1].timeout",
            "must be at most 10m, got 36500d",
        ),
        (valid(poke_interval="500ms"), "poke_interval", "must be at least 1s, got 500ms"),
        (valid(precondition_timeout="0s"), "precondition_timeout", "must be positive"),
        (valid(on_timeout="explode"), "on_timeout", "must be one of fail, skip"),
        (valid(selector={"pool": ""}), "selector.pool", "must not be empty"),
        (valid(selector={"": "x"}), "selector", "keys must not be empty"),
        (valid(selector={1: "x"}), "selector.1", "keys must be strings"),
        (
            valid(concurrency={"max_active_runs": 0}),
            "concurrency.max_active_runs",
            "between 1 and 1000, got 0",
        ),
        (
            valid(concurrency={"max_active_runs": 1001}),
            "concurrency.max_active_runs",
            "between 1 and 1000",
        ),
        (valid(concurrency={"overlap": "wait"}), "concurrency.overlap", "queue, skip, replace"),
        (valid(catchup="sometimes"), "catchup", "must be one of none, latest, all"),
        (valid(max_catchup=0), "max_catchup", "between 1 and 100000, got 0"),
        (valid(max_catchup=100_001), "max_catchup", "between 1 and 100000"),
        (valid(max_catchup="5"), "max_catchup", "must be an integer"),
        (valid(starting_deadline="0s"), "starting_deadline", "must be positive"),
        (valid(retention={"max_age": "0s"}), "retention.max_age", "must be positive"),
        (valid(retention={"max_age": "forever"}), "retention.max_age", "invalid duration"),
        (valid(retention={"keep_last": -1}), "retention.keep_last", "between 0 and 1000000"),
        (valid(retention={"keep_last": "9"}), "retention.keep_last", "must be an integer"),
        (valid(retention={"output_max_age": "-1d"}), "retention.output_max_age", "invalid"),
        (valid(retention={"max_ag": "1d"}), "retention.max_ag", "did you mean 'max_age'?"),
        (valid(retention="30d"), "retention", "must be a mapping"),
        (valid(comand=["x"]), "comand", "unknown field; did you mean 'command'?"),
        (valid(zzz=1), "zzz", "unknown field"),
    ],
)
def test_rule(data: dict[str, Any], path: str, message: str) -> None:
    found = problems(data)
    assert path in found, found
    assert message in found[path]
    assert len(found) == 1, found


def test_misspelt_trigger_kind() -> None:
    assert problems(valid(triggers=[{"crn": "* * * * *", "timezone": "UTC"}])) == {
        "triggers[0].crn": "unknown field; did you mean 'cron'?",
        "triggers[0]": "must have one of cron, interval, at, after",
    }


def test_ten_megabyte_argument_is_refused_with_its_path() -> None:
    with pytest.raises(InvalidArgument) as info:
        task_from_dict(valid(command=["python", "x" * BIG]))
    assert str(info.value) == "command[1]: 10485760 bytes, at most 131072"


def test_spec_strings_are_bounded_in_total() -> None:
    chunk = "x" * (100 * 1024)
    found = problems(valid(env={f"V{i}": chunk for i in range(11)}), path="spec")
    assert list(found) == ["spec"]
    assert found["spec"].endswith("bytes, at most 1048576")


def test_paths_carry_the_prefix() -> None:
    found = problems(valid(name="Bad", triggers=[{"cron": "x"}]), path="tasks[0] (Bad)")
    assert set(found) == {"tasks[0] (Bad).name", "tasks[0] (Bad).triggers[0].cron"}


def test_every_problem_is_reported_at_once() -> None:
    data = {
        "name": "Bad Name",
        "comand": ["x"],
        "command": ["a", 5, "b"],
        "shell": True,
        "timeout": "3x",
        "retry": {"max_attempts": 0, "backoff": "1m", "max_backoff": "10s"},
        "triggers": [
            {"cron": "61 * *", "timezone": "Mars/Olympus"},
            {"interval": "1h", "anchor": "2025-01-01T00:00:00"},
            {"after": ["bad name", "x", "x"]},
        ],
        "preconditions": [{"tcp": "db:0"}, {"http": "ftp://x"}],
        "env": {"1A": "x"},
        "max_catchup": 0,
    }
    assert set(problems(data)) == {
        "name",
        "comand",
        "command[1]",
        "command",
        "timeout",
        "retry.max_attempts",
        "retry.max_backoff",
        "triggers[0].cron",
        "triggers[0].timezone",
        "triggers[1].anchor",
        "triggers[2].after[0]",
        "triggers[2].after[2]",
        "preconditions[0].tcp",
        "preconditions[1].http",
        "env.1A",
        "max_catchup",
    }


def test_a_value_that_cannot_be_read_is_reported_once() -> None:
    assert problems(valid(triggers=[{"interval": "soon"}])) == {
        "triggers[0].interval": "invalid duration 'soon'; use e.g. 500ms, 30s, 10m, 6h, 2d or 1h30m"
    }


def test_unreadable_backoff_is_not_compared_with_max_backoff() -> None:
    found = problems(valid(retry={"backoff": "soon", "max_backoff": "1s"}))
    assert list(found) == ["retry.backoff"]


def test_not_a_mapping() -> None:
    assert problems(["name", "t"]) == {"": "must be a mapping, not a list"}


# --- typed specs, as the SDK builds them --------------------------------------------


def test_sdk_lists_and_dicts_are_normalized() -> None:
    env = {"A": "1"}
    spec = TaskSpec(
        name="t",
        command=wrong(["echo", "hi"]),
        env=env,
        triggers=wrong([After(tasks=wrong(["up"]))]),
        preconditions=wrong([CommandCheck(argv=wrong(["true"]))]),
    )
    env["B"] = "2"
    assert spec.command == ("echo", "hi")
    assert spec.env == {"A": "1"}
    assert type(spec.env) is dict
    assert spec.triggers == (After(tasks=("up",)),)
    assert spec.preconditions == (CommandCheck(argv=("true",)),)
    validate_task(spec)


def test_sdk_string_command_is_a_problem_not_split() -> None:
    spec = TaskSpec(name="t", command=wrong("echo hi"))
    assert wrong(spec.command) == "echo hi"
    assert typed_problems(spec) == {"command": "must be a list of strings, not a string"}


@pytest.mark.parametrize(
    ("changes", "path", "message"),
    [
        ({"timeout": 30}, "timeout", "must be a duration, not an integer"),
        ({"retry": Retry(max_attempts=True)}, "retry.max_attempts", "must be an integer"),
        ({"retry": Retry(multiplier=float("nan"))}, "retry.multiplier", "between 1 and 1000"),
        ({"retry": None}, "retry", "must be a Retry"),
        ({"env": {"A": 1}}, "env.A", "must be a string, not an integer"),
        ({"env": "A=1"}, "env", "must be a mapping of strings"),
        ({"triggers": ["* * * * *"]}, "triggers[0]", "must be a Cron, Interval, At or After"),
        ({"triggers": [At(at=datetime(2025, 1, 1))]}, "triggers[0].at", "offset"),  # noqa: DTZ001
        ({"triggers": [Cron(expression="* * * * *", timezone="")]}, "triggers[0].timezone", ""),
        (
            {"triggers": [Interval(every=timedelta(seconds=1), anchor=wrong("2025"))]},
            "triggers[0].anchor",
            "must be a date-time",
        ),
        ({"preconditions": ["true"]}, "preconditions[0]", "must be a CommandCheck"),
        (
            {"preconditions": [TcpCheck(host="db", port=wrong("5432"))]},
            "preconditions[0].tcp",
            "port",
        ),
        ({"on_timeout": "explode"}, "on_timeout", "must be one of fail, skip"),
        ({"concurrency": Concurrency(overlap=wrong("x"))}, "concurrency.overlap", "must be one of"),
        ({"command": ("echo", "\ud800")}, "command[1]", "is not valid Unicode text"),
        ({"shell": 1}, "shell", "must be a boolean"),
    ],
)
def test_typed_rule(changes: dict[str, Any], path: str, message: str) -> None:
    spec = dataclasses.replace(TaskSpec(name="t", command=("echo",)), **changes)
    found = typed_problems(spec)
    assert list(found) == [path]
    assert message in found[path]


def test_enum_fields_given_as_plain_strings_are_valid() -> None:
    spec = TaskSpec(name="t", command=("x",), on_timeout=wrong("skip"), catchup=wrong("all"))
    validate_task(spec)
    assert task_to_dict(spec)["on_timeout"] == "skip"


def test_validate_task_prefixes_paths() -> None:
    spec = TaskSpec(name="t", command=("x",), max_catchup=0)
    assert list(typed_problems(spec, "spec")) == ["spec.max_catchup"]


@pytest.mark.parametrize("spec", RICH_SPECS, ids=lambda spec: spec.name)
def test_rich_specs_are_valid(spec: TaskSpec) -> None:
    validate_task(spec)


# --- the canonical form -------------------------------------------------------------


@pytest.mark.parametrize("spec", RICH_SPECS, ids=lambda spec: spec.name)
def test_dict_round_trip(spec: TaskSpec) -> None:
    assert task_from_dict(task_to_dict(spec)) == spec


@pytest.mark.parametrize("spec", RICH_SPECS, ids=lambda spec: spec.name)
def test_dict_round_trip_through_json_and_yaml(spec: TaskSpec) -> None:
    as_json = json.loads(json.dumps(task_to_dict(spec)))
    assert task_from_dict(as_json) == spec
    assert load_task_documents(yaml.safe_dump(task_to_dict(spec))) == [spec]


def test_canonical_form_has_every_field_and_sorted_keys() -> None:
    shape = task_to_dict(TaskSpec(name="t", command=("x",), env={"B": "1", "A": "2"}))
    assert set(shape) == {field.name for field in dataclasses.fields(TaskSpec)}
    assert list(shape) == sorted(shape)
    assert list(shape["env"]) == ["A", "B"]
    assert shape["timeout"] is None
    assert shape["poke_interval"] == "1m"
    assert shape["retry"] == {
        "backoff": "30s",
        "max_attempts": 1,
        "max_backoff": "10m",
        "multiplier": 2.0,
    }


def test_canonical_form_is_the_same_for_equal_specs() -> None:
    sydney = datetime(2025, 1, 1, 11, tzinfo=SYDNEY)
    utc = datetime(2025, 1, 1, 0, tzinfo=UTC)
    first = task_to_dict(TaskSpec(name="t", command=wrong(["x"]), triggers=wrong([At(at=sydney)])))
    second = task_to_dict(TaskSpec(name="t", command=("x",), triggers=(At(at=utc),)))
    assert json.dumps(first) == json.dumps(second)
    assert first["triggers"] == [{"at": "2025-01-01T00:00:00Z"}]


def test_canonical_form_of_every_kind() -> None:
    shape = task_to_dict(RICH_SPECS[1])
    assert shape["triggers"][2] == {"anchor": "2024-12-31T22:00:00Z", "interval": "10m"}
    assert shape["triggers"][3] == {"anchor": None, "interval": "1s"}
    assert shape["preconditions"][1] == {
        "file": "/data/{{ ds }}/_READY",
        "min_age": "5m",
        "timeout": "10s",
    }
    assert shape["preconditions"][4] == {"tcp": "[::1]:5432", "timeout": "10s"}
    assert shape["retry"]["backoff"] == "1ms500us"


# --- YAML files ---------------------------------------------------------------------


def task_yaml(name: str, **extra: Any) -> str:
    return yaml.safe_dump({"name": name, "command": ["true"], **extra})


def test_several_documents() -> None:
    text = task_yaml("a") + "---\n" + task_yaml("b") + "---\n"
    assert [spec.name for spec in load_task_documents(text)] == ["a", "b"]


def test_top_level_list() -> None:
    text = "- {name: a, command: [x]}\n- {name: b, command: [y]}\n"
    assert [spec.name for spec in load_task_documents(text)] == ["a", "b"]


def test_tasks_mapping() -> None:
    text = "tasks:\n  - {name: a, command: [x]}\n  - {name: b, command: [y]}\n"
    assert [spec.name for spec in load_task_documents(text)] == ["a", "b"]


def test_forms_mix_across_documents() -> None:
    text = "tasks: [{name: a, command: [x]}]\n---\n- {name: b, command: [y]}\n---\n" + task_yaml(
        "c"
    )
    assert [spec.name for spec in load_task_documents(text)] == ["a", "b", "c"]


def test_syntax_error_names_line_and_column() -> None:
    with pytest.raises(InvalidArgument) as info:
        load_task_documents("name: a\ncommand: [x\nshell: true\n", source="tasks.yaml")
    [problem] = info.value.problems
    assert problem.path == "tasks.yaml"
    assert problem.message.startswith("invalid YAML: line 3, column 6:")


def test_duplicate_yaml_key_is_an_error() -> None:
    with pytest.raises(InvalidArgument) as info:
        load_task_documents("name: a\ncommand: [x]\nname: b\n", source="f.yaml")
    assert str(info.value) == "f.yaml: invalid YAML: line 3, column 1: duplicate key 'name'"


def test_yaml_merge_keys_still_work() -> None:
    text = "tasks:\n  - &a {name: a, command: [x]}\n  - <<: *a\n    name: b\n"
    assert [spec.name for spec in load_task_documents(text)] == ["a", "b"]


def test_duplicate_task_names() -> None:
    text = task_yaml("a") + "---\n" + task_yaml("b") + "---\n" + task_yaml("a")
    with pytest.raises(InvalidArgument) as info:
        load_task_documents(text)
    assert str(info.value) == "tasks[2] (a).name: duplicate task name; first at tasks[0] (a)"


def test_all_or_nothing_with_every_problem_of_every_task() -> None:
    text = textwrap.dedent(
        """\
        - {name: ok, command: [x]}
        - name: billing.export
          command: [x]
          triggers: [{cron: "not a cron"}]
        - {command: [x], timeout: 0s}
        """
    )
    with pytest.raises(InvalidArgument) as info:
        load_task_documents(text)
    assert {str(problem) for problem in info.value.problems} == {
        "tasks[1] (billing.export).triggers[0].cron: must have 5 or 6 fields, got 3",
        "tasks[2].name: is required",
        "tasks[2].timeout: must be positive, got 0s",
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "<input>: no tasks found"),
        ("# nothing\n---\n", "<input>: no tasks found"),
        ("42\n", "<input>: document 1: must be a task, a list of tasks, or a mapping with 'tasks'"),
        ("tasks: x\n", "tasks: must be a list of tasks, not a string"),
        ("tasks: []\nname: a\n", "name: unknown field; a document with 'tasks' has nothing else"),
        ("- 5\n", "tasks[0]: must be a mapping, not an integer"),
    ],
)
def test_file_shape_problems(text: str, expected: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        load_task_documents(text)
    assert str(info.value).startswith(expected)


# --- dependencies ----------------------------------------------------------------------


def test_shared_modules_import_no_server_dependencies() -> None:
    code = (
        "import sys, hydra.spec, hydra.wire; "
        "heavy = ('jinja2', 'croniter', 'psycopg', 'hydra.coordinator', 'hydra.agent', "
        "'hydra.client'); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy or m.startswith(heavy)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_retention_is_canonical_with_unset_fields_null() -> None:
    spec = task_from_dict({"name": "t", "command": ["x"], "retention": {"max_age": "720h"}})
    assert task_to_dict(spec)["retention"] == {
        "keep_last": None,
        "max_age": "30d",
        "output_max_age": None,
    }
    assert task_to_dict(task_from_dict({"name": "t", "command": ["x"]}))["retention"] == {
        "keep_last": None,
        "max_age": None,
        "output_max_age": None,
    }


def test_a_stored_spec_from_before_retention_has_none() -> None:
    stored = task_to_dict(task_from_dict({"name": "t", "command": ["x"]}))
    del stored["retention"]
    assert task_from_dict(stored).retention == Retention()


def test_effective_retention_takes_the_defaults_where_the_task_says_nothing() -> None:
    defaults = Retention(max_age=timedelta(days=30), keep_last=100)
    own = Retention(keep_last=5, output_max_age=timedelta(days=7))
    assert own.over(defaults) == Retention(
        max_age=timedelta(days=30), keep_last=5, output_max_age=timedelta(days=7)
    )
    assert Retention().over(Retention()) == Retention()


def test_cluster_retention_flag() -> None:
    assert retention_from_text("max_age=30d,keep_last=100, output_max_age=7d", "--retention") == (
        Retention(max_age=timedelta(days=30), keep_last=100, output_max_age=timedelta(days=7))
    )
    assert retention_from_text("", "--retention") == Retention()


@pytest.mark.parametrize(
    ("text", "path", "message"),
    [
        ("max_age=30x", "--retention.max_age", "invalid duration"),
        ("keep_last=many", "--retention.keep_last", "must be a whole number"),
        ("max_age=0s", "--retention.max_age", "must be positive"),
        ("age=1d", "--retention", "expected max_age=..."),
        ("30d", "--retention", "expected max_age=..."),
    ],
)
def test_cluster_retention_flag_problems(text: str, path: str, message: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        retention_from_text(text, "--retention")
    assert [(p.path, message in p.message) for p in caught.value.problems] == [(path, True)]
