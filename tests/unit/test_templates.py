"""Computed arguments: rendering in the sandbox, and the checks made at apply time."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pytest

from hydra.coordinator.template_checks import check_templates
from hydra.coordinator.templates import (
    RenderContext,
    RenderError,
    render_command,
    render_string,
)
from hydra.domain import (
    After,
    At,
    CommandCheck,
    Cron,
    FileCheck,
    HttpCheck,
    Interval,
    TaskSpec,
    TcpCheck,
)
from hydra.errors import HydraError, InvalidArgument

# 2026-10-03T16:00Z is 03:00 AEDT on 2026-10-04, just after Sydney's spring-forward.
OCCURRENCE = datetime(2026, 10, 3, 16, 0, tzinfo=UTC)
SYDNEY = Cron(expression="30 2 * * *", timezone="Australia/Sydney")


def make_spec(*command: str, **fields: Any) -> TaskSpec:
    fields.setdefault("params", {"region": "au"})
    fields.setdefault("triggers", (SYDNEY,))
    return TaskSpec(name="billing.export", command=command, **fields)


def make_context(spec: TaskSpec, **fields: Any) -> RenderContext:
    values: dict[str, Any] = {
        "task_name": spec.name,
        "occurrence": OCCURRENCE,
        "timezone": spec.timezone,
        "params": {},
        "run_id": "run-42",
        "attempt": 2,
    }
    return RenderContext(**(values | fields))


def render_one(source: str, **context: Any) -> str:
    spec = make_spec(source)
    return render_command(spec, make_context(spec, **context)).argv[0]


# --- variables --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ ds }}", "2026-10-04"),
        ("{{ ds_nodash }}", "20261004"),
        ("{{ ts }}", "2026-10-04T03:00:00+11:00"),
        ("{{ ts_nodash }}", "20261004T030000"),
        ("{{ occurrence.hour }}:{{ occurrence.tzname() }}", "3:AEDT"),
        ("{{ occurrence.strftime('%Y/%m') }}", "2026/10"),
        ("{{ params.region }}", "au"),
        ("{{ params['region'] }}", "au"),
        ("{{ run.id }}", "run-42"),
        ("{{ attempt + 1 }}", "3"),
        ("{{ task.name }}", "billing.export"),
        ("{% for i in range(2) %}{{ i }}{% endfor %}", "01"),
    ],
)
def test_each_variable_renders(source: str, expected: str) -> None:
    assert render_one(source) == expected


def test_upstream_outputs_render() -> None:
    upstream: Mapping[str, Mapping[str, Any]] = {"billing.ingest": {"rows": 12, "files": ["a"]}}
    outputs = "upstream['billing.ingest'].outputs"
    source = f"{{{{ {outputs}.rows }}}} {{{{ {outputs} | tojson }}}}"
    rendered = render_one(source, upstream=upstream)
    count, payload = rendered.split(" ", 1)
    assert count == "12"
    assert json.loads(payload) == {"rows": 12, "files": ["a"]}


def test_ts_keeps_microseconds_of_a_manual_occurrence() -> None:
    occurrence = datetime(2026, 1, 5, 1, 2, 3, 456789, tzinfo=UTC)
    assert render_one("{{ ts }}", occurrence=occurrence) == "2026-01-05T12:02:03.456789+11:00"
    assert render_one("{{ ts_nodash }}", occurrence=occurrence) == "20260105T120203"


@pytest.mark.parametrize(
    ("triggers", "zone"),
    [
        (
            (After(tasks=("a",)), SYDNEY, Cron(expression="* * * * *", timezone="Asia/Tokyo")),
            "Australia/Sydney",
        ),
        ((Interval(every=OCCURRENCE - OCCURRENCE.replace(hour=15)),), "UTC"),
        ((At(at=OCCURRENCE),), "UTC"),
        ((Cron(expression="* * * * *", timezone=""),), "UTC"),
        ((), "UTC"),
    ],
)
def test_timezone_is_the_first_cron_triggers(triggers: tuple[Any, ...], zone: str) -> None:
    assert make_spec("x", triggers=triggers).timezone == zone


def test_occurrence_in_utc_without_cron_trigger() -> None:
    spec = make_spec("{{ ts }}", triggers=())
    assert render_command(spec, make_context(spec)).argv == ("2026-10-03T16:00:00+00:00",)


# --- params -----------------------------------------------------------------------


def test_run_params_override_task_defaults() -> None:
    spec = make_spec("{{ params.region }}-{{ params.tier }}", params={"region": "au", "tier": "1"})
    rendered = render_command(spec, make_context(spec, params={"region": "us"}))
    assert rendered.argv == ("us-1",)


def test_render_string_uses_the_context_params_as_given() -> None:
    spec = make_spec("x")
    context = make_context(spec, params={"region": "eu"})
    assert render_string(
        "/data/{{ params.region }}/{{ ds }}", context, "preconditions[0].file"
    ) == ("/data/eu/2026-10-04")


# --- argv, shell, env, workdir --------------------------------------------------------


def test_elements_are_never_split_or_joined() -> None:
    spec = make_spec("echo", "{{ params.x }}", "{{ params.y }}", "", "--flag={{ params.x }}")
    value = "two words 'and quotes' \"more\" $(not run) ;"
    rendered = render_command(spec, make_context(spec, params={"x": value, "y": "  "}))
    assert rendered.argv == ("echo", value, "  ", "", f"--flag={value}")


def test_shell_mode_runs_the_one_element_through_sh() -> None:
    spec = make_spec("ls {{ params.dir }} | wc -l", shell=True)
    rendered = render_command(spec, make_context(spec, params={"dir": "/data"}))
    assert rendered.argv == ("/bin/sh", "-c", "ls /data | wc -l")


def test_shell_mode_with_several_elements_is_refused() -> None:
    spec = make_spec("ls", "-l", shell=True)
    with pytest.raises(RenderError, match="command: with shell: true"):
        render_command(spec, make_context(spec))


def test_env_and_workdir_render() -> None:
    spec = make_spec(
        "run", env={"EXPORT_DIR": "/data/{{ ds }}", "PLAIN": "a{b}"}, workdir="/srv/{{ task.name }}"
    )
    rendered = render_command(spec, make_context(spec))
    assert rendered.env == {"EXPORT_DIR": "/data/2026-10-04", "PLAIN": "a{b}"}
    assert rendered.workdir == "/srv/billing.export"


def test_text_comes_back_unchanged() -> None:
    assert render_one("{{ ds }}\n") == "2026-10-04\n"
    assert render_one("no template\n") == "no template\n"
    assert render_one("") == ""


# --- render-time failures -------------------------------------------------------------


def test_unknown_param_fails_naming_the_field() -> None:
    spec = make_spec("export", "--region", "{{ params.region }}", params={})
    with pytest.raises(RenderError) as caught:
        render_command(spec, make_context(spec))
    assert str(caught.value) == "command[2]: 'params' has no attribute 'region'"
    assert caught.value.path == "command[2]"
    assert isinstance(caught.value, HydraError)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{{ dss }}", "command[0]: 'dss' is undefined"),
        ("{{ params['zone'] }}", "command[0]: 'params' has no attribute 'zone'"),
        ("{{ run.number }}", "command[0]: 'run' has no attribute 'number'"),
        ("{{ upstream['extract'].outputs }}", "command[0]: 'upstream' has no attribute 'extract'"),
        ("{{ 1 // 0 }}", "command[0]: ZeroDivisionError: integer division or modulo by zero"),
        ("{{ ds", "command[0]: template syntax error on line 1: unexpected end of template"),
    ],
)
def test_render_failures_name_the_field(source: str, message: str) -> None:
    with pytest.raises(RenderError) as caught:
        render_one(source)
    assert str(caught.value).startswith(message)


def test_env_failures_name_the_variable() -> None:
    spec = make_spec("run", env={"OUT": "{{ nope }}"})
    with pytest.raises(RenderError, match=r"^env\.OUT: 'nope' is undefined$"):
        render_command(spec, make_context(spec))


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ds.__class__.__mro__[1].__subclasses__() }}",
        "{{ params.__init__.__globals__ }}",
        "{{ params._label }}",
        "{{ occurrence.__reduce_ex__(2) }}",
        "{{ params.update({'region': 'xx'}) }}",
    ],
)
def test_the_sandbox_blocks_escapes(source: str) -> None:
    with pytest.raises(RenderError, match="unsafe"):
        render_one(source)


def test_render_context_requires_an_aware_occurrence_and_a_known_zone() -> None:
    spec = make_spec("x")
    with pytest.raises(ValueError, match="aware"):
        make_context(spec, occurrence=datetime(2026, 1, 1))  # noqa: DTZ001
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus_Mons'"):
        make_context(spec, timezone="Mars/Olympus_Mons")


# --- apply-time checks ------------------------------------------------------------------


def problems_of(spec: TaskSpec) -> list[str]:
    with pytest.raises(InvalidArgument) as caught:
        check_templates(spec)
    return [str(problem) for problem in caught.value.problems]


def test_a_good_spec_passes() -> None:
    spec = make_spec(
        "python",
        "export.py",
        "{{ ds }} {{ ds_nodash }} {{ ts }} {{ ts_nodash }} {{ occurrence.year }}",
        "{{ params.region }} {{ params['region'] }} {{ params.get('other', 'x') }}",
        "{% for key, value in params.items() %}{{ key }}={{ value }}{% endfor %}",
        "{{ run.id }} {{ attempt }} {{ task.name }} {{ range(3) | list }}",
        "{{ upstream['billing.ingest'].outputs.rows }}",
        "{% set region = params.region %}{{ region | upper }}",
        env={"EXPORT_DIR": "/data/{{ ds }}"},
        workdir="/srv/{{ params.region }}",
        triggers=(SYDNEY, After(tasks=("billing.ingest",))),
        preconditions=(
            FileCheck(path="/data/{{ ds }}/_READY"),
            HttpCheck(url="http://warehouse/{{ params.region }}"),
            CommandCheck(argv=("test", "-d", "/data/{{ ds }}")),
            TcpCheck(host="{{ not checked }}", port=5432),
        ),
    )
    check_templates(spec)


def test_syntax_errors_name_the_field_and_line() -> None:
    spec = make_spec("run", "{{ ds }}\n{{ ds | }}", env={"A": "{% if %}"})
    assert problems_of(spec) == [
        "command[1]: template syntax error on line 2: expected token 'name', got 'end of print "
        "statement'",
        "env.A: template syntax error on line 1: Expected an expression, got 'end of statement "
        "block'",
    ]


def test_unknown_filters_are_refused() -> None:
    assert problems_of(make_spec("{{ ds | shout }}")) == [
        "command[0]: template syntax error on line 1: No filter named 'shout'"
    ]


def test_unknown_variables_are_refused() -> None:
    assert problems_of(make_spec("run", "{{ dss }}")) == [
        "command[1]: unknown template variable 'dss'"
    ]


def test_undeclared_params_are_refused() -> None:
    spec = make_spec("{{ params.regoin }}", "{{ params['tier'] }}", workdir="{{ params.tier }}")
    assert problems_of(spec) == [
        "command[0]: unknown param 'regoin' (the task declares region)",
        "command[1]: unknown param 'tier' (the task declares region)",
        "workdir: unknown param 'tier' (the task declares region)",
    ]


def test_params_of_a_task_without_params_are_refused() -> None:
    assert problems_of(make_spec("{{ params.region }}", params={})) == [
        "command[0]: unknown param 'region' (none declared)"
    ]


def test_a_variable_the_template_assigns_is_its_own() -> None:
    check_templates(make_spec("{% set params = {'x': 1} %}{{ params.x }}", params={}))


def test_upstream_must_be_named_in_an_after_trigger() -> None:
    spec = make_spec("{{ upstream['extract'].outputs.rows }}", triggers=(After(tasks=("load",)),))
    assert problems_of(spec) == [
        "command[0]: 'extract' is not an upstream task (not named in an 'after' trigger)"
    ]


def test_private_attributes_and_includes_are_refused() -> None:
    assert problems_of(make_spec("{{ ds.__class__ }}", "{% include 'other' %}")) == [
        "command[0]: access to attribute '__class__' is not allowed",
        "command[1]: include, import and extends are not available",
    ]


def test_precondition_fields_are_checked_with_their_paths() -> None:
    spec = make_spec(
        "run",
        preconditions=(
            CommandCheck(argv=("test", "-f", "{{ dss }}")),
            FileCheck(path="/data/{{ params.nope }}"),
            HttpCheck(url="http://{{ host }"),
        ),
    )
    assert problems_of(spec) == [
        "preconditions[0].command[2]: unknown template variable 'dss'",
        "preconditions[1].file: unknown param 'nope' (the task declares region)",
        "preconditions[2].http: template syntax error on line 1: unexpected '}'",
    ]


def test_all_problems_come_in_one_error() -> None:
    spec = make_spec("{{ dss }}", "{{ params.x }}", env={"A": "{{"}, workdir="{{ wd }}")
    with pytest.raises(InvalidArgument) as caught:
        check_templates(spec)
    assert [problem.path for problem in caught.value.problems] == [
        "command[0]",
        "command[1]",
        "env.A",
        "workdir",
    ]
    assert caught.value.status_code_name == "INVALID_ARGUMENT"
