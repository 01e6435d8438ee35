"""Rows become domain types here, and stored specs are parsed once per version."""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import fields
from datetime import datetime
from typing import Any

from hydra.domain import (
    Agent,
    Attempt,
    AttemptState,
    AuditEntry,
    Coordinator,
    PreconditionVerdict,
    Run,
    RunState,
    Task,
    TaskSpec,
)
from hydra.spec import task_from_dict

#: Parsed specs kept per database.
SPEC_CACHE_SIZE = 4096


class SpecCache:
    """The TaskSpec of each stored version, parsed and validated once.

    Versions never change, so (task id, version) is a complete key within one
    database: reading one costs a dictionary lookup, not a serialisation.
    """

    def __init__(self, size: int = SPEC_CACHE_SIZE) -> None:
        self._size = size
        self._specs: OrderedDict[tuple[int, int], TaskSpec] = OrderedDict()

    def get(self, task_id: int, version: int, spec: Mapping[str, Any]) -> TaskSpec:
        """The spec of this version; `spec` (its stored JSON) is parsed on a miss."""
        key = (task_id, version)
        found = self._specs.get(key)
        if found is not None:
            self._specs.move_to_end(key)
            return found
        parsed = task_from_dict(dict(spec))
        self._specs[key] = parsed
        if len(self._specs) > self._size:
            self._specs.popitem(last=False)
        return parsed


def task_from_row(row: Mapping[str, Any], spec: TaskSpec) -> Task:
    """A domain Task from a tasks row joined with its current version."""
    return Task(
        name=row["name"],
        version=row["version"],
        paused=row["paused"],
        spec=spec,
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        next_fire_at=row.get("next_fire_at"),
    )


def run_from_row(row: Mapping[str, Any], attempts: Sequence[Mapping[str, Any]]) -> Run:
    """A domain Run from a runs row (joined with the task name) and its attempts."""
    outputs = row["outputs"]
    state = RunState(row["state"])
    return Run(
        id=str(row["id"]),
        task=row["task_name"],
        task_version=row["task_version"],
        occurrence=row["occurrence"],
        state=state,
        cause=row["cause"],
        created_at=row["created_at"],
        not_before=row["not_before"],
        params=row["params"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        attempts_used=row["attempts_used"],
        max_attempts=row["max_attempts"],
        reason=row["reason"],
        agent=row["lease_owner"] or "" if state.active else "",
        attempts=tuple(attempt_from_row(a) for a in attempts),
        outputs_json=json.dumps(outputs, sort_keys=True) if outputs is not None else "",
        idempotency_key=row["idempotency_key"] or "",
        precondition_checks=row["precondition_checks"],
        precondition_verdicts=tuple(_verdict(v) for v in row["precondition_verdicts"]),
        first_checked_at=row["first_checked_at"],
    )


def _verdict(data: Mapping[str, Any]) -> PreconditionVerdict:
    checked_at = data.get("checked_at")
    return PreconditionVerdict(
        index=data["index"],
        ready=data["ready"],
        message=data.get("message", ""),
        checked_at=datetime.fromisoformat(checked_at) if checked_at else None,
    )


def verdict_json(verdict: PreconditionVerdict) -> dict[str, Any]:
    """A verdict as stored in ``hydra_runs.precondition_verdicts``."""
    checked_at = verdict.checked_at.isoformat() if verdict.checked_at else None
    return {
        "index": verdict.index,
        "ready": verdict.ready,
        "message": verdict.message,
        "checked_at": checked_at,
    }


def attempt_from_row(row: Mapping[str, Any]) -> Attempt:
    """A domain Attempt from an attempts row."""
    return Attempt(
        number=row["number"],
        state=AttemptState(row["state"]),
        agent=row["agent_id"],
        argv=tuple(row["argv"]),
        lease_token=row["lease_token"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        exit_code=row["exit_code"],
        signal=row["signal"],
        message=row["message"],
    )


def agent_from_row(row: Mapping[str, Any]) -> Agent:
    """A domain Agent from an agents row with its active run count."""
    return Agent(
        id=row["id"],
        hostname=row["hostname"],
        labels=row["labels"],
        capacity=row["capacity"],
        version=row["version"],
        state=row["state"],
        coordinator=row["coordinator_id"] or "",
        connected_at=row["connected_at"],
        last_seen_at=row["last_seen_at"],
        active_runs=row["active_runs"],
    )


def coordinator_from_row(row: Mapping[str, Any]) -> Coordinator:
    """A domain Coordinator from a coordinators row with its agent count."""
    return Coordinator(
        id=row["id"],
        address=row["address"],
        version=row["version"],
        started_at=row["started_at"],
        last_heartbeat_at=row["last_heartbeat_at"],
        agents_connected=row["agents_connected"],
        insecure=row["insecure"],
        tls=row["tls"],
    )


def audit_entry_from_row(row: Mapping[str, Any]) -> AuditEntry:
    """The audit entry a row of hydra_audit holds (its columns are the entry's fields)."""
    return AuditEntry(**{f.name: row[f.name] for f in fields(AuditEntry)})
