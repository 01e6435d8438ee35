"""Task specs with their triggers and preconditions; a spec off the wire is validated."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from google.protobuf.message import Message

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
    NotifyEvent,
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
from hydra.errors import FieldProblem
from hydra.spec import validate_parsed_task
from hydra.v1 import types_pb2 as pb
from hydra.wire._states import (
    _CATCHUPS,
    _CATCHUPS_BACK,
    _NOTIFY_EVENTS,
    _NOTIFY_EVENTS_BACK,
    _ON_TIMEOUTS,
    _ON_TIMEOUTS_BACK,
    _OVERLAPS,
    _OVERLAPS_BACK,
)
from hydra.wire._times import from_duration, from_timestamp, to_duration, to_timestamp

# --- task specs -------------------------------------------------------------------------


def task_spec_to_proto(spec: TaskSpec) -> pb.TaskSpec:
    """The proto of a valid spec; every field is set explicitly, defaults too."""
    return pb.TaskSpec(
        name=spec.name,
        description=spec.description,
        command=spec.command,
        shell=spec.shell,
        env=spec.plain_env,
        secret_env=spec.secret_env,
        params=spec.params,
        workdir=spec.workdir,
        timeout=to_duration(spec.timeout),
        retry=_retry_to_proto(spec.retry),
        triggers=[_trigger_to_proto(trigger) for trigger in spec.triggers],
        preconditions=[precondition_to_proto(check) for check in spec.preconditions],
        poke_interval=to_duration(spec.poke_interval),
        precondition_timeout=to_duration(spec.precondition_timeout),
        on_timeout=_ON_TIMEOUTS[OnTimeout(spec.on_timeout)],
        selector=spec.selector,
        concurrency=pb.Concurrency(
            max_active_runs=spec.concurrency.max_active_runs,
            overlap=_OVERLAPS[Overlap(spec.concurrency.overlap)],
        ),
        catchup=_CATCHUPS[Catchup(spec.catchup)],
        max_catchup=spec.max_catchup,
        starting_deadline=to_duration(spec.starting_deadline),
        notify=[webhook_to_proto(webhook) for webhook in spec.notify],
        deadline=to_duration(spec.deadline),
        retention=retention_to_proto(spec.retention),
    )


def webhook_to_proto(webhook: Webhook) -> pb.Webhook:
    """The proto of a webhook: secrets by name."""
    plain = {k: v for k, v in webhook.headers.items() if not isinstance(v, SecretRef)}
    secret = {k: v.name for k, v in webhook.headers.items() if isinstance(v, SecretRef)}
    return pb.Webhook(
        on=[_NOTIFY_EVENTS[NotifyEvent(event)] for event in webhook.on],
        url="" if isinstance(webhook.url, SecretRef) else webhook.url,
        url_secret=webhook.url.name if isinstance(webhook.url, SecretRef) else "",
        headers=plain,
        secret_headers=secret,
        body=webhook.body,
        sign_secret="" if webhook.sign is None else webhook.sign.name,
    )


def retention_to_proto(retention: Retention) -> pb.Retention:
    """The proto of a retention (a spec's, or the effective one of a task)."""
    return pb.Retention(
        max_age=to_duration(retention.max_age),
        keep_last=retention.keep_last,
        output_max_age=to_duration(retention.output_max_age),
    )


def _retry_to_proto(retry: Retry) -> pb.RetryPolicy:
    return pb.RetryPolicy(
        max_attempts=retry.max_attempts,
        backoff=to_duration(retry.backoff),
        max_backoff=to_duration(retry.max_backoff),
        multiplier=retry.multiplier,
    )


def _trigger_to_proto(trigger: Trigger) -> pb.Trigger:
    match trigger:
        case Cron():
            cron = pb.CronTrigger(expression=trigger.expression, timezone=trigger.timezone)
            return pb.Trigger(cron=cron)
        case Interval():
            every, anchor = to_duration(trigger.every), to_timestamp(trigger.anchor)
            return pb.Trigger(interval=pb.IntervalTrigger(every=every, anchor=anchor))
        case At():
            return pb.Trigger(at=pb.AtTrigger(at=to_timestamp(trigger.at)))
        case After():
            return pb.Trigger(after=pb.AfterTrigger(tasks=trigger.tasks))
    raise TypeError(f"not a trigger: {trigger!r}")


def precondition_to_proto(check: Precondition) -> pb.Precondition:
    """The proto of a precondition (used for specs and, rendered, for lease offers)."""
    timeout = to_duration(check.timeout)
    match check:
        case CommandCheck():
            return pb.Precondition(command=pb.CommandCheck(argv=check.argv), timeout=timeout)
        case FileCheck():
            file = pb.FileCheck(path=check.path, min_age=to_duration(check.min_age))
            return pb.Precondition(file=file, timeout=timeout)
        case HttpCheck():
            return pb.Precondition(http=pb.HttpCheck(url=check.url), timeout=timeout)
        case TcpCheck():
            tcp = pb.TcpCheck(host=check.host, port=check.port)
            return pb.Precondition(tcp=tcp, timeout=timeout)
    raise TypeError(f"not a precondition: {check!r}")


def task_spec_from_proto(message: pb.TaskSpec, path: str = "spec") -> TaskSpec:
    """The valid spec a proto describes; unset fields take the domain's defaults.

    Args:
        message: The spec as received.
        path: Prefix of every problem's path.

    Raises:
        InvalidArgument: With a problem per unusable or invalid field, e.g.
            ``spec.triggers[0]`` for a trigger with no kind set.
    """
    decoder = _Decoder()
    fields = {
        "name": message.name,
        "description": message.description,
        "command": tuple(message.command),
        "shell": message.shell,
        "env": decoder.env(message, _join(path, "secret_env")),
        "params": dict(message.params),
        "workdir": message.workdir,
        "selector": dict(message.selector),
        "triggers": decoder.triggers(message.triggers, _join(path, "triggers")),
        "preconditions": decoder.preconditions(message.preconditions, _join(path, "preconditions")),
        **decoder.durations(
            message, path, "timeout", "precondition_timeout", "starting_deadline", "deadline"
        ),
        "notify": decoder.webhooks(message.notify, _join(path, "notify")),
        **decoder.durations(message, path, "poke_interval", default_when_unset=True),
        **decoder.enums(message, path, on_timeout=_ON_TIMEOUTS_BACK, catchup=_CATCHUPS_BACK),
        **_present(message, "max_catchup"),
    }
    if message.HasField("retry"):
        fields["retry"] = decoder.retry(message.retry, _join(path, "retry"))
    if message.HasField("concurrency"):
        fields["concurrency"] = decoder.concurrency(message.concurrency, _join(path, "concurrency"))
    if message.HasField("retention"):
        fields["retention"] = decoder.retention(message.retention, _join(path, "retention"))
    spec = TaskSpec(**fields)
    validate_parsed_task(spec, path, decoder.problems)
    return spec


def _join(path: str, name: str | int) -> str:
    if isinstance(name, int):
        return f"{path}[{name}]"
    return f"{path}.{name}" if path else name


def _present(message: Message, *names: str) -> dict[str, Any]:
    """The set ``optional`` scalars among ``names``; unset ones keep domain defaults."""
    return {name: getattr(message, name) for name in names if message.HasField(name)}


class _Decoder:
    """Reads the parts of a spec proto, collecting what cannot be used.

    An unusable value becomes ``None`` in the spec, and a problem here;
    ``validate_parsed_task`` then leaves out its own problems about that field.
    """

    def __init__(self) -> None:
        self.problems: list[FieldProblem] = []

    def add(self, path: str, message: str) -> None:
        self.problems.append(FieldProblem(path=path, message=message))

    def require(self, message: Message, field: str, path: str) -> None:
        if not message.HasField(field):
            self.add(path, "is required")

    def duration(self, message: Message, field: str, path: str) -> timedelta | None:
        """The duration in a field, ``None`` when unset (or out of range: a problem)."""
        if not message.HasField(field):
            return None
        try:
            return from_duration(getattr(message, field))
        except (ValueError, OverflowError):
            self.add(path, "duration out of range")
            return None

    def timestamp(self, message: Message, field: str, path: str) -> datetime | None:
        """The time in a field, ``None`` when unset (or out of range: a problem)."""
        if not message.HasField(field):
            return None
        try:
            return from_timestamp(getattr(message, field))
        except (ValueError, OverflowError):
            self.add(path, "timestamp out of range")
            return None

    def durations(
        self, message: Message, path: str, *names: str, default_when_unset: bool = False
    ) -> dict[str, Any]:
        """Duration fields: unset ones are ``None``, or absent to take the domain default."""
        return {
            name: self.duration(message, name, _join(path, name))
            for name in names
            if message.HasField(name) or not default_when_unset
        }

    def enums(self, message: Message, path: str, **members: Mapping[int, Any]) -> dict[str, Any]:
        """Enum fields; UNSPECIFIED ones are absent, to take the domain default."""
        found = {}
        for name, by_number in members.items():
            number = getattr(message, name)
            if number in by_number:
                found[name] = by_number[number]
            elif number != 0:
                self.add(_join(path, name), f"unknown value {number}")
                found[name] = None
        return found

    def env(self, message: pb.TaskSpec, secret_path: str) -> dict[str, str | SecretRef]:
        """The plain env and the secret references in one mapping; a variable in both
        is a problem."""
        env: dict[str, str | SecretRef] = dict(message.env)
        for key, name in message.secret_env.items():
            if key in env:
                self.add(_join(secret_path, key), "is also in env; a variable is plain or secret")
            env[key] = SecretRef(name=name)
        return env

    def webhooks(self, messages: Any, path: str) -> tuple[Webhook, ...]:
        return tuple(self.webhook(m, _join(path, i)) for i, m in enumerate(messages))

    def webhook(self, message: pb.Webhook, path: str) -> Webhook:
        on: list[Any] = []  # None for an unknown event: a problem already
        for index, number in enumerate(message.on):
            if number not in _NOTIFY_EVENTS_BACK:
                self.add(_join(_join(path, "on"), index), f"unknown event {number}")
            on.append(_NOTIFY_EVENTS_BACK.get(number))
        if message.url and message.url_secret:
            self.add(_join(path, "url_secret"), "give url or url_secret, not both")
        url = SecretRef(name=message.url_secret) if message.url_secret else message.url
        headers: dict[str, str | SecretRef] = dict(message.headers)
        for key, name in message.secret_headers.items():
            if key in headers:
                self.add(_join(_join(path, "secret_headers"), key), "is also in headers")
            headers[key] = SecretRef(name=name)
        sign = SecretRef(name=message.sign_secret) if message.sign_secret else None
        return Webhook(on=tuple(on), url=url, headers=headers, body=message.body, sign=sign)

    def retry(self, message: pb.RetryPolicy, path: str) -> Retry:
        fields = _present(message, "max_attempts", "multiplier")
        fields |= self.durations(message, path, "backoff", "max_backoff", default_when_unset=True)
        return Retry(**fields)

    def retention(self, message: pb.Retention, path: str) -> Retention:
        fields = _present(message, "keep_last")
        return Retention(**fields, **self.durations(message, path, "max_age", "output_max_age"))

    def concurrency(self, message: pb.Concurrency, path: str) -> Concurrency:
        fields = _present(message, "max_active_runs")
        return Concurrency(**fields, **self.enums(message, path, overlap=_OVERLAPS_BACK))

    def triggers(self, messages: Any, path: str) -> tuple[Trigger | None, ...]:
        return tuple(self.trigger(m, _join(path, i)) for i, m in enumerate(messages))

    def trigger(self, message: pb.Trigger, path: str) -> Trigger | None:
        kind = message.WhichOneof("kind")
        if kind == "cron":
            return Cron(expression=message.cron.expression, timezone=message.cron.timezone or "UTC")
        if kind == "interval":
            every_path = _join(path, "interval")
            self.require(message.interval, "every", every_path)
            every = self.duration(message.interval, "every", every_path)
            anchor = self.timestamp(message.interval, "anchor", _join(path, "anchor"))
            return Interval(every=every, anchor=anchor)  # type: ignore[arg-type]  # None: reported
        if kind == "at":
            self.require(message.at, "at", _join(path, "at"))
            return At(at=self.timestamp(message.at, "at", _join(path, "at")))  # type: ignore[arg-type]
        if kind == "after":
            return After(tasks=tuple(message.after.tasks))
        self.add(path, "no trigger kind set; expected one of cron, interval, at, after")
        return None

    def preconditions(self, messages: Any, path: str) -> tuple[Precondition | None, ...]:
        return tuple(self.precondition(m, _join(path, i)) for i, m in enumerate(messages))

    def precondition(self, message: pb.Precondition, path: str) -> Precondition | None:
        kind = message.WhichOneof("kind")
        fields = self.durations(message, path, "timeout", default_when_unset=True)
        if kind == "command":
            return CommandCheck(argv=tuple(message.command.argv), **fields)
        if kind == "file":
            min_age = self.durations(message.file, path, "min_age")
            return FileCheck(path=message.file.path, **min_age, **fields)
        if kind == "http":
            return HttpCheck(url=message.http.url, **fields)
        if kind == "tcp":
            return TcpCheck(host=message.tcp.host, port=message.tcp.port, **fields)
        self.add(path, "no precondition kind set; expected one of command, file, http, tcp")
        return None
