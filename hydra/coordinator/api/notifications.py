"""NotificationService: the outbox of webhook deliveries and how each went."""

from __future__ import annotations

from typing import Any

import grpc

from hydra.coordinator.api import scope
from hydra.coordinator.api.errors import unary
from hydra.coordinator.api.paging import decode_token, encode_token, page_size
from hydra.coordinator.store import Database, outbox
from hydra.errors import InvalidArgument
from hydra.v1 import notification_service_pb2 as pb
from hydra.v1 import notification_service_pb2_grpc as pb_grpc
from hydra.wire import notification_state_from_proto, notification_to_proto

Context = grpc.aio.ServicerContext[Any, Any]

DEFAULT_PAGE = 100


class NotificationApi(pb_grpc.NotificationServiceServicer):
    """Notifications, for viewers; a scoped credential sees its tasks' only."""

    def __init__(self, database: Database) -> None:
        self._db = database

    @unary
    async def List(
        self, request: pb.ListNotificationsRequest, context: Context
    ) -> pb.ListNotificationsResponse:
        limit = page_size(request.page_size, DEFAULT_PAGE)
        if request.task:
            scope.check_task(request.task)
        state = notification_state_from_proto(request.state)
        found = await self._db.run(
            outbox.list_notifications,
            task=request.task,
            prefix=scope.scope(),
            state=state.value if state else "",
            before=_cursor(request.page_token),
            limit=limit + 1,
        )
        token = encode_token(str(found[limit - 1].id)) if len(found) > limit else ""
        return pb.ListNotificationsResponse(
            notifications=[notification_to_proto(n) for n in found[:limit]],
            next_page_token=token,
        )


def _cursor(token: str) -> int | None:
    if not token:
        return None
    try:
        return int(decode_token(token))
    except ValueError:
        raise InvalidArgument("malformed page token", path="page_token") from None
