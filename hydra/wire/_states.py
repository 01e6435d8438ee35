"""Enums: domain members ↔ proto enum values, run and attempt states among them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from hydra.domain import (
    AttemptOutcome,
    AttemptState,
    Catchup,
    NotifyEvent,
    OnTimeout,
    Overlap,
    RunState,
)
from hydra.errors import InvalidArgument
from hydra.v1 import agent_service_pb2 as agent_pb
from hydra.v1 import types_pb2 as pb

_D = TypeVar("_D")

# --- enums ------------------------------------------------------------------------------

_RUN_STATES = {state: pb.RunState.Value(f"RUN_STATE_{state.name}") for state in RunState}
_ATTEMPT_STATES = {
    state: pb.AttemptState.Value(f"ATTEMPT_STATE_{state.name}") for state in AttemptState
}
_OVERLAPS = {overlap: pb.Overlap.Value(f"OVERLAP_{overlap.name}") for overlap in Overlap}
_CATCHUPS = {catchup: pb.Catchup.Value(f"CATCHUP_{catchup.name}") for catchup in Catchup}
_OUTCOMES = {
    outcome: agent_pb.AttemptOutcome.Value(f"ATTEMPT_OUTCOME_{outcome.name}")
    for outcome in AttemptOutcome
}
_ON_TIMEOUTS = {choice: pb.OnTimeout.Value(f"ON_TIMEOUT_{choice.name}") for choice in OnTimeout}
_NOTIFY_EVENTS = {
    event: pb.NotifyEvent.Value(f"NOTIFY_EVENT_{event.name}") for event in NotifyEvent
}


def _inverse(mapping: Mapping[_D, int]) -> dict[int, _D]:
    return {number: member for member, number in mapping.items()}


_RUN_STATES_BACK = _inverse(_RUN_STATES)
_ATTEMPT_STATES_BACK = _inverse(_ATTEMPT_STATES)
_OVERLAPS_BACK = _inverse(_OVERLAPS)
_CATCHUPS_BACK = _inverse(_CATCHUPS)
_ON_TIMEOUTS_BACK = _inverse(_ON_TIMEOUTS)
_OUTCOMES_BACK = _inverse(_OUTCOMES)
_NOTIFY_EVENTS_BACK = _inverse(_NOTIFY_EVENTS)


def outcome_to_proto(outcome: AttemptOutcome) -> agent_pb.AttemptOutcome.ValueType:
    """The proto enum value of an attempt's outcome."""
    return _OUTCOMES[AttemptOutcome(outcome)]


def outcome_from_proto(value: int) -> AttemptOutcome:
    """The outcome an agent reported; one this coordinator does not know (a newer
    agent's, or unspecified) counts as FAILED, so the attempt is never taken for
    a success."""
    return _OUTCOMES_BACK.get(value, AttemptOutcome.FAILED)


def run_state_to_proto(state: RunState) -> pb.RunState.ValueType:
    """The proto enum value of a run state."""
    return _RUN_STATES[RunState(state)]


def run_state_from_proto(value: int, path: str = "state") -> RunState:
    """The run state of a proto enum value.

    Raises:
        InvalidArgument: ``value`` is ``RUN_STATE_UNSPECIFIED`` or unknown.
    """
    return _member(_RUN_STATES_BACK, value, path)


def attempt_state_to_proto(state: AttemptState) -> pb.AttemptState.ValueType:
    """The proto enum value of an attempt state."""
    return _ATTEMPT_STATES[AttemptState(state)]


def attempt_state_from_proto(value: int, path: str = "state") -> AttemptState:
    """The attempt state of a proto enum value.

    Raises:
        InvalidArgument: ``value`` is ``ATTEMPT_STATE_UNSPECIFIED`` or unknown.
    """
    return _member(_ATTEMPT_STATES_BACK, value, path)


def _member(members: Mapping[int, _D], value: int, path: str) -> _D:
    try:
        return members[value]
    except KeyError:
        raise InvalidArgument(f"unknown or unspecified value {value}", path) from None
