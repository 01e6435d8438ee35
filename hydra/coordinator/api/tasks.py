"""TaskService: wire <-> domain, then plain calls."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import grpc

from hydra.coordinator import specs
from hydra.coordinator.api import scope
from hydra.coordinator.api.audit import call_entry, failures_recorded
from hydra.coordinator.api.errors import unary
from hydra.coordinator.api.paging import decode_token, encode_token, page_size
from hydra.coordinator.loops.timing import utcnow
from hydra.coordinator.store import Database, tasks
from hydra.domain import Retention, Task
from hydra.errors import InvalidArgument
from hydra.v1 import task_service_pb2 as pb
from hydra.v1 import task_service_pb2_grpc as pb_grpc
from hydra.wire import task_spec_from_proto, task_to_proto, task_version_to_proto

Context = grpc.aio.ServicerContext[Any, Any]

DEFAULT_PAGE = 100


class TaskApi(pb_grpc.TaskServiceServicer):
    """Tasks: named, versioned specs."""

    def __init__(self, database: Database, retention: Retention | None = None) -> None:
        """Tasks in `database`; `retention` is the cluster's default (Get shows each
        task's effective retention over it)."""
        self._db = database
        self._retention = retention or Retention()

    def _effective(self, task: Task) -> Task:
        return replace(task, effective_retention=task.spec.retention.over(self._retention))

    @unary
    async def Apply(self, request: pb.ApplyTaskRequest, context: Context) -> pb.ApplyTaskResponse:
        entry = None
        if not request.dry_run:  # a dry run changes nothing: not recorded
            entry = call_entry(context, "TaskService/Apply", task=request.spec.name)
        async with failures_recorded(self._db, entry):
            if not request.HasField("spec"):
                raise InvalidArgument("required", path="spec")
            spec = task_spec_from_proto(request.spec, "spec")
            scope.check_spec(spec)
            applied = await specs.apply_spec(
                self._db, spec, dry_run=request.dry_run, now=utcnow(), audit_entry=entry
            )
        return pb.ApplyTaskResponse(
            task=task_to_proto(applied.task),
            changed=applied.changed,
            previous_version=applied.previous_version,
        )

    @unary
    async def Get(self, request: pb.GetTaskRequest, context: Context) -> pb.GetTaskResponse:
        name = _name(request.name)
        if not request.include_versions:
            task = self._effective(await self._db.run(tasks.get_task, name))
            return pb.GetTaskResponse(task=task_to_proto(task))
        task, versions = await self._db.run(tasks.get_task_versions, name)
        return pb.GetTaskResponse(
            task=task_to_proto(self._effective(task)),
            versions=[task_version_to_proto(v) for v in versions],
        )

    @unary
    async def List(self, request: pb.ListTasksRequest, context: Context) -> pb.ListTasksResponse:
        limit = page_size(request.page_size, DEFAULT_PAGE)
        after = decode_token(request.page_token)
        prefix = scope.narrowed_prefix(request.name_prefix)
        if prefix is None:  # the prefix asked for is outside the caller's scope
            return pb.ListTasksResponse()
        found = await self._db.run(tasks.list_tasks, after=after, prefix=prefix, limit=limit + 1)
        next_token = encode_token(found[limit - 1].name) if len(found) > limit else ""
        return pb.ListTasksResponse(
            tasks=[task_to_proto(t) for t in found[:limit]], next_page_token=next_token
        )

    @unary
    async def Delete(
        self, request: pb.DeleteTaskRequest, context: Context
    ) -> pb.DeleteTaskResponse:
        entry = call_entry(context, "TaskService/Delete", task=request.name)
        async with failures_recorded(self._db, entry):
            cancelled = await specs.delete(
                self._db, _name(request.name), force=request.force, audit_entry=entry
            )
        return pb.DeleteTaskResponse(cancelled_runs=cancelled)

    @unary
    async def Pause(self, request: pb.PauseTaskRequest, context: Context) -> pb.PauseTaskResponse:
        entry = call_entry(context, "TaskService/Pause", task=request.name)
        async with failures_recorded(self._db, entry):
            task = await specs.pause(self._db, _name(request.name), audit_entry=entry)
        return pb.PauseTaskResponse(task=task_to_proto(task))

    @unary
    async def Resume(
        self, request: pb.ResumeTaskRequest, context: Context
    ) -> pb.ResumeTaskResponse:
        entry = call_entry(context, "TaskService/Resume", task=request.name)
        async with failures_recorded(self._db, entry):
            task = await specs.resume(self._db, _name(request.name), utcnow(), audit_entry=entry)
        return pb.ResumeTaskResponse(task=task_to_proto(task))


def _name(name: str) -> str:
    """The task a request names, within the caller's scope."""
    if not name:
        raise InvalidArgument("required", path="name")
    scope.check_task(name)
    return name
