"""Coordinators that record themselves alive. Every function works in the
caller's transaction."""

from __future__ import annotations

from datetime import timedelta

from hydra.coordinator.store.rows import coordinator_from_row
from hydra.coordinator.store.transaction import Transaction
from hydra.domain import Coordinator


async def register(
    tx: Transaction,
    coordinator_id: str,
    address: str,
    version: str,
    *,
    insecure: bool = False,
    tls: bool = False,
) -> None:
    """Record this coordinator as alive (called periodically), and how it serves."""
    await tx.execute(
        "register_coordinator",
        id=coordinator_id,
        address=address,
        version=version,
        insecure=insecure,
        tls=tls,
    )


async def list_alive(tx: Transaction, window: timedelta) -> list[Coordinator]:
    """Coordinators that recorded themselves alive within the window."""
    rows = await tx.all("list_coordinators", window=window)
    return [coordinator_from_row(r) for r in rows]


async def forget_dead(tx: Transaction, window: timedelta) -> None:
    """Forget coordinators silent for longer than the window; disconnect their agents."""
    await tx.execute("forget_dead_coordinators", window=window)


async def unregister(tx: Transaction, coordinator_id: str) -> None:
    """This coordinator stops; its agents are disconnected from it."""
    await tx.execute("disconnect_agents_of_coordinator", id=coordinator_id)
    await tx.execute("unregister_coordinator", id=coordinator_id)
