"""Translation between ``hydra.v1`` messages and domain types, in one place.

gRPC handlers and the client call these functions at the edge; no protobuf
object travels further in. Unset proto fields become the domain's defaults
(or ``None`` where the domain has "unset"), and every spec that comes off the
wire is validated with ``hydra.spec``.
"""

from __future__ import annotations

from hydra.wire._audit import audit_entry_from_proto, audit_entry_to_proto
from hydra.wire._credentials import credential_from_proto, credential_to_proto, role_from_wire
from hydra.wire._notifications import (
    notification_from_proto,
    notification_state_from_proto,
    notification_state_to_proto,
    notification_to_proto,
)
from hydra.wire._records import (
    agent_from_proto,
    agent_to_proto,
    attempt_from_proto,
    attempt_to_proto,
    coordinator_from_proto,
    coordinator_to_proto,
    explanation_from_proto,
    explanation_to_proto,
    run_from_proto,
    run_to_proto,
    task_from_proto,
    task_to_proto,
    task_version_from_proto,
    task_version_to_proto,
    verdict_from_proto,
    verdict_to_proto,
)
from hydra.wire._specs import (
    precondition_to_proto,
    task_spec_from_proto,
    task_spec_to_proto,
    webhook_to_proto,
)
from hydra.wire._states import (
    attempt_state_from_proto,
    attempt_state_to_proto,
    outcome_from_proto,
    outcome_to_proto,
    run_state_from_proto,
    run_state_to_proto,
)
from hydra.wire._times import (
    from_duration,
    from_timestamp,
    optional_duration,
    optional_timestamp,
    to_duration,
    to_timestamp,
)

__all__ = [
    "agent_from_proto",
    "agent_to_proto",
    "attempt_from_proto",
    "attempt_state_from_proto",
    "attempt_state_to_proto",
    "attempt_to_proto",
    "audit_entry_from_proto",
    "audit_entry_to_proto",
    "coordinator_from_proto",
    "coordinator_to_proto",
    "credential_from_proto",
    "credential_to_proto",
    "explanation_from_proto",
    "explanation_to_proto",
    "from_duration",
    "from_timestamp",
    "notification_from_proto",
    "notification_state_from_proto",
    "notification_state_to_proto",
    "notification_to_proto",
    "optional_duration",
    "optional_timestamp",
    "outcome_from_proto",
    "outcome_to_proto",
    "precondition_to_proto",
    "role_from_wire",
    "run_from_proto",
    "run_state_from_proto",
    "run_state_to_proto",
    "run_to_proto",
    "task_from_proto",
    "task_spec_from_proto",
    "task_spec_to_proto",
    "task_to_proto",
    "task_version_from_proto",
    "task_version_to_proto",
    "to_duration",
    "to_timestamp",
    "verdict_from_proto",
    "verdict_to_proto",
    "webhook_to_proto",
]
