"""The dependency graph of `after` triggers around a task, and for one
occurrence the state of each task's run in the chain (docs/web.md, "Graph").

The graph comes from the specs (every task is listed once, a thousand a call);
the layout is computed here and drawn as server-side SVG, columns by depth.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from hydra.domain import After, Run, RunState, Task
from hydra.v1 import run_service_pb2 as run_pb
from hydra.v1 import task_service_pb2 as task_pb
from hydra.web.ui.forms import instant
from hydra.web.ui.pages import Page, Ui, endpoint
from hydra.wire import run_from_proto, task_from_proto, to_timestamp

BOX_W, BOX_H, GAP_X, GAP_Y, MARGIN = 190, 58, 70, 22, 12
_BROKEN = (RunState.FAILED, RunState.CANCELLED, RunState.SKIPPED)


@dataclass(frozen=True, kw_only=True, slots=True)
class Node:
    """A task in the drawing: where its box is and what its run for the occurrence is."""

    name: str
    depth: int
    row: int
    run: Run | None

    @property
    def x(self) -> int:
        return MARGIN + self.depth * (BOX_W + GAP_X)

    @property
    def y(self) -> int:
        return MARGIN + self.row * (BOX_H + GAP_Y)


@dataclass(frozen=True, kw_only=True, slots=True)
class Edge:
    upstream: Node
    downstream: Node

    @property
    def path(self) -> str:
        """A curve from the upstream box's right side to the downstream box's left side."""
        x1, y1 = self.upstream.x + BOX_W, self.upstream.y + BOX_H // 2
        x2, y2 = self.downstream.x - 4, self.downstream.y + BOX_H // 2
        middle = (x1 + x2) // 2
        return f"M{x1},{y1} C{middle},{y1} {middle},{y2} {x2},{y2}"


def routes(ui: Ui) -> list[BaseRoute]:
    return [Route("/tasks/{name}/graph", endpoint(ui, _graph), methods=["GET"])]


def upstreams(tasks: Mapping[str, Task]) -> dict[str, list[str]]:
    """Each task's upstream tasks, from its `after` triggers."""
    return {
        name: sorted(
            {
                up
                for trigger in task.spec.triggers
                if isinstance(trigger, After)
                for up in trigger.tasks
            }
        )
        for name, task in tasks.items()
    }


def around(name: str, ups: Mapping[str, list[str]]) -> set[str]:
    """``name`` with every task upstream and downstream of it."""
    downs: dict[str, list[str]] = {}
    for task, its_ups in ups.items():
        for up in its_ups:
            downs.setdefault(up, []).append(task)
    found = {name}
    for edges in (ups, downs):
        todo = [name]
        while todo:
            for other in edges.get(todo.pop(), []):
                if other not in found:
                    found.add(other)
                    todo.append(other)
    return found


def depths(names: set[str], ups: Mapping[str, list[str]]) -> dict[str, int]:
    """Each task's column: one more than its deepest upstream (cycles are cut)."""
    result: dict[str, int] = {}

    def depth(name: str, seen: frozenset[str]) -> int:
        if name not in result:
            within = [up for up in ups.get(name, []) if up in names and up not in seen]
            result[name] = 1 + max((depth(up, seen | {name}) for up in within), default=-1)
        return result[name]

    for name in sorted(names):
        depth(name, frozenset())
    return result


def broken(nodes: Mapping[str, Node], ups: Mapping[str, list[str]]) -> list[Node]:
    """Where the chain broke: runs that failed, were cancelled or skipped while
    none of their upstreams' runs did (the first break, not its consequences)."""

    def breaks(node: Node | None) -> bool:
        return node is not None and node.run is not None and node.run.state in _BROKEN

    return [
        node
        for node in nodes.values()
        if breaks(node) and not any(breaks(nodes.get(up)) for up in ups.get(node.name, []))
    ]


async def _all_tasks(page: Page) -> dict[str, Task]:
    tasks: dict[str, Task] = {}
    token = ""
    while True:
        listed = await page.call(
            "TaskService", "List", task_pb.ListTasksRequest(page_size=1000, page_token=token)
        )
        tasks.update((message.name, task_from_proto(message)) for message in listed.tasks)
        token = listed.next_page_token
        if not token:
            return tasks


async def _run_at(page: Page, task: str, occurrence: datetime | None) -> Run | None:
    if occurrence is None:
        return None
    request = run_pb.ListRunsRequest(task=task, page_size=1)
    request.occurrence_from.CopyFrom(to_timestamp(occurrence))
    request.occurrence_to.CopyFrom(to_timestamp(occurrence + timedelta(microseconds=1)))
    listed = await page.call("RunService", "List", request)
    return run_from_proto(listed.runs[0]) if listed.runs else None


async def _graph(page: Page) -> Response:
    name = page.request.path_params["name"]
    await page.call("TaskService", "Get", task_pb.GetTaskRequest(name=name))  # NOT_FOUND first
    tasks = await _all_tasks(page)
    ups = upstreams(tasks)
    names = around(name, ups)
    recent = await page.call("RunService", "List", run_pb.ListRunsRequest(task=name, page_size=10))
    occurrences = sorted({run_from_proto(m).occurrence for m in recent.runs}, reverse=True)
    occurrence = instant(page.field("occurrence"), "occurrence") or (
        occurrences[0] if occurrences else None
    )
    columns = depths(names, ups)
    ordered = sorted(names, key=lambda task: (columns[task], task))
    runs = await asyncio.gather(*(_run_at(page, task, occurrence) for task in ordered))
    rows: dict[int, int] = {}
    nodes: dict[str, Node] = {}
    for task, run in zip(ordered, runs, strict=True):
        row = rows[columns[task]] = rows.get(columns[task], -1) + 1
        nodes[task] = Node(name=task, depth=columns[task], row=row, run=run)
    edges = [
        Edge(upstream=nodes[up], downstream=nodes[down])
        for down in ordered
        for up in ups.get(down, [])
        if up in nodes
    ]
    width = MARGIN * 2 + (max(columns.values()) + 1) * (BOX_W + GAP_X) - GAP_X
    height = MARGIN * 2 + (max(rows.values()) + 1) * (BOX_H + GAP_Y) - GAP_Y
    return page.render(
        "graph.html", name=name, nodes=list(nodes.values()), edges=edges, width=width,
        height=height, box_w=BOX_W, box_h=BOX_H, occurrence=occurrence,
        occurrences=occurrences, ups=ups, broken=broken(nodes, ups),
    )  # fmt: skip
