"""`notify:` and `deadline:` in task specs, the cluster's default webhooks, and the
requests a delivery builds (body, secrets, signature): pure logic, no database."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from hydra.coordinator.webhooks import (
    DeliveryFailed,
    Request,
    SecretMissing,
    Secrets,
    build_request,
    check_spec_bodies,
    default_body,
    load_defaults,
    template_variables,
)
from hydra.domain import NotifyEvent, SecretRef, Webhook
from hydra.errors import InvalidArgument
from hydra.spec import task_from_dict, task_to_dict, webhooks_from_list
from hydra.wire import task_spec_from_proto, task_spec_to_proto

SLACK = {
    "on": ["failed", "late"],
    "webhook": {"secret": "slack-webhook"},
    "headers": {"X-Team": "data", "Authorization": {"secret": "hook-token"}},
    "body": '{"text": {{ (task ~ " " ~ event) | tojson }}}',
    "sign": {"secret": "hook-key"},
}


def _task(**fields: Any) -> dict[str, Any]:
    return {"name": "billing.export", "command": ["true"], **fields}


def _problems(data: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(InvalidArgument) as caught:
        task_from_dict(data)
    return {p.path: p.message for p in caught.value.problems}


def test_notify_and_deadline_parse_into_typed_webhooks() -> None:
    spec = task_from_dict(_task(deadline="1h30m", notify=[SLACK]))
    (webhook,) = spec.notify
    assert spec.deadline == timedelta(hours=1, minutes=30)
    assert webhook.on == (NotifyEvent.FAILED, NotifyEvent.LATE)
    assert webhook.url == SecretRef(name="slack-webhook")
    assert webhook.headers == {"X-Team": "data", "Authorization": SecretRef(name="hook-token")}
    assert webhook.sign == SecretRef(name="hook-key")


def test_canonical_form_round_trips_and_keeps_secrets_by_name() -> None:
    spec = task_from_dict(
        _task(
            deadline="2m", notify=[SLACK, {"on": ["succeeded"], "webhook": "https://x.example/h"}]
        )
    )
    shape = task_to_dict(spec)
    assert task_from_dict(shape) == spec
    assert shape["deadline"] == "2m"
    assert shape["notify"][0]["webhook"] == {"secret": "slack-webhook"}
    assert shape["notify"][1] == {
        "body": "",
        "headers": {},
        "on": ["succeeded"],
        "sign": None,
        "webhook": "https://x.example/h",
    }
    assert task_spec_from_proto(task_spec_to_proto(spec)) == spec


def test_a_task_without_notify_has_none_and_no_deadline() -> None:
    spec = task_from_dict(_task())
    assert (spec.notify, spec.deadline) == ((), None)
    assert task_to_dict(spec)["notify"] == []


URL = "https://x/h"


def _hook(**fields: Any) -> dict[str, Any]:
    return {"on": ["failed"], "webhook": URL, **fields}


@pytest.mark.parametrize(
    ("webhook", "path", "message"),
    [
        ({"webhook": URL}, "notify[0].on", "is required"),
        ({"on": ["failed"]}, "notify[0].webhook", "is required"),
        (_hook(on=[]), "notify[0].on", "must name at least one event"),
        (_hook(on=["exploded"]), "notify[0].on[0]", "must be one of"),
        (_hook(on=["failed", "failed"]), "notify[0].on[1]", "listed twice"),
        (_hook(webhook="ftp://x/h"), "notify[0].webhook", "is not an http"),
        (_hook(webhook={"secret": "../x"}), "notify[0].webhook.secret", "not a secret name"),
        (_hook(webhook={"vault": "x"}), "notify[0].webhook", "secret reference"),
        (_hook(headers={"Hydra-Event-Id": "1"}), "notify[0].headers.Hydra-Event-Id", "by Hydra"),
        (_hook(headers={"a b": "1"}), "notify[0].headers.a b", "not a header name"),
        (_hook(headers={"X": "a\nb"}), "notify[0].headers.X", "line breaks"),
        (_hook(sign="key"), "notify[0].sign", "secret reference"),
        (_hook(colour="red"), "notify[0].colour", "unknown field"),
        (_hook(on=["late"]), "notify[0].on", "needs the task's deadline"),
    ],
)
def test_webhook_problems_name_their_field(
    webhook: dict[str, Any], path: str, message: str
) -> None:
    problems = _problems(_task(notify=[webhook]))
    assert path in problems, problems
    assert message in problems[path]


@pytest.mark.parametrize(
    ("deadline", "message"), [("0s", "must be positive"), ("500ms", "at least 1s"), ("soon", "")]
)
def test_deadline_problems(deadline: str, message: str) -> None:
    assert message in _problems(_task(deadline=deadline))["deadline"]


def test_body_templates_are_checked_at_apply_time() -> None:
    bad = task_from_dict(
        _task(notify=[{"on": ["failed"], "webhook": "https://x/h", "body": "{{ nope }} {% for %}"}])
    )
    assert [p.path for p in check_spec_bodies(bad)] == ["notify[0].body"]
    unknown = task_from_dict(
        _task(notify=[{"on": ["failed"], "webhook": "https://x/h", "body": "{{ nope }}"}])
    )
    assert "unknown template variable 'nope'" in check_spec_bodies(unknown)[0].message
    assert check_spec_bodies(task_from_dict(_task(deadline="1h", notify=[SLACK]))) == []


def test_cluster_defaults_file(tmp_path: Path) -> None:
    path = tmp_path / "defaults.yaml"
    path.write_text("- on: [failed, missed]\n  webhook: {secret: ops-hook}\n")
    (webhook,) = load_defaults(path)
    assert webhook.url == SecretRef(name="ops-hook") and NotifyEvent.MISSED in webhook.on
    path.write_text("notify:\n- on: [failed]\n  webhook: https://x/h\n")
    assert len(load_defaults(path)) == 1
    path.write_text("- on: [failed]\n  webhook: nope\n")
    with pytest.raises(InvalidArgument) as caught:
        load_defaults(path)
    assert caught.value.problems[0].path == "notify-defaults[0].webhook"
    with pytest.raises(InvalidArgument, match="cannot read"):
        load_defaults(tmp_path / "missing.yaml")


def test_webhooks_from_list_refuses_what_is_not_a_list() -> None:
    with pytest.raises(InvalidArgument) as caught:
        webhooks_from_list({"on": ["failed"]})
    assert caught.value.problems[0].path == "notify"


def _secrets(tmp_path: Path, **values: str) -> Secrets:
    for name, value in values.items():
        (tmp_path / name).write_text(value + "\n")
    return Secrets(tmp_path)


def test_a_request_resolves_secrets_sets_the_event_id_and_signs_the_body(tmp_path: Path) -> None:
    secrets = _secrets(
        tmp_path,
        **{"slack-webhook": "https://hooks/T0/B0/xyz", "hook-token": "tok", "hook-key": "k3y"},
    )
    (webhook,) = webhooks_from_list([SLACK])
    request = build_request(webhook, "0f0e-id", "failed", b'{"a":1}', secrets)
    assert request.url == "https://hooks/T0/B0/xyz"
    assert request.headers["Hydra-Event-Id"] == "0f0e-id"
    assert request.headers["Hydra-Event"] == "failed"
    assert request.headers["Authorization"] == "tok"
    expected = hmac.new(b"k3y", b'{"a":1}', hashlib.sha256).hexdigest()
    assert request.headers["Hydra-Signature"] == f"sha256={expected}"
    assert (
        request.masked("POST https://hooks/T0/B0/xyz failed with tok") == "POST *** failed with ***"
    )


def test_a_missing_secret_is_a_failed_try_naming_the_secret_only(tmp_path: Path) -> None:
    (webhook,) = webhooks_from_list([SLACK])
    with pytest.raises(SecretMissing, match="secret 'hook-token' cannot be read") as caught:
        build_request(webhook, "id", "failed", b"", Secrets(tmp_path))
    assert isinstance(caught.value, DeliveryFailed)
    with pytest.raises(SecretMissing, match="no --secrets-dir"):
        build_request(webhook, "id", "failed", b"", Secrets(None))


def test_the_default_body_is_the_event_json_with_every_key() -> None:
    body = json.loads(default_body({"event": "failed", "task": "t", "exit_code": 1}))
    assert body["event"] == "failed" and body["exit_code"] == 1
    assert body["deadline"] is None and "payload" in body
    assert template_variables({"task": "t"})["payload"] == {"task": "t"}


def test_masking_cuts_long_errors() -> None:
    request = Request(url="u", headers={}, body=b"", secrets=("s",))
    assert len(request.masked("x" * 5000)) == 500


def test_webhook_normalises_what_sdk_users_pass() -> None:
    webhook = Webhook(on=[NotifyEvent.FAILED], url="https://x/h", headers={"A": "b"})  # type: ignore[arg-type]
    assert webhook.on == (NotifyEvent.FAILED,)
