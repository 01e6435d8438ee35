"""JSON and query parameters into request messages, and coordinator messages into
field problems (hydra/web/json_mapping.py, http_errors.py): every problem names
the path of its field."""

from __future__ import annotations

import pytest
from google.protobuf.message import Message

from hydra.errors import FieldProblem, InvalidArgument
from hydra.v1 import run_service_pb2 as run_pb
from hydra.v1 import task_service_pb2 as task_pb
from hydra.v1 import types_pb2 as types_pb
from hydra.web.http_errors import HTTP_STATUS, api_error, field_problems
from hydra.web.json_mapping import from_json, from_query, to_json


def _problems(data: object, message: Message) -> dict[str, str]:
    with pytest.raises(InvalidArgument) as raised:
        from_json(data, message)
    return {problem.path: problem.message for problem in raised.value.problems}


def test_a_request_is_read_with_the_proto_field_names() -> None:
    request = from_json(
        {"task": "t", "params": {"a": "1"}, "occurrence": "2026-01-31T02:30:00Z"},
        run_pb.TriggerRunRequest(),
    )
    assert request == run_pb.TriggerRunRequest(
        task="t", params={"a": "1"}, occurrence=request.occurrence
    )
    assert request.occurrence.ToJsonString() == "2026-01-31T02:30:00Z"
    spec = from_json(
        {"spec": {"name": "n", "triggers": [{"cron": {"expression": "* * * * *"}}], "retry": None}},
        task_pb.ApplyTaskRequest(),
    ).spec
    assert spec.triggers[0].cron.expression == "* * * * *" and not spec.HasField("retry")


def test_unknown_and_mistyped_fields_are_named_by_their_path() -> None:
    problems = _problems(
        {"spec": {"name": 3, "triggers": [{}, {"cron": {"expresion": "x"}}], "timeout": "soon"}},
        task_pb.ApplyTaskRequest(),
    )
    assert set(problems) == {"spec.name", "spec.triggers[1].cron.expresion", "spec.timeout"}
    assert problems["spec.name"] == "expected a string"
    assert "expression, timezone" in problems["spec.triggers[1].cron.expresion"]
    assert problems["spec.timeout"].startswith("expected a duration")
    assert _problems([], run_pb.TriggerRunRequest()) == {"": "expected a JSON object"}
    assert _problems({"spec": {"triggers": {}}}, task_pb.ApplyTaskRequest()) == {
        "spec.triggers": "expected a JSON array"
    }
    enum = _problems({"states": ["DONE"]}, run_pb.ListRunsRequest())["states"]
    assert enum.startswith("expected a JSON array of one of RUN_STATE_QUEUED")


def test_two_members_of_a_oneof_are_refused() -> None:
    problems = _problems(
        {"spec": {"triggers": [{"cron": {"expression": "x"}, "interval": {"every": "60s"}}]}},
        task_pb.ApplyTaskRequest(),
    )
    assert problems == {
        "spec.triggers[0].interval": "only one of cron, interval, at, after may be set (also cron)"
    }


def test_query_parameters_are_top_level_fields() -> None:
    query = [("task", "t"), ("states", "RUN_STATE_FAILED"), ("states", "RUN_STATE_QUEUED"),
             ("page_size", "10")]  # fmt: skip
    request = from_query(query, run_pb.ListRunsRequest())
    assert request.task == "t" and request.page_size == 10
    assert list(request.states) == [types_pb.RUN_STATE_FAILED, types_pb.RUN_STATE_QUEUED]
    versions = from_query([("name", "x"), ("include_versions", "true")], task_pb.GetTaskRequest())
    assert versions.include_versions
    for query, path in (
        ([("nope", "1")], "nope"),
        ([("task", "a"), ("task", "b")], "task"),
        ([("page_size", "ten")], "page_size"),
    ):
        with pytest.raises(InvalidArgument) as raised:
            from_query(query, run_pb.ListRunsRequest())
        assert raised.value.problems[0].path == path
    with pytest.raises(InvalidArgument) as raised:
        from_query([("spec", "{}")], task_pb.ApplyTaskRequest())
    assert "JSON body" in raised.value.message


def test_responses_print_fields_without_presence() -> None:
    assert to_json(run_pb.TriggerRunResponse()) == {"created": False}
    assert to_json(run_pb.ListRunsResponse()) == {"runs": [], "next_page_token": ""}
    assert to_json(run_pb.LogChunk(data=b"hi\n", dropped_bytes=5)) == {
        "attempt": 0, "stream": "OUTPUT_STREAM_UNSPECIFIED", "data": "aGkK", "dropped_bytes": "5",
    }  # fmt: skip


def test_coordinator_messages_are_read_back_into_field_problems() -> None:
    assert field_problems("spec.triggers[0].cron: bad expression 'x'; spec.name: too long") == (
        FieldProblem(path="spec.triggers[0].cron", message="bad expression 'x'"),
        FieldProblem(path="spec.name", message="too long"),
    )
    assert field_problems("params.who: not declared; see the task's params") == (
        FieldProblem(path="params.who", message="not declared; see the task's params"),
    )
    assert field_problems("unknown task 'x'") == (
        FieldProblem(path="", message="unknown task 'x'"),
    )


def test_error_bodies_and_statuses() -> None:
    assert HTTP_STATUS["FAILED_PRECONDITION"] == 409 and HTTP_STATUS["UNAVAILABLE"] == 503
    refused = api_error("UNAUTHENTICATED", "no credential")
    assert refused.status == 401 and refused.headers["WWW-Authenticate"].startswith("Bearer")
    assert refused.body() == {"error": {"code": "UNAUTHENTICATED", "message": "no credential"}}
    bad = api_error("INVALID_ARGUMENT", "m", problems=(FieldProblem(path="a.b", message="m"),))
    assert bad.body()["error"]["field"] == "a.b"
    assert api_error("DATA_LOSS", "x").status == 500
