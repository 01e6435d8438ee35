"""What an operator does to a task from its page: trigger, pause, resume, backfill.

Each is a POST carrying the CSRF token; the coordinator decides whether the
credential may (a viewer's forged POST gets PERMISSION_DENIED, shown as a message).
"""

from __future__ import annotations

from urllib.parse import quote

from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from hydra.errors import InvalidArgument
from hydra.v1 import run_service_pb2 as run_pb
from hydra.v1 import task_service_pb2 as task_pb
from hydra.web.ui.forms import instant, params
from hydra.web.ui.pages import Page, Ui, endpoint, see_other
from hydra.wire import from_timestamp, run_from_proto, task_from_proto, to_timestamp

#: The most occurrences a backfill preview lists (the count is always shown).
PREVIEW_LIMIT = 200


def routes(ui: Ui) -> list[BaseRoute]:
    return [
        Route("/tasks/{name}/trigger", endpoint(ui, _trigger), methods=["POST"]),
        Route("/tasks/{name}/pause", endpoint(ui, _pause), methods=["POST"]),
        Route("/tasks/{name}/resume", endpoint(ui, _resume), methods=["POST"]),
        Route("/tasks/{name}/backfill", endpoint(ui, _backfill), methods=["POST"]),
    ]


def _task_url(name: str) -> str:
    return f"/tasks/{quote(name)}"


async def _trigger(page: Page) -> Response:
    name = page.request.path_params["name"]
    assert page.form is not None
    fields = {key: value for key, value in page.form.items() if isinstance(value, str)}
    request = run_pb.TriggerRunRequest(task=name, params=params(fields, page.field("extra")))
    triggered = await page.call("RunService", "Trigger", request)
    return see_other(f"/runs/{quote(triggered.run.id)}")


async def _pause(page: Page) -> Response:
    name = page.request.path_params["name"]
    await page.call("TaskService", "Pause", task_pb.PauseTaskRequest(name=name))
    return see_other(_task_url(name))


async def _resume(page: Page) -> Response:
    name = page.request.path_params["name"]
    await page.call("TaskService", "Resume", task_pb.ResumeTaskRequest(name=name))
    return see_other(_task_url(name))


async def _backfill(page: Page) -> Response:
    """Without ``confirm``: a dry run listing the occurrences, with a confirm
    button; with it: the runs are created."""
    name = page.request.path_params["name"]
    since, until = instant(page.field("from"), "from"), instant(page.field("to"), "to")
    if since is None or until is None:
        raise InvalidArgument("give both ends of the range", path="from" if since is None else "to")
    confirm = page.field("confirm") == "yes"
    request = run_pb.BackfillRequest(
        task=name, dry_run=not confirm, **{"from": to_timestamp(since)}, to=to_timestamp(until)
    )
    done = await page.call("RunService", "Backfill", request)
    occurrences = [from_timestamp(stamp) for stamp in done.occurrences]
    got = await page.call("TaskService", "Get", task_pb.GetTaskRequest(name=name))
    return page.render(
        "backfill.html", task=task_from_proto(got.task), since=since, until=until,
        occurrences=occurrences[:PREVIEW_LIMIT], total=len(occurrences),
        existing=done.existing, created=[run_from_proto(run) for run in done.created],
        confirmed=confirm,
    )  # fmt: skip
