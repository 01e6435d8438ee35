"""Times: aware ``datetime`` ↔ ``Timestamp`` and ``timedelta`` ↔ ``Duration``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import overload

from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

# --- times ----------------------------------------------------------------------------


@overload
def to_timestamp(instant: datetime) -> Timestamp: ...
@overload
def to_timestamp(instant: None) -> None: ...
def to_timestamp(instant: datetime | None) -> Timestamp | None:
    """The Timestamp of an aware datetime; ``None`` stays ``None`` (an unset field).

    Raises:
        ValueError: ``instant`` is naive.
    """
    if instant is None:
        return None
    if instant.utcoffset() is None:
        raise ValueError(f"naive datetime {instant!r}: Hydra times are aware")
    timestamp = Timestamp()
    timestamp.FromDatetime(instant.astimezone(UTC))
    return timestamp


def from_timestamp(timestamp: Timestamp) -> datetime:
    """The aware UTC datetime of a Timestamp (microsecond precision)."""
    return timestamp.ToDatetime(tzinfo=UTC)


@overload
def to_duration(duration: timedelta) -> Duration: ...
@overload
def to_duration(duration: None) -> None: ...
def to_duration(duration: timedelta | None) -> Duration | None:
    """The Duration of a timedelta; ``None`` stays ``None`` (an unset field)."""
    if duration is None:
        return None
    message = Duration()
    message.FromTimedelta(duration)
    return message


def from_duration(duration: Duration) -> timedelta:
    """The timedelta of a Duration (microsecond precision)."""
    return duration.ToTimedelta()


def optional_timestamp(message: Message, field: str) -> datetime | None:
    """The time in ``message.<field>``, or ``None`` when the field is unset."""
    return from_timestamp(getattr(message, field)) if message.HasField(field) else None


def optional_duration(message: Message, field: str) -> timedelta | None:
    """The duration in ``message.<field>``, or ``None`` when the field is unset."""
    return from_duration(getattr(message, field)) if message.HasField(field) else None
