"""The public names of hydra.spec and hydra.wire, pinned: code all over Hydra imports them."""

from __future__ import annotations

import hydra.spec
import hydra.wire


def test_spec_all_is_pinned() -> None:
    assert sorted(hydra.spec.__all__) == [
        "MAX_DURATION",
        "MAX_SPEC_BYTES",
        "MAX_STRING_BYTES",
        "NAME_PATTERN",
        "format_duration",
        "load_task_documents",
        "parse_duration",
        "retention_from_text",
        "retention_in_words",
        "retention_to_dict",
        "task_from_dict",
        "task_to_dict",
        "validate_parsed_task",
        "validate_task",
        "validate_webhooks",
        "webhook_to_dict",
        "webhooks_from_list",
    ]


def test_wire_all_is_pinned() -> None:
    assert sorted(hydra.wire.__all__) == [
        "agent_from_proto",
        "agent_to_proto",
        "attempt_from_proto",
        "attempt_state_from_proto",
        "attempt_state_to_proto",
        "attempt_to_proto",
        "audit_entry_from_proto",
        "audit_entry_to_proto",
        "coordinator_from_proto",
        "coordinator_to_proto",
        "credential_from_proto",
        "credential_to_proto",
        "explanation_from_proto",
        "explanation_to_proto",
        "from_duration",
        "from_timestamp",
        "notification_from_proto",
        "notification_state_from_proto",
        "notification_state_to_proto",
        "notification_to_proto",
        "optional_duration",
        "optional_timestamp",
        "outcome_from_proto",
        "outcome_to_proto",
        "precondition_to_proto",
        "role_from_wire",
        "run_from_proto",
        "run_state_from_proto",
        "run_state_to_proto",
        "run_to_proto",
        "task_from_proto",
        "task_spec_from_proto",
        "task_spec_to_proto",
        "task_to_proto",
        "task_version_from_proto",
        "task_version_to_proto",
        "to_duration",
        "to_timestamp",
        "verdict_from_proto",
        "verdict_to_proto",
        "webhook_to_proto",
    ]


def test_every_exported_name_exists() -> None:
    for module in (hydra.spec, hydra.wire):
        for name in module.__all__:
            assert getattr(module, name) is not None, f"{module.__name__}.{name}"


def test_nothing_else_public_in_the_packages() -> None:
    for module in (hydra.spec, hydra.wire):
        public = {name for name in vars(module) if not name.startswith("_")}
        assert public - {"annotations"} == set(module.__all__), module.__name__
