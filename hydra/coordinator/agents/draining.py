"""Draining an agent on request (``hydractl agents drain``): one transaction marks
it draining, tells the coordinator that holds its stream, and records the audit
entry of the call (None: not recorded)."""

from __future__ import annotations

from dataclasses import replace

from hydra.coordinator.store import Database, agents, audit
from hydra.domain import Agent, AuditEntry


async def drain(
    database: Database, agent_id: str, *, audit_entry: AuditEntry | None = None
) -> Agent:
    """Mark an agent draining: it takes no new leases and exits when its attempts end."""
    async with database.transaction() as tx:
        agent = await agents.drain(tx, agent_id)
        if audit_entry is not None:
            detail = f"agent {agent.id}, {agent.active_runs} active runs"
            await audit.record(tx, replace(audit_entry, detail=detail))
        return agent
