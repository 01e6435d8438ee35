"""The limits of template rendering: what apply refuses, what rendering refuses,
and which templates render inline rather than in a worker."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest

from hydra.coordinator.sandbox import MAX_FIELD_BYTES
from hydra.coordinator.specs import check_spec
from hydra.coordinator.template_checks import check_templates
from hydra.coordinator.templates import (
    RenderContext,
    RenderError,
    needs_worker,
    render_command,
    render_run,
)
from hydra.domain import FileCheck, TaskSpec
from hydra.errors import InvalidArgument

OCCURRENCE = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)


def _spec(*command: str, **fields: Any) -> TaskSpec:
    fields.setdefault("params", {"n": "1"})
    return TaskSpec(name="limits", command=("echo", *command), **fields)


def _context(**params: str) -> RenderContext:
    return RenderContext(
        task_name="limits",
        occurrence=OCCURRENCE,
        timezone="UTC",
        params=params,
        run_id="run-1",
        attempt=1,
    )


# --- apply time -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "message"),
    [
        (
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
            "nested loops would run 10,000,000,000 iterations, over the limit of 1,000,000",
        ),
        (
            "{% for i in range(1001) %}{% for j in range(10) %}{% for k in range(100) %}"
            "{% endfor %}{% endfor %}{% endfor %}",
            "nested loops would run 1,001,000 iterations, over the limit of 1,000,000",
        ),
        ("{{ range(10**10)|list }}", "range() of 10,000,000,000 items is over the limit of 100,0"),
        ("{% for i in range(0, 10**6, 2) %}{% endfor %}", "range() of 500,000 items is over"),
        (
            "{{ 'x' * 200000000 }}",
            "'*' would make a string of 200,000,000 characters; "
            "a rendered field is at most 256 KiB",
        ),
        ("{{ 200000000 * 'ab' }}", "'*' would make a string of 400,000,000 characters"),
        ("{{ ('x' * 1000) * 1000 }}", "'*' would make a string of 1,000,000 characters"),
        ("{{ [0] * (10 ** 9) }}", ""),  # not literal for the checks (a list): bounded at render
        ("{{ 2 ** 100000 }}", "'**' with exponent 100,000 is too large"),
        ("{{ lipsum(n=100000) }}", "lipsum: n=100,000 is over the limit of 100 paragraphs"),
        ("{{ lipsum(3, False, 10, 5000) }}", "lipsum: max=5,000 is over the limit of 100 words"),
    ],
)
def test_apply_refuses_literal_runaway_templates_naming_the_field(
    template: str, message: str
) -> None:
    spec = _spec(template)
    if not message:
        check_templates(spec)
        return
    with pytest.raises(InvalidArgument) as refused:
        check_templates(spec)
    [problem] = refused.value.problems
    assert problem.path == "command[1]"
    assert message in problem.message


def test_the_spec_check_names_the_field_under_spec() -> None:
    spec = _spec("ok", env={"DAY": "{{ lipsum(n=1000) }}"})
    with pytest.raises(InvalidArgument) as refused:
        check_spec(spec)
    assert str(refused.value) == "spec.env.DAY: lipsum: n=1,000 is over the limit of 100 paragraphs"


@pytest.mark.parametrize(
    "template",
    [
        "{% for i in range(1000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}",
        "{% for i in range(params.n|int) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "{{ 'x' * (params.n|int) }}",
        "{{ '-' * 80 }}",
        "{{ 2 ** 64 }}",
        "{{ lipsum(n=3) }}",
        "{{ lipsum(n=params.n|int) }}",
    ],
)
def test_apply_accepts_what_is_within_the_limits_or_not_literal(template: str) -> None:
    check_templates(_spec(template))


@pytest.mark.parametrize(
    "template",
    ["{{ 'x'|center(300000000) }}", "{{ ('ab'|replace('', 'x' * 100000))|length }}"],
)
def test_checking_a_template_does_not_evaluate_it(template: str) -> None:
    # Jinja folds constant expressions, filters included, while compiling: checking
    # these at apply time would build hundreds of megabytes on the event loop.
    started = time.monotonic()
    check_templates(_spec(template))
    assert time.monotonic() - started < 0.5


# --- render time ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "params", "message"),
    [
        (
            "{{ 'x' * (params.n|int) }}",
            {"n": "200000000"},
            "command[1]: '*' would make a string of 200,000,000 characters; "
            "a rendered field is at most 256 KiB",
        ),
        (
            "{{ ('x' * 1000) * (params.n|int) }}",
            {"n": "1000"},
            "command[1]: '*' would make a string of 1,000,000 characters",
        ),
        ("{{ [0] * (params.n|int) }}", {"n": "10000000"}, "sequence of 10,000,000 items"),
        ("{{ 3 ** (params.n|int) }}", {"n": "1000000"}, "'**' with exponent 1,000,000"),
        (
            "{{ lipsum(n=params.n|int) }}",
            {"n": "100000"},
            "command[1]: lipsum: n=100,000 is over the limit of 100 paragraphs",
        ),
        (
            "{{ range(params.n|int)|length }}",
            {"n": "100001"},
            "command[1]: range() of 100,001 items is over the limit of 100,000",
        ),
        (
            "{% for i in range(100) %}{{ 'y' * 3000 }}{% endfor %}",
            {},
            "command[1]: rendered to more than 262,144 characters; a rendered field is at most "
            "256 KiB",
        ),
        (
            "{{ 'z'|center(params.n|int) }}",
            {"n": "300000"},
            "command[1]: rendered to more than 262,144 characters",
        ),
        (
            "{{ params.n ~ ('é' * 140000) }}",  # fewer characters than bytes
            {"n": "1"},
            "command[1]: rendered to 280,001 bytes; a rendered field is at most 256 KiB",
        ),
    ],
)
def test_rendering_refuses_what_goes_over_a_limit_naming_the_field(
    template: str, params: dict[str, str], message: str
) -> None:
    with pytest.raises(RenderError) as refused:
        render_command(_spec(template), _context(**params))
    assert message in str(refused.value)


def test_a_field_within_the_limit_renders() -> None:
    rendered = render_command(_spec("{{ 'x' * (params.n|int) }}"), _context(n=str(MAX_FIELD_BYTES)))
    assert rendered.argv[1] == "x" * MAX_FIELD_BYTES


def test_a_run_whose_fields_together_exceed_one_mib_is_refused() -> None:
    fields = {f"PART{i}": "{{ 'x' * 250000 }}" for i in range(4)}
    spec = _spec("ok", env=fields, preconditions=(FileCheck(path="/{{ 'y' * 100000 }}"),))
    with pytest.raises(RenderError) as refused:
        render_run(spec, _context())
    assert str(refused.value) == (
        "command, env, workdir and preconditions: rendered to 1,100,027 bytes together; "
        "at most 1 MiB"
    )
    smaller = _spec("ok", env=dict(list(fields.items())[:3]))
    assert len(render_run(smaller, _context()).command.env) == 3


# --- inline or in a worker --------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "in_worker"),
    [
        ("/bin/true", False),
        ("{{ ds }}", False),
        ("--day={{ ds }} --at={{ ts_nodash }}", False),
        ("{{ params.region }}/{{ params['x'] }}/{{ upstream['u'].outputs.path }}", False),
        ("{{ run.id }}-{{ attempt }}-{{ task.name }}-{{ 'literal' }}", False),
        ("{{ ds", False),  # a syntax error fails inline, at once
        ("{{ occurrence.strftime('%Y') }}", True),
        ("{{ ds|upper }}", True),
        ("{{ ds ~ ds }}", True),
        ("{{ attempt + 1 }}", True),
        ("{% if attempt %}x{% endif %}", True),
        ("{% for i in range(3) %}{{ i }}{% endfor %}", True),
        ("{% macro m() %}{% endmacro %}{{ m() }}", True),
        ("{{ params.x[::-1] }}", True),
    ],
)
def test_only_output_of_variable_lookups_renders_inline(template: str, in_worker: bool) -> None:
    assert needs_worker(template) is in_worker
