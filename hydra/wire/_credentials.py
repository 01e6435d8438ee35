"""Credentials on the wire (never their secrets: only CreateCredentialResponse has one)."""

from __future__ import annotations

from hydra.domain import Credential, Role
from hydra.errors import InvalidArgument
from hydra.v1 import credential_service_pb2 as pb
from hydra.wire._times import optional_timestamp, to_timestamp


def role_from_wire(text: str, path: str = "role") -> Role:
    """The role a request names.

    Raises:
        InvalidArgument: not one of the four roles (naming `path`).
    """
    try:
        return Role(text)
    except ValueError:
        names = ", ".join(role.value for role in Role)
        raise InvalidArgument(f"unknown role {text!r} (one of {names})", path=path) from None


def credential_to_proto(credential: Credential) -> pb.Credential:
    """The proto of a credential."""
    return pb.Credential(
        name=credential.name,
        role=credential.role.value,
        scope=credential.scope,
        agent_id=credential.agent_id or "",
        labels=dict(credential.labels or {}),
        has_labels=credential.labels is not None,
        max_capacity=credential.max_capacity,
        created_by=credential.created_by,
        created_at=to_timestamp(credential.created_at),
        expires_at=to_timestamp(credential.expires_at),
        revoked_at=to_timestamp(credential.revoked_at),
        last_used_at=to_timestamp(credential.last_used_at),
    )


def credential_from_proto(message: pb.Credential) -> Credential:
    """The credential a proto describes."""
    return Credential(
        name=message.name,
        role=role_from_wire(message.role),
        scope=message.scope,
        agent_id=message.agent_id or None,
        labels=dict(message.labels) if message.has_labels else None,
        max_capacity=message.max_capacity if message.HasField("max_capacity") else None,
        created_by=message.created_by,
        created_at=optional_timestamp(message, "created_at"),
        expires_at=optional_timestamp(message, "expires_at"),
        revoked_at=optional_timestamp(message, "revoked_at"),
        last_used_at=optional_timestamp(message, "last_used_at"),
    )
