"""The cluster's pages: agents (with drain), coordinators, notifications, audit."""

from __future__ import annotations

from urllib.parse import quote

from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from hydra.domain import NotificationState
from hydra.errors import InvalidArgument
from hydra.v1 import agent_service_pb2 as agent_pb
from hydra.v1 import audit_service_pb2 as audit_pb
from hydra.v1 import cluster_service_pb2 as cluster_pb
from hydra.v1 import notification_service_pb2 as notification_pb
from hydra.web.ui.pages import Page, Ui, endpoint, see_other
from hydra.wire import (
    agent_from_proto,
    audit_entry_from_proto,
    coordinator_from_proto,
    notification_from_proto,
    notification_state_to_proto,
)

PAGE_SIZE = 100
NOTIFICATION_STATES = tuple(state.value for state in NotificationState)


def routes(ui: Ui) -> list[BaseRoute]:
    return [
        Route("/agents", endpoint(ui, _agents), methods=["GET"]),
        Route("/agents/{id}/drain", endpoint(ui, _drain), methods=["POST"]),
        Route("/cluster", endpoint(ui, _cluster), methods=["GET"]),
        Route("/notifications", endpoint(ui, _notifications), methods=["GET"]),
        Route("/audit", endpoint(ui, _audit), methods=["GET"]),
    ]


async def _agents(page: Page) -> Response:
    request = agent_pb.ListAgentsRequest(include_disconnected=True)
    listed = await page.call("AgentService", "List", request)
    agents = [agent_from_proto(message) for message in listed.agents]
    return page.render("agents.html", agents=agents)


async def _drain(page: Page) -> Response:
    agent_id = page.request.path_params["id"]
    await page.call("AgentService", "Drain", agent_pb.DrainAgentRequest(agent_id=agent_id))
    return see_other(f"/agents#agent-{quote(agent_id)}")


async def _cluster(page: Page) -> Response:
    status = await page.call("ClusterService", "Status", cluster_pb.ClusterStatusRequest())
    return page.render(
        "cluster.html",
        coordinators=[coordinator_from_proto(message) for message in status.coordinators],
        agents=[agent_from_proto(message) for message in status.agents],
        answered_by=status.answered_by,
        caller=status.caller,
    )


async def _notifications(page: Page) -> Response:
    state_text = page.field("state").lower()
    if state_text and state_text not in NOTIFICATION_STATES:
        choices = ", ".join(NOTIFICATION_STATES)
        problem = f"{state_text[:40]!r} is not a delivery state; use one of {choices}"
        raise InvalidArgument(problem, path="state")
    request = notification_pb.ListNotificationsRequest(
        task=page.field("task"), page_size=PAGE_SIZE, page_token=page.field("page"),
        state=notification_state_to_proto(NotificationState(state_text) if state_text else None),
    )  # fmt: skip
    listed = await page.call("NotificationService", "List", request)
    return page.render(
        "notifications.html",
        notifications=[notification_from_proto(message) for message in listed.notifications],
        next_token=listed.next_page_token,
        page_token=page.field("page"),
        filters={"task": page.field("task"), "state": state_text},
        states=NOTIFICATION_STATES,
    )


async def _audit(page: Page) -> Response:
    request = audit_pb.ListAuditRequest(
        who=page.field("who"), task=page.field("task"), page_size=PAGE_SIZE,
        page_token=page.field("page"),
    )  # fmt: skip
    listed = await page.call("AuditService", "List", request)
    return page.render(
        "audit.html",
        entries=[audit_entry_from_proto(message) for message in listed.entries],
        next_token=listed.next_page_token,
        page_token=page.field("page"),
        filters={"who": page.field("who"), "task": page.field("task")},
    )
