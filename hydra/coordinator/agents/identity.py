"""Agents bound to their identity: a Hello must fit the agent's credential.

An agent credential names the one agent id it connects as, and may fix the
labels its agent announces and the most capacity it may offer; a Hello that
claims more is refused, so a task's runs (matched on labels) only reach agents
whose credential allows its selector's labels. Without authentication
(``--insecure``) the caller is ANONYMOUS, which names no agent: nothing is checked.
"""

from __future__ import annotations

from hydra.coordinator.api.caller import Caller
from hydra.domain import Role
from hydra.v1 import agent_service_pb2 as pb


def identity_problem(caller: Caller, hello: pb.Hello) -> str | None:
    """Why `caller` may not connect with this Hello, or None if it may."""
    if caller.role is not Role.AGENT or caller.agent_id is None:
        return None
    if hello.agent_id != caller.agent_id:
        return (
            f"credential {caller.name!r} is for agent {caller.agent_id!r}; "
            f"it cannot connect as agent {hello.agent_id!r}"
        )
    if caller.labels is not None and dict(hello.labels) != caller.labels:
        return (
            f"agent {hello.agent_id!r} announced labels {_pairs(dict(hello.labels))}; "
            f"credential {caller.name!r} allows exactly {_pairs(caller.labels)}"
        )
    if caller.max_capacity is not None and hello.capacity > caller.max_capacity:
        return (
            f"agent {hello.agent_id!r} announced capacity {hello.capacity}; "
            f"credential {caller.name!r} allows at most {caller.max_capacity}"
        )
    return None


def _pairs(labels: dict[str, str]) -> str:
    return "{" + ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) + "}" if labels else "{}"
