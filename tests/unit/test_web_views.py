"""Pure parts of the web UI's pages: the versions diff, the dependency graph's
shape and where a chain broke, form parsing, log pieces (hydra/web/ui/)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from hydra.domain import After, Cron, Run, RunState, Task, TaskSpec, TaskVersion
from hydra.errors import InvalidArgument
from hydra.v1 import run_service_pb2 as run_pb
from hydra.web.ui.forms import instant, params, run_state
from hydra.web.ui.graph import Node, around, broken, depths, upstreams
from hydra.web.ui.logtext import log_pieces
from hydra.web.ui.tasks import version_diff

NOW = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)


def _task(name: str, *after: str) -> Task:
    triggers = (After(tasks=after),) if after else (Cron(expression="0 2 * * *"),)
    spec = TaskSpec(name=name, command=("true",), triggers=triggers)
    return Task(name=name, version=1, paused=False, spec=spec, created_at=NOW, updated_at=NOW)


def _run(task: str, state: RunState) -> Run:
    return Run(
        id=f"{task}-run", task=task, task_version=1, occurrence=NOW, state=state,
        cause="after", created_at=NOW, not_before=NOW,
    )  # fmt: skip


def test_the_diff_of_two_versions_marks_what_changed() -> None:
    old = TaskVersion(version=1, spec=TaskSpec(name="t", command=("echo", "a")), created_at=NOW)
    new = TaskVersion(version=2, spec=TaskSpec(name="t", command=("echo", "b")), created_at=NOW)
    lines = version_diff("t", old, new)
    assert ("file", "--- t v1") in lines and ("file", "+++ t v2") in lines
    assert ("del", "-- a") in lines and ("add", "+- b") in lines
    assert version_diff("t", old, old) == []


def test_the_graph_holds_the_task_with_everything_up_and_downstream_only() -> None:
    tasks = {t.name: t for t in (
        _task("ingest"), _task("transform", "ingest"), _task("publish", "transform"),
        _task("report", "ingest"), _task("other"), _task("late", "other"),
    )}  # fmt: skip
    ups = upstreams(tasks)
    assert around("transform", ups) == {"ingest", "transform", "publish"}
    assert around("ingest", ups) == {"ingest", "transform", "publish", "report"}
    names = around("ingest", ups)
    assert depths(names, ups) == {"ingest": 0, "transform": 1, "report": 1, "publish": 2}


def test_a_cycle_does_not_hang_the_layout() -> None:
    ups = {"a": ["b"], "b": ["a"]}
    assert around("a", ups) == {"a", "b"}
    assert set(depths({"a", "b"}, ups).values()) <= {0, 1}


def test_the_chain_broke_where_a_run_failed_not_where_it_was_skipped_for_that() -> None:
    ups = {"ingest": [], "transform": ["ingest"], "publish": ["transform"]}
    nodes = {
        "ingest": Node(name="ingest", depth=0, row=0, run=_run("ingest", RunState.SUCCEEDED)),
        "transform": Node(name="transform", depth=1, row=0, run=_run("transform", RunState.FAILED)),
        "publish": Node(name="publish", depth=2, row=0, run=_run("publish", RunState.SKIPPED)),
    }
    assert [node.name for node in broken(nodes, ups)] == ["transform"]


def test_form_times_are_utc_and_bad_ones_name_the_field() -> None:
    assert instant("2026-11-27T02:00", "from") == NOW
    assert instant("2026-11-27T13:00+11:00", "from") == NOW
    assert instant("", "from") is None
    with pytest.raises(InvalidArgument, match=r"^to: "):
        instant("yesterday", "to")


def test_a_state_filter_names_a_run_state() -> None:
    assert run_state("failed") is RunState.FAILED
    assert run_state("") is None
    with pytest.raises(InvalidArgument, match=r"^state: "):
        run_state("broken")


def test_trigger_params_come_from_declared_fields_and_key_value_lines() -> None:
    fields = {"param.who": "world", "csrf": "x"}
    assert params(fields, "day = monday\n\nwho=you") == {"who": "you", "day": "monday"}
    with pytest.raises(InvalidArgument, match=r"^params: line 1"):
        params({}, "no equals sign")


def test_log_pieces_keep_streams_apart_and_mark_what_was_dropped() -> None:
    chunks = [
        run_pb.LogChunk(attempt=1, stream=run_pb.OUTPUT_STREAM_STDOUT, data=b"head\n"),
        run_pb.LogChunk(attempt=1, stream=run_pb.OUTPUT_STREAM_STDOUT, dropped_bytes=2048),
        run_pb.LogChunk(attempt=1, stream=run_pb.OUTPUT_STREAM_STDERR, data=b"\xfftail\n"),
    ]
    pieces = log_pieces(chunks)
    assert (pieces[0].kind, pieces[0].text) == ("out", "head\n")
    assert pieces[1].kind == "dropped" and "2,048 bytes dropped" in pieces[1].text
    assert pieces[2].kind == "err" and pieces[2].text == "\ufffdtail\n"
