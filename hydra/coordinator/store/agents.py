"""Agents as the cluster knows them. Every function works in the caller's transaction."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta

from psycopg.types.json import Jsonb

from hydra.coordinator.agents.commands import AgentCommand
from hydra.coordinator.store.rows import agent_from_row
from hydra.coordinator.store.transaction import Transaction
from hydra.domain import Agent
from hydra.errors import AlreadyExists, NotFound


async def connect(
    tx: Transaction,
    *,
    agent_id: str,
    instance_id: str,
    hostname: str,
    labels: Mapping[str, str],
    capacity: int,
    version: str,
    draining: bool,
    coordinator_id: str,
    ttl: timedelta,
) -> None:
    """Record an agent as connected to this coordinator.

    Raises:
        AgentIdInUse: another instance of the agent (another process with its id)
            has a live session: not disconnected, and heard from within `ttl`.
            Nothing was changed.
    """
    row = await tx.one(
        "upsert_agent",
        id=agent_id,
        instance_id=instance_id,
        hostname=hostname,
        labels=Jsonb(dict(labels)),
        capacity=capacity,
        version=version,
        state="draining" if draining else "connected",
        coordinator_id=coordinator_id,
        ttl=ttl,
    )
    if row is None:
        holder = await tx.one("agent_holder", id=agent_id)
        assert holder is not None  # the conflicting row is locked by the upsert
        raise AgentIdInUse(agent_id, holder["coordinator_id"] or "", holder["address"])


class AgentIdInUse(AlreadyExists):
    """Another agent process with this id is connected."""

    def __init__(self, agent_id: str, coordinator_id: str, address: str | None = None) -> None:
        where = f"{coordinator_id!r}" + (f" ({address})" if address else "")
        super().__init__(f"agent id {agent_id!r} is already connected to coordinator {where}")
        self.agent_id = agent_id
        self.coordinator_id = coordinator_id


async def disconnect(tx: Transaction, agent_id: str, coordinator_id: str) -> None:
    """The agent's stream to this coordinator ended."""
    await tx.execute("disconnect_agent", id=agent_id, coordinator_id=coordinator_id)


async def list_agents(tx: Transaction, *, include_disconnected: bool) -> list[Agent]:
    """Known agents."""
    rows = await tx.all("list_agents", include_disconnected=include_disconnected)
    return [agent_from_row(row) for row in rows]


async def drain(tx: Transaction, agent_id: str) -> Agent:
    """Mark an agent draining and tell the coordinator it is connected to."""
    if await tx.one("set_agent_draining", id=agent_id) is None:
        raise NotFound(f"agent {agent_id!r} not found or not connected")
    await tx.execute("notify_agent_command", payload=AgentCommand.drain(agent_id).encode())
    row = await tx.one("get_agent", id=agent_id)
    assert row is not None
    return agent_from_row(row)
