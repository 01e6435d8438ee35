"""Task specs: parse the YAML shape of docs/interfaces.md, validate, and give the canonical form.

Shared by the client and the coordinator, so it imports nothing from either and
needs only PyYAML. Every problem is reported at once, as one ``InvalidArgument``
holding a ``FieldProblem`` per problem. Paths use the YAML field names
(``triggers[0].cron``, ``preconditions[1].tcp``), also for typed specs.

Parsing happens in two steps. The parsers only convert shapes and types: a value
that cannot be converted is a *parse problem*, and the spec gets ``None`` in its
place. Validation then checks the typed spec; it tolerates wrong types, so its
problems about a field that failed to parse are left out (they would repeat it).
"""

from __future__ import annotations

from hydra.spec._canonical import retention_to_dict, task_to_dict, webhook_to_dict
from hydra.spec._documents import load_task_documents
from hydra.spec._durations import format_duration, parse_duration
from hydra.spec._parse import task_from_dict, webhooks_from_list
from hydra.spec._retention import retention_from_text, retention_in_words
from hydra.spec._strings import MAX_SPEC_BYTES, MAX_STRING_BYTES
from hydra.spec._validate import (
    MAX_DURATION,
    NAME_PATTERN,
    validate_parsed_task,
    validate_task,
    validate_webhooks,
)

__all__ = [
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
