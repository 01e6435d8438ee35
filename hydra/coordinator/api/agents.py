"""AgentService: the agents' stream, and listing/draining agents."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from hydra.coordinator.agents import draining
from hydra.coordinator.agents.stream import AgentStreams
from hydra.coordinator.api.audit import call_entry, failures_recorded
from hydra.coordinator.api.errors import status_of, unary
from hydra.coordinator.store import Database, agents
from hydra.errors import HydraError, InvalidArgument
from hydra.v1 import agent_service_pb2 as pb
from hydra.v1 import agent_service_pb2_grpc as pb_grpc
from hydra.wire import agent_to_proto

Context = grpc.aio.ServicerContext[Any, Any]


class AgentApi(pb_grpc.AgentServiceServicer):
    """Agents: the stream they work over, and their management."""

    def __init__(self, database: Database, streams: AgentStreams) -> None:
        self._db = database
        self._streams = streams

    async def Connect(
        self, request_iterator: AsyncIterator[pb.AgentMessage], context: Context
    ) -> AsyncIterator[pb.CoordinatorMessage]:
        try:
            async for message in self._streams.serve(request_iterator, context):
                yield message
        except HydraError as error:  # e.g. the database is down: UNAVAILABLE, try again
            await context.abort(status_of(error), error.message)

    @unary
    async def List(self, request: pb.ListAgentsRequest, context: Context) -> pb.ListAgentsResponse:
        found = await self._db.run(
            agents.list_agents, include_disconnected=request.include_disconnected
        )
        return pb.ListAgentsResponse(agents=[agent_to_proto(a) for a in found])

    @unary
    async def Drain(self, request: pb.DrainAgentRequest, context: Context) -> pb.DrainAgentResponse:
        entry = call_entry(context, "AgentService/Drain")
        async with failures_recorded(self._db, entry):
            if not request.agent_id:
                raise InvalidArgument("required", path="agent_id")
            agent = await draining.drain(self._db, request.agent_id, audit_entry=entry)
        return pb.DrainAgentResponse(agent=agent_to_proto(agent))
