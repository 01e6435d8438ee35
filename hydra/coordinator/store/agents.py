"""Agents as the cluster knows them. Every function works in the caller's transaction."""

from __future__ import annotations

from collections.abc import Mapping

from psycopg.types.json import Jsonb

from hydra.coordinator.agents.commands import AgentCommand
from hydra.coordinator.store.rows import agent_from_row
from hydra.coordinator.store.transaction import Transaction
from hydra.domain import Agent
from hydra.errors import NotFound


async def connect(
    tx: Transaction,
    *,
    agent_id: str,
    hostname: str,
    labels: Mapping[str, str],
    capacity: int,
    version: str,
    draining: bool,
    coordinator_id: str,
) -> None:
    """Record an agent as connected to this coordinator."""
    await tx.execute(
        "upsert_agent",
        id=agent_id,
        hostname=hostname,
        labels=Jsonb(dict(labels)),
        capacity=capacity,
        version=version,
        state="draining" if draining else "connected",
        coordinator_id=coordinator_id,
    )


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
