"""Entries of the audit log."""

from __future__ import annotations

from hydra.domain import AuditEntry
from hydra.v1 import audit_service_pb2 as pb
from hydra.wire._times import optional_timestamp, to_timestamp


def audit_entry_to_proto(entry: AuditEntry) -> pb.AuditEntry:
    """The proto of a stored audit entry (None becomes empty or unset)."""
    return pb.AuditEntry(
        id=entry.id or 0,
        at=to_timestamp(entry.at),
        who=entry.who,
        role=entry.role,
        action=entry.action,
        task=entry.task or "",
        run_id=entry.run_id or "",
        peer=entry.peer,
        outcome=entry.outcome,
        detail=entry.detail,
    )


def audit_entry_from_proto(message: pb.AuditEntry) -> AuditEntry:
    """The audit entry a proto describes (empty task and run become None)."""
    return AuditEntry(
        id=message.id or None,
        at=optional_timestamp(message, "at"),
        who=message.who,
        role=message.role,
        action=message.action,
        task=message.task or None,
        run_id=message.run_id or None,
        peer=message.peer,
        outcome=message.outcome,
        detail=message.detail,
    )
