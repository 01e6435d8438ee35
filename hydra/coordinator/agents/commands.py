"""Commands about an agent that travel between coordinators (``hydra_agent_command``):
the coordinator that holds the agent's stream carries them out."""

from __future__ import annotations

import enum
import json
import logging
from dataclasses import dataclass

from hydra.domain import LeaseKey

log = logging.getLogger("hydra.coordinator.agents")


class Verb(enum.StrEnum):
    """What to tell the agent."""

    #: Take no new leases (hydractl agents drain).
    DRAIN = "drain"
    #: Kill the attempt under this lease (the run was cancelled).
    CANCEL = "cancel"


@dataclass(frozen=True, kw_only=True, slots=True)
class AgentCommand:
    """One command for the coordinator holding `agent_id`'s stream."""

    verb: Verb
    agent_id: str
    lease: LeaseKey | None = None

    @classmethod
    def drain(cls, agent_id: str) -> AgentCommand:
        """Drain the agent."""
        return cls(verb=Verb.DRAIN, agent_id=agent_id)

    @classmethod
    def cancel(cls, agent_id: str, lease: LeaseKey) -> AgentCommand:
        """Kill the attempt under `lease` on the agent."""
        return cls(verb=Verb.CANCEL, agent_id=agent_id, lease=lease)

    def encode(self) -> str:
        """The notification payload (JSON: any agent id travels intact)."""
        body: dict[str, object] = {"verb": self.verb.value, "agent": self.agent_id}
        if self.lease is not None:
            body["run"], body["token"] = self.lease
        return json.dumps(body, separators=(",", ":"))

    @classmethod
    def decode(cls, payload: str) -> AgentCommand | None:
        """The command in a payload; None (logged) for one that is not."""
        try:
            body = json.loads(payload)
            verb = Verb(body["verb"])
            lease = LeaseKey(str(body["run"]), int(body["token"])) if verb is Verb.CANCEL else None
            return cls(verb=verb, agent_id=str(body["agent"]), lease=lease)
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring a malformed agent command: %r", payload[:200])
            return None
