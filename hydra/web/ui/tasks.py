"""The tasks pages: the list with each task's last runs (Airflow's grid), one
task with its spec, settings and runs, and the diff between two versions."""

from __future__ import annotations

import asyncio
import dataclasses
import difflib
from typing import Any

import yaml
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from hydra.domain import Run, TaskSpec, TaskVersion
from hydra.errors import InvalidArgument
from hydra.spec import task_to_dict
from hydra.v1 import run_service_pb2 as run_pb
from hydra.v1 import task_service_pb2 as task_pb
from hydra.web.ui.forms import RUN_STATES, instant, run_state
from hydra.web.ui.pages import Page, Ui, endpoint
from hydra.wire import (
    run_from_proto,
    run_state_to_proto,
    task_from_proto,
    task_version_from_proto,
    to_timestamp,
)

#: Tasks per page of the list: each costs one ListRuns for its cells.
TASKS_PER_PAGE = 50
#: Cells per task in the grid, as Airflow's grid shows.
CELLS = 20
#: Runs per page of a task's runs.
RUNS_PER_PAGE = 50
_SPEC_ORDER = tuple(field.name for field in dataclasses.fields(TaskSpec))


def routes(ui: Ui) -> list[BaseRoute]:
    return [
        Route("/tasks", endpoint(ui, _tasks), methods=["GET"]),
        Route("/_fragments/tasks", endpoint(ui, _task_rows), methods=["GET"]),
        Route("/tasks/{name}", endpoint(ui, _task), methods=["GET"]),
        Route("/tasks/{name}/runs", endpoint(ui, _task_runs), methods=["GET"]),
        Route("/tasks/{name}/versions", endpoint(ui, _versions), methods=["GET"]),
    ]


async def _tasks(page: Page) -> Response:
    listing = await _listing(page)
    return page.render("tasks.html", **listing)


async def _task_rows(page: Page) -> Response:
    """The rows alone: what the list polls to keep its cells live."""
    return page.render("_task_list.html", **await _listing(page))


async def _listing(page: Page) -> dict[str, Any]:
    prefix, token = page.field("prefix"), page.field("page")
    request = task_pb.ListTasksRequest(
        page_size=TASKS_PER_PAGE, page_token=token, name_prefix=prefix
    )
    listed = await page.call("TaskService", "List", request)
    tasks = [task_from_proto(message) for message in listed.tasks]
    cells = await asyncio.gather(*(_last_runs(page, task.name) for task in tasks))
    return {
        "rows": list(zip(tasks, cells, strict=True)),
        "prefix": prefix,
        "page_token": token,
        "next_token": listed.next_page_token,
        "cells": CELLS,
    }


async def _last_runs(page: Page, task: str) -> list[Run]:
    """The task's last runs, oldest first (the newest cell is on the right)."""
    listed = await page.call(
        "RunService", "List", run_pb.ListRunsRequest(task=task, page_size=CELLS)
    )
    return [run_from_proto(message) for message in reversed(listed.runs)]


async def _task(page: Page) -> Response:
    name = page.request.path_params["name"]
    got = await page.call("TaskService", "Get", task_pb.GetTaskRequest(name=name))
    task = task_from_proto(got.task)
    runs = await _runs(page, name)
    return page.render("task.html", task=task, spec_yaml=spec_yaml(task.spec), **runs)


async def _task_runs(page: Page) -> Response:
    """The runs table alone, for polling."""
    return page.render(
        "_runs_table.html",
        task_name=page.request.path_params["name"],
        **await _runs(page, page.request.path_params["name"]),
    )


async def _runs(page: Page, name: str) -> dict[str, Any]:
    """A page of the task's runs, filtered by state and occurrence range."""
    state = run_state(page.field("state"))
    since = instant(page.field("from"), "from")
    until = instant(page.field("to"), "to")
    if since is not None and until is not None and until <= since:
        raise InvalidArgument("must be after from", path="to")
    request = run_pb.ListRunsRequest(
        task=name, page_size=RUNS_PER_PAGE, page_token=page.field("page"),
        states=[run_state_to_proto(state)] if state else [],
    )  # fmt: skip
    if since is not None:
        request.occurrence_from.CopyFrom(to_timestamp(since))
    if until is not None:
        request.occurrence_to.CopyFrom(to_timestamp(until))
    listed = await page.call("RunService", "List", request)
    filters = {
        "state": page.field("state").upper(),
        "from": page.field("from"),
        "to": page.field("to"),
    }
    return {
        "runs": [run_from_proto(message) for message in listed.runs],
        "next_token": listed.next_page_token,
        "page_token": page.field("page"),
        "filters": filters,
        "run_states": RUN_STATES,
    }


def spec_yaml(spec: TaskSpec) -> str:
    """A spec as YAML that ``hydractl apply -f`` takes back, fields in the docs' order."""
    shape = task_to_dict(spec)
    shape = {name: shape[name] for name in _SPEC_ORDER if name in shape} | shape
    return yaml.safe_dump(shape, sort_keys=False, allow_unicode=True)


async def _versions(page: Page) -> Response:
    name = page.request.path_params["name"]
    request = task_pb.GetTaskRequest(name=name, include_versions=True)
    got = await page.call("TaskService", "Get", request)
    task = task_from_proto(got.task)
    versions = [task_version_from_proto(message) for message in got.versions]
    newer = _version(versions, page.field("b"), task.version, "b")
    older = _version(versions, page.field("a"), max(newer.version - 1, 1), "a")
    return page.render(
        "versions.html", task=task, versions=versions, older=older, newer=newer,
        diff=version_diff(name, older, newer),
    )  # fmt: skip


def _version(versions: list[TaskVersion], text: str, default: int, field: str) -> TaskVersion:
    wanted = default
    if text:
        if not text.isdigit():
            raise InvalidArgument(f"{text[:20]!r} is not a version number", path=field)
        wanted = int(text)
    for version in versions:
        if version.version == wanted:
            return version
    raise InvalidArgument(f"the task has no version {wanted}", path=field)


def version_diff(name: str, older: TaskVersion, newer: TaskVersion) -> list[tuple[str, str]]:
    """The unified diff of two versions' YAML, each line with its kind
    ("add", "del", "hunk", "file" or "same") for colouring."""
    lines = difflib.unified_diff(
        spec_yaml(older.spec).splitlines(),
        spec_yaml(newer.spec).splitlines(),
        f"{name} v{older.version}",
        f"{name} v{newer.version}",
        lineterm="",
    )
    return [(_kind(line), line) for line in lines]


def _kind(line: str) -> str:
    if line.startswith(("+++", "---")):
        return "file"
    if line.startswith("@@"):
        return "hunk"
    return {"+": "add", "-": "del"}.get(line[:1], "same")
