"""The report of a chaos run: an aligned plain-text table, and the same as JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.chaos.actions import Action, ProcessExit
from bench.chaos.checks import CheckResult
from bench.chaos.options import Options
from bench.chaos.stats import Stats

#: Violations shown per check in the table (the JSON has them all).
SHOWN_VIOLATIONS = 10


@dataclass(frozen=True, kw_only=True)
class Report:
    """Everything a chaos run found."""

    options: Options
    work_dir: Path
    stats: Stats
    checks: list[CheckResult]
    actions: list[Action]
    exits: list[ProcessExit]
    timings: dict[str, float]
    #: Signs of zombie work in the logs (see `bench.chaos.logs`).
    zombies: dict[str, int]

    @property
    def passed(self) -> bool:
        """No check found a violation."""
        return all(check.passed for check in self.checks)

    def to_json(self) -> dict[str, Any]:
        """The report as JSON."""
        options = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self.options).items()}
        return {
            "passed": self.passed,
            "seed": self.options.seed,
            "options": options,
            "work_dir": str(self.work_dir),
            "stats": self.stats.to_json(),
            "timings_seconds": self.timings,
            "zombie_work": self.zombies,
            "checks": [
                {
                    "number": c.number,
                    "title": c.title,
                    "passed": c.passed,
                    "violations": c.violations,
                    "notes": c.notes,
                }
                for c in self.checks
            ],
            "actions": [action.to_json() for action in self.actions],
            "process_exits": [ended.to_json() for ended in self.exits],
        }


def write_json(report: Report, path: Path) -> None:
    """Write the report as JSON to `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.to_json(), indent=2) + "\n")


def render(report: Report) -> str:
    """The report as plain text for people."""
    o = report.options
    lines = [
        f"Hydra chaos run: seed {o.seed}, {o.duration:g}s of chaos, {o.coordinators} "
        f"coordinators, {o.agents} agents x {o.capacity} slots, {o.tasks} cron tasks + a-b-c-d",
        "",
        *table(["outcome", "value"], _outcome_rows(report.stats)),
        "",
        *table(["chaos action", "count"], _action_rows(report.stats)),
        "",
        *table(
            ["zombie work (from the logs)", "count"],
            [(k, str(v)) for k, v in report.zombies.items()],
        ),
        "",
        *table(
            ["check", "result"], [(f"{c.number}. {c.title}", _verdict(c)) for c in report.checks]
        ),
    ]
    if report.timings:  # none when re-checking a kept run
        phases = [(k, f"{v:.1f}") for k, v in report.timings.items()]
        lines += ["", *table(["phase", "seconds"], phases)]
    lines += _details(report.checks)
    verdict = "PASS" if report.passed else "FAIL"
    lines += ["", f"RESULT: {verdict} (seed {o.seed})"]
    return "\n".join(lines)


def _outcome_rows(stats: Stats) -> list[tuple[str, str]]:
    median, longest = stats.failover_median, stats.failover_max
    failover = (
        "-" if median is None or longest is None else f"median {median:.2f}s, max {longest:.2f}s"
    )
    return [
        ("occurrences expected", str(stats.occurrences_expected)),
        ("runs", str(stats.runs)),
        ("succeeded", str(stats.succeeded)),
        ("failed", str(stats.failed)),
        ("skipped", str(stats.skipped)),
        ("duplicates", str(stats.duplicates)),
        ("missing occurrences", str(stats.missing)),
        ("lost attempts", str(stats.lost_attempts)),
        ("retried runs", str(stats.retried_runs)),
        ("retries overtaken by a newer occurrence", str(stats.retries_overtaken)),
        (f"agent death -> next attempt elsewhere (n={len(stats.failover_seconds)})", failover),
    ]


def _action_rows(stats: Stats) -> list[tuple[str, str]]:
    rows = [(kind, str(count)) for kind, count in stats.actions.items()]
    return [*rows, ("total", str(sum(stats.actions.values())))]


def _verdict(check: CheckResult) -> str:
    return "PASS" if check.passed else f"FAIL ({len(check.violations)})"


def _details(checks: Sequence[CheckResult]) -> list[str]:
    lines = []
    for check in checks:
        if check.notes:
            lines += ["", f"{check.number}. {check.title}:", *(f"  {note}" for note in check.notes)]
    for check in checks:
        if check.violations:
            lines += ["", f"VIOLATIONS of {check.number}. {check.title}:"]
            lines += [f"  - {v}" for v in check.violations[:SHOWN_VIOLATIONS]]
            if len(check.violations) > SHOWN_VIOLATIONS:
                lines.append(f"  ... and {len(check.violations) - SHOWN_VIOLATIONS} more")
    return lines


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Rows under a header, the first column left-aligned, the others right-aligned."""
    all_rows = [list(header), *[list(row) for row in rows]]
    widths = [max(len(row[i]) for row in all_rows) for i in range(len(header))]

    def line(row: list[str]) -> str:
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        return "  ".join(cells).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return [line(all_rows[0]), rule, *(line(row) for row in all_rows[1:])]
