"""Webhook requests: the body (the event's JSON, or a task's template), the secrets a
coordinator resolves from its secrets directory, the signature, and one POST.

Secret values live only in the request being sent: they are never stored, logged,
or left in an error message (:meth:`Request.masked`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import jinja2
import yaml

from hydra.coordinator import template_bounds
from hydra.coordinator.sandbox import undeclared_variables
from hydra.coordinator.templates import _ENV, _compile, syntax_message
from hydra.domain import SecretRef, TaskSpec, Webhook, secret_name_problem
from hydra.errors import FieldProblem, HydraError, InvalidArgument
from hydra.spec import webhooks_from_list

#: Every key a body template may use; those an event lacks are null.
PAYLOAD_KEYS = (
    "event",
    "event_id",
    "task",
    "run_id",
    "occurrence",
    "state",
    "reason",
    "cause",
    "attempts",
    "max_attempts",
    "next_try_at",
    "exit_code",
    "signal",
    "message",
    "agent",
    "started_at",
    "finished_at",
    "deadline",
    "due_at",
    "missed_since",
    "missed_until",
    "missed_occurrences",
    "catchup",
    "recorded_at",
)
#: Longest error text kept per notification.
MAX_ERROR_CHARS = 500
_USER_AGENT = "hydra-webhooks/1"


@dataclass(frozen=True, kw_only=True, slots=True)
class DeliveryConfig:
    """How a coordinator delivers notifications (``hydra coordinator --notify-*``)."""

    #: Webhooks for tasks whose ``notify`` is empty (``--notify-defaults``).
    defaults: tuple[Webhook, ...] = ()
    #: Where secret URLs, headers and signing keys are read (``--secrets-dir``).
    secrets_dir: Path | None = None
    #: Time limit of one POST (``--notify-timeout``).
    timeout: timedelta = timedelta(seconds=10)
    #: Tries per notification before it is failed (``--notify-tries``).
    max_tries: int = 8
    backoff: timedelta = timedelta(seconds=1)
    max_backoff: timedelta = timedelta(minutes=5)
    #: How long past a try's time limit its lease lasts (then another coordinator
    #: takes the notification over: a dead one's are delivered after this).
    lease_margin: timedelta = timedelta(seconds=10)
    #: Deliveries in flight per coordinator (threads of its own).
    concurrency: int = 4
    #: How often the deadline loop looks for late occurrences.
    deadline_interval: timedelta = timedelta(seconds=5)


class DeliveryFailed(HydraError):
    """A try did not deliver; it may be tried again."""


class BodyFailed(HydraError):
    """The body template could not be rendered: no try can succeed."""


class SecretMissing(DeliveryFailed):
    """A secret the webhook names is not in the secrets directory."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Request:
    """One POST, ready to send."""

    url: str
    headers: Mapping[str, str]
    body: bytes
    #: The secret values in it, kept out of error messages.
    secrets: tuple[str, ...] = field(default=())

    def masked(self, text: str) -> str:
        """`text` with every secret value of this request replaced by ``***``."""
        for value in self.secrets:
            if value:
                text = text.replace(value, "***")
        return text[:MAX_ERROR_CHARS]


def load_defaults(path: Path) -> tuple[Webhook, ...]:
    """The webhooks of a ``--notify-defaults`` file: a YAML list of ``notify`` entries.

    Raises:
        InvalidArgument: the file cannot be read, is no YAML, or has invalid webhooks.
    """
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise InvalidArgument(f"cannot read {path}: {error}", "--notify-defaults") from None
    if isinstance(data, Mapping) and set(data) == {"notify"}:
        data = data["notify"]
    webhooks = webhooks_from_list(data or [], "notify-defaults")
    check_bodies(webhooks, "notify-defaults", raise_problems=True)
    return webhooks


def check_bodies(
    webhooks: tuple[Webhook, ...], path: str, *, raise_problems: bool = False
) -> list[FieldProblem]:
    """Problems of the body templates: syntax, unknown variables, literal runaways."""
    problems = []
    for index, webhook in enumerate(webhooks):
        if webhook.body:
            where = f"{path}[{index}].body"
            problems += [FieldProblem(path=where, message=m) for m in _body_problems(webhook.body)]
    if problems and raise_problems:
        raise InvalidArgument(problems)
    return problems


def check_spec_bodies(spec: TaskSpec) -> list[FieldProblem]:
    """The body template problems of a task's ``notify``."""
    return check_bodies(spec.notify, "notify")


def _body_problems(source: str) -> list[str]:
    try:
        ast = _ENV.parse(source)
        _compile(source)  # some errors (unknown filters) only show when compiling
        unknown = sorted(undeclared_variables(ast) - {*PAYLOAD_KEYS, "payload"})
    except jinja2.TemplateSyntaxError as error:
        return [syntax_message(error)]
    return [f"unknown template variable {name!r}" for name in unknown] + template_bounds.problems(
        ast
    )


def template_variables(payload: Mapping[str, Any]) -> dict[str, Any]:
    """What a body template sees: every payload key (null when absent) and ``payload``."""
    values = {key: payload.get(key) for key in PAYLOAD_KEYS}
    return values | {"payload": dict(payload)}


def default_body(payload: Mapping[str, Any]) -> bytes:
    """The body without a template: the event's JSON, keys sorted."""
    return json.dumps(template_variables(payload), sort_keys=True, default=str).encode()


class Secrets:
    """The secrets directory of a coordinator: one file per secret, named by it."""

    def __init__(self, directory: Path | None) -> None:
        self._directory = directory

    def read(self, ref: SecretRef) -> str:
        """The value of a secret, without a trailing newline.

        Raises:
            SecretMissing: no secrets directory, or no readable file of that name.
        """
        if self._directory is None:
            raise SecretMissing(f"secret {ref.name!r}: this coordinator has no --secrets-dir")
        if secret_name_problem(ref.name):
            raise SecretMissing(f"secret {ref.name!r}: not a secret name")
        try:
            return (self._directory / ref.name).read_text().rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as error:
            reason = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
            raise SecretMissing(f"secret {ref.name!r} cannot be read: {reason}") from None

    def value(self, value: str | SecretRef, used: list[str]) -> str:
        """A plain value as it is; a secret's value, noted in `used`."""
        if not isinstance(value, SecretRef):
            return value
        secret = self.read(value)
        used.append(secret)
        return secret


def build_request(
    webhook: Webhook, event_id: str, event: str, body: bytes, secrets: Secrets
) -> Request:
    """The POST of one event to one webhook, its secrets resolved and its body signed.

    Raises:
        SecretMissing: a secret it names cannot be read.
    """
    used: list[str] = []
    headers = {
        "Content-Type": "application/json",
        "User-Agent": _USER_AGENT,
        "Hydra-Event": event,
    }
    headers |= {name: secrets.value(value, used) for name, value in webhook.headers.items()}
    headers["Hydra-Event-Id"] = event_id
    if webhook.sign is not None:
        key = secrets.value(webhook.sign, used)
        digest = hmac.new(key.encode(), body, hashlib.sha256).hexdigest()
        headers["Hydra-Signature"] = f"sha256={digest}"
    url = secrets.value(webhook.url, used)
    return Request(url=url, headers=headers, body=body, secrets=tuple(used))


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer, not a delivery (and would turn the POST into a GET)."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects())


def post(request: Request, timeout: timedelta) -> int:
    """Send one request (blocking: run it in a thread); returns the 2xx status.

    Raises:
        DeliveryFailed: no answer within `timeout`, a connection error, or a status
            other than 2xx; the message has no secret in it.
    """
    message = urllib.request.Request(
        request.url, data=request.body, headers=dict(request.headers), method="POST"
    )
    try:
        with _OPENER.open(message, timeout=timeout.total_seconds()) as answer:
            answer.read(64 * 1024)
            return int(answer.status)
    except urllib.error.HTTPError as error:
        error.close()  # it holds the answer's connection
        raise DeliveryFailed(request.masked(f"HTTP {error.code} {error.reason}")) from None
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        raise DeliveryFailed(request.masked(f"{type(error).__name__}: {reason}")) from None
