"""The Hydra agent: runs attempts on its host for a coordinator.

``hydra agent`` calls :func:`run_agent`; tests and embedders can drive an
:class:`AgentDaemon` directly.
"""

from __future__ import annotations

from hydra.agent.daemon import AgentConfig, AgentDaemon, run_agent

__all__ = ["AgentConfig", "AgentDaemon", "run_agent"]
