"""Reading what forms and query strings send: instants, states, params.

Bad input is an InvalidArgument naming the field, shown as a 400 page.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from hydra.domain import RunState
from hydra.errors import InvalidArgument

#: Run states a filter may name, in the order the pages list them.
RUN_STATES = tuple(state.value for state in RunState)


def instant(text: str, field: str) -> datetime | None:
    """A time from a form: ``2026-11-27T02:00`` (a datetime-local input, read as UTC)
    or ISO 8601 with a zone; empty: None."""
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidArgument(
            f"{text[:40]!r} is not a time; use YYYY-MM-DDTHH:MM (UTC) or ISO 8601", path=field
        ) from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def run_state(text: str, field: str = "state") -> RunState | None:
    """A run state named in a filter; empty: None (any state)."""
    if not text:
        return None
    if text.upper() not in RUN_STATES:
        raise InvalidArgument(
            f"{text[:40]!r} is not a run state; use one of {', '.join(RUN_STATES)}", path=field
        )
    return RunState(text.upper())


def params(fields: Mapping[str, str], free_text: str) -> dict[str, str]:
    """Trigger parameters: the declared ones (fields ``param.NAME``) and free
    ``key=value`` lines, which win."""
    chosen = {
        name.removeprefix("param."): value
        for name, value in fields.items()
        if name.startswith("param.")
    }
    for number, line in enumerate(free_text.splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise InvalidArgument(f"line {number} ({line[:40]!r}) is not key=value", path="params")
        chosen[key.strip()] = value.strip()
    return chosen
