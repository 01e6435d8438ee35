"""Credentials for tests of security: made with database access, as the operator's
bootstrap makes them (`hydra credentials create`), and secured coordinators."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import datetime

from hydra.coordinator.credentials import create_credential
from hydra.domain import Role


def make_credential(
    conninfo: str,
    name: str,
    role: Role | str,
    *,
    scope: str = "",
    expires_at: datetime | None = None,
    agent_id: str | None = None,
    labels: Mapping[str, str] | None = None,
    max_capacity: int | None = None,
) -> str:
    """Create a credential in the database at `conninfo`; its secret."""
    created = asyncio.run(
        create_credential(
            conninfo,
            name=name,
            role=Role(role),
            created_by="tests",
            scope=scope,
            expires_at=expires_at,
            agent_id=agent_id,
            labels=labels,
            max_capacity=max_capacity,
        )
    )
    return created.secret
