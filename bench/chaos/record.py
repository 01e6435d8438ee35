"""What a chaos run did, saved as ``run.json`` in its work directory, so that the
checks can be run again on a kept run (``--recheck DIR``) without new chaos."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.chaos.actions import Action, Kind, ProcessExit
from bench.chaos.checks import Timeline
from bench.chaos.workload import Workload

FILE_NAME = "run.json"


@dataclass(frozen=True, kw_only=True)
class RunRecord:
    """The workload, the chaos and the timeline of one run."""

    workload: Workload
    actions: list[Action]
    exits: list[ProcessExit]
    timeline: Timeline


def save(record: RunRecord, work_dir: Path, options: dict[str, Any]) -> None:
    """Write ``run.json``, with the run's options."""
    data = {
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in options.items()},
        "tasks": list(record.workload.specs),
        "actions": [action.to_json() for action in record.actions],
        "exits": [{**ended.to_json(), "log_tail": ended.log_tail} for ended in record.exits],
        "timeline": {
            "applied": [instant.isoformat() for instant in record.timeline.applied],
            "chaos_ended": record.timeline.chaos_ended.isoformat(),
            "paused": {name: at.isoformat() for name, at in record.timeline.paused.items()},
        },
    }
    (work_dir / FILE_NAME).write_text(json.dumps(data, indent=1) + "\n")


def load(work_dir: Path) -> tuple[RunRecord, dict[str, Any]]:
    """Read ``run.json``: the record, and the run's options."""
    data = json.loads((work_dir / FILE_NAME).read_text())
    timeline = data["timeline"]
    began, ended = (datetime.fromisoformat(t) for t in timeline["applied"])
    done = RunRecord(
        workload=Workload(specs=tuple(data["tasks"])),
        actions=[_action(a) for a in data["actions"]],
        exits=[_exit(e) for e in data["exits"]],
        timeline=Timeline(
            applied=(began, ended),
            chaos_ended=datetime.fromisoformat(timeline["chaos_ended"]),
            paused={n: datetime.fromisoformat(t) for n, t in timeline["paused"].items()},
        ),
    )
    return done, data["options"]


def _action(data: dict[str, Any]) -> Action:
    restored = data["restored_at"]
    return Action(
        kind=Kind(data["kind"]),
        target=data["target"],
        at=datetime.fromisoformat(data["at"]),
        restored_at=datetime.fromisoformat(restored) if restored else None,
    )


def _exit(data: dict[str, Any]) -> ProcessExit:
    return ProcessExit(
        name=data["name"],
        exit_code=data["exit_code"],
        at=datetime.fromisoformat(data["at"]),
        postgres_down=data["postgres_down"],
        log_tail=data["log_tail"],
    )
