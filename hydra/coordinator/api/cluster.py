"""ClusterService: coordinators and agents at a glance."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import grpc

from hydra.coordinator.api import caller
from hydra.coordinator.api.errors import unary
from hydra.coordinator.store import Database, agents, cluster
from hydra.v1 import cluster_service_pb2 as pb
from hydra.v1 import cluster_service_pb2_grpc as pb_grpc
from hydra.wire import agent_to_proto, coordinator_to_proto

Context = grpc.aio.ServicerContext[Any, Any]


class ClusterApi(pb_grpc.ClusterServiceServicer):
    """The state of the cluster as a whole."""

    def __init__(self, database: Database, coordinator_id: str, alive_window: timedelta) -> None:
        self._db = database
        self._coordinator_id = coordinator_id
        self._alive_window = alive_window

    @unary
    async def Status(
        self, request: pb.ClusterStatusRequest, context: Context
    ) -> pb.ClusterStatusResponse:
        async with self._db.transaction() as tx:
            coordinators = await cluster.list_alive(tx, self._alive_window)
            connected = await agents.list_agents(tx, include_disconnected=False)
        return pb.ClusterStatusResponse(
            coordinators=[coordinator_to_proto(c) for c in coordinators],
            agents=[agent_to_proto(a) for a in connected],
            answered_by=self._coordinator_id,
            caller=_identity(caller.current()),
        )


def _identity(who: caller.Caller) -> pb.CallerIdentity:
    """The caller as the response tells it (name, role, scope; nothing secret)."""
    return pb.CallerIdentity(name=who.name, role=who.role.value, scope=who.scope)
