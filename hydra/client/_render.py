"""How hydractl shows things: aligned tables for people, stable JSON for scripts.

JSON field names are the proto's, in snake_case; times are ISO 8601 in UTC.
Tables show local time to the second and durations like ``1.2s`` or ``3m04s``.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import shlex
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import yaml

from hydra.client._types import ApplyResult, BackfillResult, ClusterStatus, TaskDetails
from hydra.domain import (
    After,
    Agent,
    At,
    Attempt,
    AuditEntry,
    Coordinator,
    Cron,
    Interval,
    Notification,
    Run,
    Task,
    TaskSpec,
    TaskVersion,
    Trigger,
)
from hydra.spec import format_duration, retention_in_words, retention_to_dict, task_to_dict

JSONObject = dict[str, Any]
_NONE = "-"
#: Spec fields in the order docs/interfaces.md writes them, for people reading YAML.
_SPEC_ORDER = tuple(field.name for field in dataclasses.fields(TaskSpec))

# --- values -------------------------------------------------------------------


def iso(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with a ``Z``, or None."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def local(value: datetime | None) -> str:
    """Local time to the second, for people."""
    return _NONE if value is None else value.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def human_duration(value: timedelta) -> str:
    """``7ms``, ``1.2s``, ``3m04s``, ``2h05m``, ``3d04h``."""
    seconds = value.total_seconds()
    if seconds < 0.1:
        return f"{max(round(seconds * 1000), 0)}ms"
    if round(seconds, 1) < 60:
        return f"{max(seconds, 0.0):.1f}s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def _span(start: datetime | None, end: datetime | None) -> str:
    return _NONE if start is None or end is None else human_duration(end - start)


def _pairs(values: Mapping[str, str]) -> str:
    return ",".join(f"{key}={value}" for key, value in sorted(values.items())) or _NONE


def _outputs(run: Run) -> Any:
    if not run.outputs_json:
        return None
    try:
        return json.loads(run.outputs_json)
    except ValueError:
        return run.outputs_json


def _json_default(value: object) -> object:
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, timedelta):
        return format_duration(value)
    raise TypeError(f"cannot show {type(value).__name__} as JSON")


def dumps(value: object, *, compact: bool = False) -> str:
    """JSON text: indented, or one line with ``compact``."""
    if compact:
        return json.dumps(value, default=_json_default, separators=(",", ":"))
    return json.dumps(value, default=_json_default, indent=2)


# --- JSON shapes --------------------------------------------------------------


def attempt_json(attempt: Attempt) -> JSONObject:
    """An attempt as JSON."""
    return {
        "number": attempt.number,
        "state": str(attempt.state),
        "agent": attempt.agent,
        "argv": list(attempt.argv),
        "exit_code": attempt.exit_code,
        "signal": attempt.signal,
        "started_at": iso(attempt.started_at),
        "finished_at": iso(attempt.finished_at),
        "message": attempt.message,
    }


def run_json(run: Run) -> JSONObject:
    """A run as JSON; ``outputs`` is the parsed object, or null."""
    return {
        "id": run.id,
        "task": run.task,
        "task_version": run.task_version,
        "occurrence": iso(run.occurrence),
        "state": str(run.state),
        "cause": run.cause,
        "params": dict(run.params),
        "created_at": iso(run.created_at),
        "started_at": iso(run.started_at),
        "finished_at": iso(run.finished_at),
        "attempts_used": run.attempts_used,
        "max_attempts": run.max_attempts,
        "reason": run.reason,
        "agent": run.agent,
        "outputs": _outputs(run),
        "attempts": [attempt_json(attempt) for attempt in run.attempts],
        "precondition_checks": run.precondition_checks,
        "precondition_verdicts": [
            {
                "index": v.index,
                "ready": v.ready,
                "message": v.message,
                "checked_at": iso(v.checked_at),
            }
            for v in run.precondition_verdicts
        ],
    }


def task_json(task: Task) -> JSONObject:
    """A registered task as JSON; ``spec`` has the YAML spec's shape."""
    return {
        "name": task.name,
        "version": task.version,
        "paused": task.paused,
        "spec": task_to_dict(task.spec),
        "created_at": iso(task.created_at),
        "updated_at": iso(task.updated_at),
        "next_fire_at": iso(task.next_fire_at),
        "effective_retention": (
            None
            if task.effective_retention is None
            else retention_to_dict(task.effective_retention)
        ),
    }


def task_version_json(version: TaskVersion) -> JSONObject:
    """One version of a task's spec as JSON."""
    return {
        "version": version.version,
        "spec": task_to_dict(version.spec),
        "created_at": iso(version.created_at),
    }


def task_details_json(details: TaskDetails) -> JSONObject:
    """A task and its versions as JSON."""
    return {
        "task": task_json(details.task),
        "versions": [task_version_json(v) for v in details.versions],
    }


def apply_json(result: ApplyResult) -> JSONObject:
    """One apply result as JSON."""
    return {
        "task": task_json(result.task),
        "changed": result.changed,
        "previous_version": result.previous_version,
    }


def trigger_json(run: Run, created: bool) -> JSONObject:
    """A triggered run as JSON."""
    return {"run": run_json(run), "created": created}


def backfill_json(result: BackfillResult) -> JSONObject:
    """A backfill result as JSON."""
    return {
        "occurrences": [iso(occurrence) for occurrence in result.occurrences],
        "created": [run_json(run) for run in result.created],
        "existing": result.existing,
    }


def agent_json(agent: Agent) -> JSONObject:
    """An agent as JSON."""
    return {
        "id": agent.id,
        "hostname": agent.hostname,
        "labels": dict(agent.labels),
        "capacity": agent.capacity,
        "version": agent.version,
        "state": agent.state,
        "coordinator": agent.coordinator,
        "connected_at": iso(agent.connected_at),
        "last_seen_at": iso(agent.last_seen_at),
        "active_runs": agent.active_runs,
    }


def audit_json(entry: AuditEntry) -> JSONObject:
    """An audit log entry as JSON."""
    return {
        "id": entry.id,
        "at": iso(entry.at),
        "who": entry.who,
        "role": entry.role,
        "action": entry.action,
        "task": entry.task,
        "run_id": entry.run_id,
        "peer": entry.peer,
        "outcome": entry.outcome,
        "detail": entry.detail,
    }


def notification_json(notification: Notification) -> JSONObject:
    """A notification as JSON."""
    return {
        "id": notification.id,
        "event_id": notification.event_id,
        "event": notification.event.value,
        "task": notification.task,
        "run_id": notification.run_id,
        "occurrence": iso(notification.occurrence),
        "webhook": notification.webhook,
        "from_defaults": notification.from_defaults,
        "url": notification.url,
        "state": notification.state.value,
        "attempts": notification.attempts,
        "last_error": notification.last_error,
        "created_at": iso(notification.created_at),
        "finished_at": iso(notification.finished_at),
    }


# --- tables -------------------------------------------------------------------


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Columns aligned on the widest cell, two spaces apart."""
    lines = [list(headers), *(list(row) for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(headers))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def runs_table(runs: Iterable[Run]) -> str:
    """Runs, one per line."""
    rows = [
        [
            run.id,
            run.task,
            str(run.state),
            local(run.occurrence),
            f"{run.attempts_used}/{run.max_attempts}",
            run.cause,
            _span(run.started_at, run.finished_at),
        ]
        for run in runs
    ]
    headers = ["ID", "TASK", "STATE", "OCCURRENCE", "ATTEMPTS", "CAUSE", "DURATION"]
    return table(headers, rows)


def audit_table(entries: Iterable[AuditEntry]) -> str:
    """Audit log entries, one per line, newest first."""
    rows = [
        [
            local(entry.at),
            entry.who or _NONE,
            entry.role or _NONE,
            entry.action,
            entry.task or _NONE,
            entry.run_id or _NONE,
            entry.peer or _NONE,
            entry.outcome,
            entry.detail,
        ]
        for entry in entries
    ]
    headers = ["TIME", "WHO", "ROLE", "ACTION", "TASK", "RUN", "PEER", "OUTCOME", "DETAIL"]
    return table(headers, rows)


def notifications_table(notifications: Iterable[Notification]) -> str:
    """Notifications, one per line, newest first."""
    rows = [
        [
            str(n.id),
            local(n.created_at),
            n.event.value,
            n.task,
            n.run_id or _NONE,
            local(n.occurrence),
            f"{'default' if n.from_defaults else 'notify'}[{n.webhook}]",
            n.state.value,
            str(n.attempts),
            n.last_error or _NONE,
        ]
        for n in notifications
    ]
    headers = ["ID", "TIME", "EVENT", "TASK", "RUN", "OCCURRENCE", "WEBHOOK", "STATE"]
    return table([*headers, "TRIES", "LAST ERROR"], rows)


def _exit(attempt: Attempt) -> str:
    if attempt.signal is not None:
        return f"signal {attempt.signal}"
    return _NONE if attempt.exit_code is None else str(attempt.exit_code)


def attempts_table(attempts: Iterable[Attempt]) -> str:
    """Attempts of a run, oldest first."""
    headers = ["#", "STATE", "AGENT", "EXIT", "STARTED", "FINISHED", "DURATION", "ARGV"]
    rows = [
        [
            str(a.number),
            str(a.state),
            a.agent or _NONE,
            _exit(a),
            local(a.started_at),
            local(a.finished_at),
            _span(a.started_at, a.finished_at),
            shlex.join(a.argv) or _NONE,
            a.message,
        ]
        for a in attempts
    ]
    return table([*headers, "MESSAGE"], rows)


def _fields(pairs: Sequence[tuple[str, str]]) -> str:
    width = max(len(key) for key, _ in pairs) + 1
    return "\n".join(f"{key + ':':<{width}} {value}".rstrip() for key, value in pairs)


def run_detail(run: Run) -> str:
    """A run's fields, the table of its attempts, and its outputs."""
    pairs = [
        ("id", run.id),
        ("task", f"{run.task} v{run.task_version}"),
        ("state", str(run.state)),
        ("reason", run.reason or _NONE),
        ("occurrence", local(run.occurrence)),
        ("cause", run.cause),
        ("params", _pairs(run.params)),
        ("created", local(run.created_at)),
        ("started", local(run.started_at)),
        ("finished", local(run.finished_at)),
        ("duration", _span(run.started_at, run.finished_at)),
        ("attempts", f"{run.attempts_used}/{run.max_attempts}"),
        ("agent", run.agent or _NONE),
    ]
    if run.precondition_checks:
        pairs.append(
            (
                "checks",
                f"{run.precondition_checks} precondition check(s), first at "
                f"{local(run.first_checked_at)}",
            )
        )
    parts = [_fields(pairs)]
    if run.precondition_verdicts:
        rows = [
            [str(v.index), "ready" if v.ready else "not ready", local(v.checked_at), v.message]
            for v in run.precondition_verdicts
        ]
        parts.append(table(["PRECONDITION", "VERDICT", "CHECKED", "MESSAGE"], rows))
    if run.attempts:
        parts.append(attempts_table(run.attempts))
    outputs = _outputs(run)
    if outputs is not None:
        parts.append("outputs:\n" + dumps(outputs))
    return "\n\n".join(parts)


def run_summary(run: Run) -> str:
    """One line telling how a run ended, e.g. for ``run --wait``."""
    line = f"run {run.id} {run.state}"
    if run.started_at and run.finished_at:
        line += f" in {human_duration(run.finished_at - run.started_at)}"
    line += f" after {run.attempts_used}/{run.max_attempts} attempts"
    last = run.attempts[-1] if run.attempts else None
    detail = run.reason or (last.message if last else "")
    if last is not None and _exit(last) != _NONE and str(run.state) != "SUCCEEDED":
        detail = f"exit {_exit(last)}" + (f", {detail}" if detail else "")
    return f"{line}: {detail}" if detail else line


def watch_line(run: Run, now: datetime | None = None) -> str:
    """One line for a run change seen by ``runs list --watch``."""
    when = local(now or datetime.now(UTC))
    cells = [when, run.id, run.task, f"{run.state!s:<9}", f"{run.attempts_used}/{run.max_attempts}"]
    if run.reason:
        cells.append(run.reason)
    return "  ".join(cells).rstrip()


def trigger_summary(trigger: Trigger) -> str:
    """A trigger in a few words."""
    if isinstance(trigger, Cron):
        return f"cron({trigger.expression} {trigger.timezone})"
    if isinstance(trigger, Interval):
        return f"every {format_duration(trigger.every)}"
    if isinstance(trigger, At):
        return f"at {local(trigger.at)}"
    assert isinstance(trigger, After)
    return f"after {','.join(trigger.tasks)}"


def tasks_table(tasks: Iterable[Task]) -> str:
    """Tasks, one per line."""
    rows = [
        [
            task.name,
            str(task.version),
            "yes" if task.paused else "no",
            ", ".join(trigger_summary(t) for t in task.spec.triggers) or "manual",
            local(task.next_fire_at),
        ]
        for task in tasks
    ]
    return table(["NAME", "VERSION", "PAUSED", "TRIGGERS", "NEXT FIRE"], rows)


def task_detail(details: TaskDetails) -> str:
    """The task's spec as YAML that ``apply -f`` takes back, its state in comments."""
    task = details.task
    status = "paused" if task.paused else "active"
    header = [
        f"# {task.name} v{task.version}, {status}, next fire {local(task.next_fire_at)}",
        f"# created {local(task.created_at)}, updated {local(task.updated_at)}",
    ]
    if task.effective_retention is not None:
        header.append(f"# retention: {retention_in_words(task.effective_retention)}")
    if details.versions:
        rows = [[str(v.version), local(v.created_at)] for v in details.versions]
        header += ["#", *(f"# {line}" for line in table(["VERSION", "APPLIED"], rows).splitlines())]
    return "\n".join(header) + "\n" + spec_yaml(task.spec).rstrip("\n")


def spec_yaml(spec: TaskSpec) -> str:
    """A spec as YAML in the field order of the docs, as ``apply -f`` takes it."""
    shape = task_to_dict(spec)
    shape = {name: shape[name] for name in _SPEC_ORDER if name in shape} | shape
    return yaml.safe_dump(shape, sort_keys=False, allow_unicode=True)


def spec_diff(name: str, current: TaskSpec | None, version: int, wanted: TaskSpec) -> str:
    """A unified diff from the stored spec (None: the task is new) to the wanted one."""
    before = spec_yaml(current).splitlines(keepends=True) if current else []
    after = spec_yaml(wanted).splitlines(keepends=True)
    label = f"{name} v{version}" if current else f"{name} (new)"
    return "".join(difflib.unified_diff(before, after, f"{label} (stored)", f"{name} (file)"))


def apply_line(result: ApplyResult, *, dry_run: bool = False) -> str:
    """``created billing.export v1``, ``updated … v1 → v2`` or ``unchanged … v2``."""
    task = result.task
    if result.action == "updated":
        line = f"updated {task.name} v{result.previous_version} → v{task.version}"
    else:
        line = f"{result.action} {task.name} v{task.version}"
    return f"{line} (dry run)" if dry_run else line


def backfill_text(result: BackfillResult, *, dry_run: bool = False) -> str:
    """The occurrences a backfill covers and what it created."""
    lines = [local(occurrence) for occurrence in result.occurrences]
    if dry_run:
        lines.append(f"{len(result.occurrences)} occurrences (dry run, nothing created)")
        return "\n".join(lines)
    if result.created:
        lines += ["", runs_table(result.created)]
    lines.append(f"{len(result.created)} runs created, {result.existing} already existed")
    return "\n".join(lines)


def agents_table(agents: Iterable[Agent]) -> str:
    """Agents, one per line."""
    rows = [
        [
            agent.id,
            agent.hostname,
            agent.state,
            f"{agent.active_runs}/{agent.capacity}",
            _pairs(agent.labels),
            local(agent.last_seen_at),
        ]
        for agent in agents
    ]
    return table(["ID", "HOSTNAME", "STATE", "RUNS", "LABELS", "LAST SEEN"], rows)


def coordinator_json(coordinator: Coordinator) -> JSONObject:
    """A coordinator as JSON."""
    return {
        "id": coordinator.id,
        "address": coordinator.address,
        "version": coordinator.version,
        "started_at": iso(coordinator.started_at),
        "last_heartbeat_at": iso(coordinator.last_heartbeat_at),
        "agents_connected": coordinator.agents_connected,
        "insecure": coordinator.insecure,
        "tls": coordinator.tls,
    }


def cluster_json(status: ClusterStatus) -> JSONObject:
    """The cluster's status as JSON."""
    return {
        "coordinators": [coordinator_json(c) for c in status.coordinators],
        "agents": [agent_json(a) for a in status.agents],
        "answered_by": status.answered_by,
    }


def cluster_text(status: ClusterStatus, now: datetime | None = None) -> str:
    """Two tables: coordinators, then agents."""
    now = now or datetime.now(UTC)
    rows = [
        [
            c.id + (" *" if c.id == status.answered_by else ""),
            c.address,
            c.version,
            f"{human_duration(now - c.last_heartbeat_at)} ago",
            str(c.agents_connected),
            "tls" if c.tls else "plaintext",
        ]
        for c in status.coordinators
    ]
    headers = ["COORDINATOR", "ADDRESS", "VERSION", "HEARTBEAT", "AGENTS", "TRANSPORT"]
    coordinators = table(headers, rows)
    warnings = "".join(f"\n{insecure_warning(c)}" for c in status.coordinators if c.insecure)
    return f"{coordinators}{warnings}\n\n{agents_table(status.agents)}"


def insecure_warning(coordinator: Coordinator) -> str:
    """The line `cluster status` prints for a coordinator started with --insecure."""
    plaintext = "" if coordinator.tls else " and in plaintext"
    return (
        f"WARNING: coordinator {coordinator.id} ({coordinator.address}) serves without "
        f"authentication{plaintext} (started with --insecure)"
    )


def dropped_marker(dropped_bytes: int, *, line_open: bool = False) -> bytes:
    """The line ``hydractl logs`` shows where output was dropped (on a line of its own)."""
    start = b"\n" if line_open else b""
    return start + f"... [hydra: {dropped_bytes:,} bytes dropped] ...\n".encode()
