"""What a benchmark reports: statistics, metrics with their targets, results,
and the tables and JSON they are shown in.

Nothing here knows about one benchmark in particular; readings from /proc are
in :mod:`bench.procfs`, and the processes and the server every benchmark runs
on are in :mod:`bench.stack`."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Default home of the JSON results (gitignored).
RESULTS_DIR = Path(__file__).resolve().parent / "results"


class BenchError(RuntimeError):
    """A benchmark could not complete (a process died, a wait timed out)."""


# --- statistics ---------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), linearly interpolated between closest ranks."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def distribution(values: Sequence[float]) -> dict[str, float]:
    """Count, mean, p50, p95, p99 and max of a sample."""
    return {
        "n": len(values),
        "mean": sum(values) / len(values) if values else math.nan,
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "max": max(values) if values else math.nan,
    }


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, or None when either is missing or the denominator is 0."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    if math.isnan(numerator) or math.isnan(denominator):
        return None
    return numerator / denominator


# --- metrics and tables -------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class Target:
    """A goal for a metric: ``value <op> bound``."""

    op: str  # one of "<=", ">=", "<"
    bound: float
    text: str = ""

    def met(self, value: float) -> bool:
        """Whether `value` reaches the goal."""
        if self.op == "<=":
            return value <= self.bound
        if self.op == "<":
            return value < self.bound
        return value >= self.bound

    def __str__(self) -> str:
        return self.text or f"{self.op} {self.bound:g}"


@dataclass(frozen=True, kw_only=True, slots=True)
class Metric:
    """One figure of a benchmark, with its goal if it has one."""

    name: str
    value: float | None
    unit: str = ""
    target: Target | None = None
    note: str = ""

    @property
    def ok(self) -> bool | None:
        """True/False against the target; None without a target or a value."""
        if self.target is None or self.value is None or math.isnan(self.value):
            return None
        return self.target.met(self.value)

    def to_json(self) -> dict[str, Any]:
        """Plain data for the results file."""
        return {
            "name": self.name,
            "value": self.value,
            "unit": self.unit,
            "target": str(self.target) if self.target else None,
            "ok": self.ok,
            "note": self.note,
        }


@dataclass(kw_only=True)
class Result:
    """What one benchmark measured."""

    name: str
    metrics: list[Metric] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    skipped: str = ""
    duration_s: float = 0.0

    def value(self, metric_name: str) -> float | None:
        """The value of a metric by name, or None."""
        found = next((m for m in self.metrics if m.name == metric_name), None)
        return found.value if found else None

    def to_json(self) -> dict[str, Any]:
        """Plain data for the results file."""
        return {
            "name": self.name,
            "skipped": self.skipped,
            "duration_s": round(self.duration_s, 1),
            "metrics": [m.to_json() for m in self.metrics],
            "details": self.details,
        }


def format_value(value: float | None, unit: str) -> str:
    """A figure for people: 3 significant digits, the unit after it."""
    if value is None or math.isnan(value):
        return "n/a"
    text = f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return f"{text} {unit}".strip()


def _mark(ok: bool | None) -> str:
    return {True: "pass", False: "MISS", None: ""}[ok]


def table_rows(results: Sequence[Result]) -> list[list[str]]:
    """One row per metric: benchmark, metric, value, target, mark, note."""
    rows = []
    for result in results:
        if result.skipped:
            rows.append([result.name, "(skipped)", "", "", "", result.skipped])
        for metric in result.metrics:
            target = str(metric.target) if metric.target else ""
            value = format_value(metric.value, metric.unit)
            rows.append([result.name, metric.name, value, target, _mark(metric.ok), metric.note])
    return rows


HEADER = ["benchmark", "metric", "value", "target", "", "note"]


def format_table(results: Sequence[Result]) -> str:
    """An aligned plain-text table of every metric."""
    rows = [HEADER, *table_rows(results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def format_markdown(results: Sequence[Result]) -> str:
    """The same table in Markdown, for bench/README.md."""
    rows = table_rows(results)
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write `data` as indented JSON (NaN as null), creating the directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_finite(data), indent=2, default=str, allow_nan=False) + "\n")


def _finite(data: Any) -> Any:
    """`data` with every NaN or infinite float replaced by None (valid JSON)."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, Mapping):
        return {key: _finite(value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [_finite(value) for value in data]
    return data
