"""Notifications: the outbox's rows and their states."""

from __future__ import annotations

from hydra.domain import Notification, NotificationState, NotifyEvent
from hydra.errors import InvalidArgument
from hydra.v1 import notification_service_pb2 as pb
from hydra.wire._states import _NOTIFY_EVENTS, _NOTIFY_EVENTS_BACK, _inverse
from hydra.wire._times import optional_timestamp, to_timestamp

_NOTIFICATION_STATES = {
    state: pb.NotificationState.Value(f"NOTIFICATION_STATE_{state.name}")
    for state in NotificationState
}
_NOTIFICATION_STATES_BACK = _inverse(_NOTIFICATION_STATES)


def notification_state_to_proto(
    state: NotificationState | None,
) -> pb.NotificationState.ValueType:
    """The proto enum value of a notification state (None: unspecified)."""
    return pb.NOTIFICATION_STATE_UNSPECIFIED if state is None else _NOTIFICATION_STATES[state]


def notification_state_from_proto(value: int, path: str = "state") -> NotificationState | None:
    """The state of a proto enum value; unspecified is None.

    Raises:
        InvalidArgument: an unknown value, naming `path`.
    """
    if value == pb.NOTIFICATION_STATE_UNSPECIFIED:
        return None
    if value not in _NOTIFICATION_STATES_BACK:
        raise InvalidArgument(f"unknown notification state {value}", path=path)
    return _NOTIFICATION_STATES_BACK[value]


def notification_to_proto(notification: Notification) -> pb.Notification:
    """The proto of a stored notification."""
    return pb.Notification(
        id=notification.id,
        event_id=notification.event_id,
        event=_NOTIFY_EVENTS[NotifyEvent(notification.event)],
        task=notification.task,
        run_id=notification.run_id or "",
        occurrence=to_timestamp(notification.occurrence),
        webhook=notification.webhook,
        from_defaults=notification.from_defaults,
        url=notification.url,
        state=_NOTIFICATION_STATES[notification.state],
        attempts=notification.attempts,
        last_error=notification.last_error,
        created_at=to_timestamp(notification.created_at),
        finished_at=to_timestamp(notification.finished_at),
    )


def notification_from_proto(message: pb.Notification) -> Notification:
    """The notification a proto describes."""
    occurrence = optional_timestamp(message, "occurrence")
    created_at = optional_timestamp(message, "created_at")
    assert occurrence is not None and created_at is not None  # always set by coordinators
    return Notification(
        id=message.id,
        event_id=message.event_id,
        event=_NOTIFY_EVENTS_BACK[message.event],
        task=message.task,
        run_id=message.run_id or None,
        occurrence=occurrence,
        webhook=message.webhook,
        from_defaults=message.from_defaults,
        url=message.url,
        state=_NOTIFICATION_STATES_BACK[message.state],
        attempts=message.attempts,
        last_error=message.last_error,
        created_at=created_at,
        finished_at=optional_timestamp(message, "finished_at"),
    )
