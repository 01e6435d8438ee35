"""The canonical form of a spec: ``task_to_dict``, the inverse of ``task_from_dict``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hydra.domain import (
    After,
    At,
    Catchup,
    CommandCheck,
    Concurrency,
    Cron,
    FileCheck,
    HttpCheck,
    Interval,
    OnTimeout,
    Overlap,
    Precondition,
    Retention,
    Retry,
    SecretRef,
    TaskSpec,
    TcpCheck,
    Trigger,
    Webhook,
)
from hydra.spec._durations import format_duration

# --- the canonical form -------------------------------------------------------------


def task_to_dict(spec: TaskSpec) -> dict[str, Any]:
    """The canonical, JSON-serialisable YAML shape of a valid spec.

    Every field is present (defaults and ``None`` too), keys are sorted,
    durations are ``format_duration`` text and instants ISO 8601 in UTC with a
    ``Z``; so two equal specs give equal dicts, and
    ``task_from_dict(task_to_dict(spec)) == spec``.
    """
    shape = {
        "name": spec.name,
        "description": spec.description,
        "command": list(spec.command),
        "shell": spec.shell,
        "env": {key: _env_value(value) for key, value in spec.env.items()},
        "params": dict(spec.params),
        "workdir": spec.workdir,
        "timeout": _duration_text(spec.timeout),
        "retry": _retry_to_dict(spec.retry),
        "triggers": [_trigger_to_dict(trigger) for trigger in spec.triggers],
        "preconditions": [_precondition_to_dict(check) for check in spec.preconditions],
        "poke_interval": format_duration(spec.poke_interval),
        "precondition_timeout": _duration_text(spec.precondition_timeout),
        "on_timeout": OnTimeout(spec.on_timeout).value,
        "selector": dict(spec.selector),
        "concurrency": _concurrency_to_dict(spec.concurrency),
        "catchup": Catchup(spec.catchup).value,
        "max_catchup": spec.max_catchup,
        "starting_deadline": _duration_text(spec.starting_deadline),
        "notify": [webhook_to_dict(webhook) for webhook in spec.notify],
        "deadline": _duration_text(spec.deadline),
        "retention": retention_to_dict(spec.retention),
    }
    return {key: _sorted(shape[key]) for key in sorted(shape)}


def _env_value(value: str | SecretRef) -> str | dict[str, str]:
    """A plain value as it is; a secret reference as ``{secret: NAME}``, never its value."""
    return {"secret": value.name} if isinstance(value, SecretRef) else value


def webhook_to_dict(webhook: Webhook) -> dict[str, Any]:
    """The canonical YAML shape of a webhook: secrets by name only."""
    shape = {
        "on": [event.value for event in webhook.on],
        "webhook": _env_value(webhook.url),
        "headers": {key: _env_value(value) for key, value in webhook.headers.items()},
        "body": webhook.body,
        "sign": None if webhook.sign is None else _env_value(webhook.sign),
    }
    return {key: _sorted(shape[key]) for key in sorted(shape)}


def _sorted(value: Any) -> Any:
    """``value`` with the keys of every mapping in it sorted."""
    if isinstance(value, dict):
        return {key: _sorted(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_sorted(item) for item in value]
    return value


def _duration_text(duration: timedelta | None) -> str | None:
    return None if duration is None else format_duration(duration)


def _datetime_text(instant: datetime | None) -> str | None:
    if instant is None:
        return None
    return instant.astimezone(UTC).isoformat().removesuffix("+00:00") + "Z"


def _retry_to_dict(retry: Retry) -> dict[str, Any]:
    return {
        "max_attempts": retry.max_attempts,
        "backoff": format_duration(retry.backoff),
        "max_backoff": format_duration(retry.max_backoff),
        "multiplier": float(retry.multiplier),
    }


def retention_to_dict(retention: Retention) -> dict[str, Any]:
    """A retention's canonical shape; ``None`` where it says nothing."""
    return {
        "max_age": _duration_text(retention.max_age),
        "keep_last": retention.keep_last,
        "output_max_age": _duration_text(retention.output_max_age),
    }


def _concurrency_to_dict(concurrency: Concurrency) -> dict[str, Any]:
    overlap = Overlap(concurrency.overlap).value
    return {"max_active_runs": concurrency.max_active_runs, "overlap": overlap}


def _trigger_to_dict(trigger: Trigger) -> dict[str, Any]:
    match trigger:
        case Cron():
            return {"cron": trigger.expression, "timezone": trigger.timezone}
        case Interval():
            every = format_duration(trigger.every)
            return {"interval": every, "anchor": _datetime_text(trigger.anchor)}
        case At():
            return {"at": _datetime_text(trigger.at)}
        case After():
            return {"after": list(trigger.tasks)}
    raise TypeError(f"not a trigger: {trigger!r}")


def _precondition_to_dict(check: Precondition) -> dict[str, Any]:
    timeout = format_duration(check.timeout)
    match check:
        case CommandCheck():
            return {"command": list(check.argv), "timeout": timeout}
        case FileCheck():
            min_age = _duration_text(check.min_age)
            return {"file": check.path, "min_age": min_age, "timeout": timeout}
        case HttpCheck():
            return {"http": check.url, "timeout": timeout}
        case TcpCheck():
            host = f"[{check.host}]" if ":" in check.host else check.host
            return {"tcp": f"{host}:{check.port}", "timeout": timeout}
    raise TypeError(f"not a precondition: {check!r}")
