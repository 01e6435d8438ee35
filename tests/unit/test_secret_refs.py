"""Secret references in a task's env: parsed, validated, canonical and on the wire as
names only; templates never see them."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from hydra.client import SecretRef, Task
from hydra.coordinator.templates import RenderContext, render_command, templated_fields
from hydra.errors import InvalidArgument
from hydra.spec import task_from_dict, task_to_dict, validate_task
from hydra.v1 import types_pb2 as pb
from hydra.wire import task_spec_from_proto, task_spec_to_proto

YAML_SHAPE = {
    "name": "billing.load",
    "command": ["sh", "-c", 'psql "password=$DB_PASSWORD"'],
    "env": {"REGION": "eu", "DB_PASSWORD": {"secret": "warehouse-db"}},
}


def problems(error: pytest.ExceptionInfo[InvalidArgument]) -> dict[str, str]:
    return {problem.path: problem.message for problem in error.value.problems}


def test_a_secret_reference_parses_into_a_secret_ref() -> None:
    spec = task_from_dict(YAML_SHAPE)
    assert spec.env == {"REGION": "eu", "DB_PASSWORD": SecretRef(name="warehouse-db")}
    assert spec.plain_env == {"REGION": "eu"}
    assert spec.secret_env == {"DB_PASSWORD": "warehouse-db"}


def test_the_canonical_form_shows_the_reference_and_round_trips() -> None:
    spec = task_from_dict(YAML_SHAPE)
    shape = task_to_dict(spec)
    assert shape["env"] == {"DB_PASSWORD": {"secret": "warehouse-db"}, "REGION": "eu"}
    assert task_from_dict(shape) == spec


def test_the_sdk_writes_it_as_a_secret_ref() -> None:
    spec = Task(name="t", command=("true",), env={"P": SecretRef(name="db")})
    validate_task(spec)
    assert task_to_dict(spec)["env"] == {"P": {"secret": "db"}}


@pytest.mark.parametrize(
    ("value", "path", "message"),
    [
        ({"secret": "../etc/shadow"}, "env.P.secret", "is not a secret name"),
        ({"secret": ".."}, "env.P.secret", "not . or .."),
        ({"secret": "x" * 129}, "env.P.secret", "is not a secret name"),
        ({"secret": 5}, "env.P", "the secret's name must be a string, not an integer"),
        ({"secret": "db", "other": 1}, "env.P", "must be a secret reference: {secret: NAME}"),
        ({"vault": "db"}, "env.P", "must be a secret reference"),
    ],
)
def test_bad_references_name_the_field(value: object, path: str, message: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        task_from_dict({"name": "t", "command": ["true"], "env": {"P": value}})
    found = problems(error)
    assert list(found) == [path]
    assert message in found[path]


def test_a_bad_variable_name_of_a_secret_is_named() -> None:
    with pytest.raises(InvalidArgument) as error:
        validate_task(Task(name="t", command=("true",), env={"1X": SecretRef(name="db")}))
    assert list(problems(error)) == ["env.1X"]


def test_on_the_wire_a_secret_is_a_separate_field_of_names() -> None:
    spec = task_from_dict(YAML_SHAPE)
    message = task_spec_to_proto(spec)
    assert dict(message.env) == {"REGION": "eu"}
    assert dict(message.secret_env) == {"DB_PASSWORD": "warehouse-db"}
    assert task_spec_from_proto(message) == spec


def test_a_variable_both_plain_and_secret_is_invalid_argument_naming_it() -> None:
    message = pb.TaskSpec(
        name="t", command=["true"], env={"P": "plain"}, secret_env={"P": "db", "Q": "q"}
    )
    with pytest.raises(InvalidArgument) as error:
        task_spec_from_proto(message)
    assert problems(error) == {"spec.secret_env.P": "is also in env; a variable is plain or secret"}


def test_a_bad_secret_name_off_the_wire_is_named() -> None:
    message = pb.TaskSpec(name="t", command=["true"], secret_env={"P": "a/b"})
    with pytest.raises(InvalidArgument) as error:
        task_spec_from_proto(message)
    assert list(problems(error)) == ["spec.env.P.secret"]


def test_templates_never_see_a_secret() -> None:
    spec = Task(
        name="t",
        command=("echo", "{{ env }}", "{{ params.DB_PASSWORD | default('none') }}"),
        env={"DB_PASSWORD": SecretRef(name="db"), "PLAIN": "{{ params.x | default('p') }}"},
    )
    ctx = RenderContext(
        task_name="t",
        occurrence=datetime(2025, 1, 1, tzinfo=UTC),
        timezone="UTC",
        run_id="r",
        attempt=1,
    )
    paths = [field.path for field in templated_fields(spec)]
    assert "env.DB_PASSWORD" not in paths  # a reference is not a template
    with pytest.raises(Exception, match="env"):
        render_command(spec, ctx)  # `env` is no template variable


def test_rendering_leaves_references_out_of_the_rendered_env() -> None:
    spec = Task(name="t", command=("true",), env={"DB_PASSWORD": SecretRef(name="db"), "A": "1"})
    ctx = RenderContext(
        task_name="t",
        occurrence=datetime(2025, 1, 1, tzinfo=UTC),
        timezone="UTC",
        run_id="r",
        attempt=1,
    )
    assert render_command(spec, ctx).env == {"A": "1"}
