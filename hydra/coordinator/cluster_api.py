"""ClusterService: coordinators and agents at a glance."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import grpc

from hydra.coordinator.api_errors import unary
from hydra.coordinator.lease_store import LeaseStore
from hydra.v1 import cluster_service_pb2 as pb
from hydra.v1 import cluster_service_pb2_grpc as pb_grpc
from hydra.wire import agent_to_proto, coordinator_to_proto

Context = grpc.aio.ServicerContext[Any, Any]


class ClusterApi(pb_grpc.ClusterServiceServicer):
    """The state of the cluster as a whole."""

    def __init__(self, store: LeaseStore, coordinator_id: str, alive_window: timedelta) -> None:
        self._store = store
        self._coordinator_id = coordinator_id
        self._alive_window = alive_window

    @unary
    async def Status(
        self, request: pb.ClusterStatusRequest, context: Context
    ) -> pb.ClusterStatusResponse:
        coordinators = await self._store.list_coordinators(self._alive_window)
        agents = await self._store.list_agents(include_disconnected=False)
        return pb.ClusterStatusResponse(
            coordinators=[coordinator_to_proto(c) for c in coordinators],
            agents=[agent_to_proto(a) for a in agents],
            answered_by=self._coordinator_id,
        )
