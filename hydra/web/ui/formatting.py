"""How values look on the pages: times, states, triggers, durations (Jinja filters)."""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from markupsafe import Markup

from hydra.domain import After, At, Attempt, Cron, Interval, Retention, Trigger
from hydra.spec import format_duration, retention_in_words
from hydra.web.ui.cronwords import cron_words

NONE = "—"


def iso(value: datetime) -> str:
    """ISO 8601 in UTC with a ``Z``: what forms, URLs and <time> carry."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def when(value: datetime | None) -> Markup:
    """A <time> element in UTC; static/app.js shows it in the browser's zone, UTC on hover."""
    if value is None:
        return Markup(NONE)
    utc = value.astimezone(UTC)
    shown = utc.strftime("%Y-%m-%d %H:%M:%S UTC")
    return Markup('<time datetime="{}" title="{}">{}</time>').format(iso(utc), shown, shown)


def state_class(state: object) -> str:
    """The CSS class of a state badge: ``state-succeeded``."""
    return f"state-{str(state).lower().replace('_', '-')}"


def duration(value: timedelta | None) -> str:
    return NONE if value is None else format_duration(value)


def span(start: datetime | None, end: datetime | None) -> str:
    """How long from ``start`` to ``end``, for people: ``1.2s``, ``3m04s``."""
    if start is None or end is None:
        return NONE
    seconds = max((end - start).total_seconds(), 0.0)
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def trigger_words(trigger: Trigger) -> str:
    """A trigger in words: "every day at 02:30 Australia/Sydney", "after ingest"."""
    if isinstance(trigger, Cron):
        return cron_words(trigger.expression, trigger.timezone)
    if isinstance(trigger, Interval):
        return f"every {format_duration(trigger.every)}"
    if isinstance(trigger, At):
        return f"once at {trigger.at.astimezone(UTC):%Y-%m-%d %H:%M UTC}"
    assert isinstance(trigger, After)
    return "after " + ", ".join(trigger.tasks)


def ending(attempt: Attempt) -> str:
    """How an attempt's process ended: "exit 0", "signal 9", or nothing yet."""
    if attempt.exit_code is not None:
        return f"exit {attempt.exit_code}"
    if attempt.signal is not None:
        return f"signal {attempt.signal}"
    return NONE


def argv(values: tuple[str, ...]) -> str:
    """An argv as a shell would read it back (quoted where needed)."""
    return shlex.join(values)


def pairs(values: Mapping[str, object]) -> str:
    return ", ".join(f"{key}={value}" for key, value in sorted(values.items())) or NONE


def outputs(text: str) -> str:
    """A run's outputs as indented JSON (as stored when it is not JSON)."""
    try:
        return json.dumps(json.loads(text), indent=2, sort_keys=True)
    except ValueError:
        return text


def retention_words(retention: Retention | None) -> str:
    """The retention that applies, in words."""
    return NONE if retention is None else retention_in_words(retention)


FILTERS = {
    "when": when,
    "state_class": state_class,
    "duration": duration,
    "span": span,
    "trigger_words": trigger_words,
    "ending": ending,
    "argv": argv,
    "pairs": pairs,
    "outputs": outputs,
    "retention_words": retention_words,
    "iso": iso,
}
