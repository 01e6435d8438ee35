"""Hydra's benchmarks: ``python -m bench all`` or ``python -m bench NAME [NAME...]``.

Each benchmark starts and stops what it needs (embedded PostgreSQL,
coordinators, agents, a Procrastinate worker) on 127.0.0.1, prints a table
and writes ``bench/results/<name>.json``. Several names in one invocation
share one PostgreSQL server and run in a fixed order, ceiling and peer first,
so Hydra's figures are also shown as fractions of PostgreSQL's limits and as
ratios to Procrastinate. Missed targets are marked MISS but never change the
exit code; a benchmark that could not complete does (1).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import traceback
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

from bench import ceiling, failover, history, latency, peer, scale, throughput, web
from bench.procfs import busy_percent, cpu_jiffies, machine
from bench.results import RESULTS_DIR, Metric, Result, format_markdown, format_table, write_json
from bench.stack import MARKER_ENV, Context, Postgres, sweep
from bench.tls import make_tls

#: In the order they run: the limits and the peer first, so others can refer to them.
BENCHMARKS: dict[str, ModuleType] = {
    module.NAME: module
    for module in (ceiling, peer, throughput, latency, scale, failover, history, web)
}

#: The benchmarks that run over TLS under ``--tls``.
TLS_AWARE = frozenset({throughput.NAME, latency.NAME})


def main(argv: Sequence[str] | None = None) -> int:
    """Run the named benchmarks; 0 unless one of them could not complete."""
    args = _parser().parse_args(argv)
    names = _selected(args.names)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # The marker goes to our children only (never to an embedded PostgreSQL),
    # so that the final sweep cannot take the server down with the leftovers.
    marker = os.environ.pop(MARKER_ENV, "") or uuid.uuid4().hex
    results_dir = Path(args.results_dir)
    started = datetime.now(UTC)
    load_before = os.getloadavg()
    results: list[Result] = []
    failed: list[str] = []
    # PostgreSQL first: nothing in this process may create a gRPC channel before.
    with Postgres(args.db, fast=args.fast_pg, prefix=f"bench_{marker[:6]}") as postgres:
        ctx = Context(
            postgres=postgres,
            results_dir=results_dir,
            marker=marker,
            smoke=args.smoke,
            runs=args.runs,
            tls=make_tls() if args.tls else None,
        )
        try:
            for name in names:
                result = _run_one(ctx, name)
                if result is None:
                    failed.append(name)
                    continue
                results.append(result)
                ctx.earlier[name] = result
        finally:
            sweep(marker)
        summary = _summary(postgres, args, started, results, failed)
        summary["machine"]["load_average_at_start"] = load_before
    if len(names) > 1:
        _report_all(results_dir, results, summary)
    return 1 if failed else 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "names",
        nargs="+",
        choices=["all", *BENCHMARKS],
        metavar="NAME",
        help=f"all, or any of: {', '.join(BENCHMARKS)}",
    )
    parser.add_argument(
        "--db",
        default=None,
        help="admin conninfo of a PostgreSQL server to create databases on "
        "(default: an embedded server in a temporary directory)",
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: proves the code works")
    parser.add_argument("--runs", type=int, default=None, help="runs/jobs for throughput and peer")
    parser.add_argument(
        "--fast-pg",
        action="store_true",
        help="embedded server with fsync and synchronous_commit off (not durable)",
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        help="coordinators serve TLS (certificates made in a temporary directory); "
        "results are named NAME-tls (throughput and latency use it)",
    )
    parser.add_argument("--results-dir", default=str(RESULTS_DIR), help="where JSON goes")
    return parser


def _selected(names: Sequence[str]) -> list[str]:
    if "all" in names:
        return list(BENCHMARKS)
    return [name for name in BENCHMARKS if name in names]


def _run_one(ctx: Context, name: str) -> Result | None:
    """Run one benchmark, print and save its result; None if it failed."""
    print(f"== {name} ==", flush=True)
    started, jiffies = time.monotonic(), cpu_jiffies()
    try:
        result: Result = BENCHMARKS[name].run(ctx)
    except Exception:
        traceback.print_exc()
        print(f"{name}: FAILED (logs in {ctx.results_dir / 'logs'})", flush=True)
        return None
    result.duration_s = time.monotonic() - started
    if ctx.tls is not None and name in TLS_AWARE:
        result.name = f"{name}-tls"
    if not result.skipped:
        busy = busy_percent(jiffies, cpu_jiffies())
        result.metrics.append(
            Metric(
                name="machine CPU busy meanwhile",
                value=busy,
                unit="%",
                note=f"all {os.cpu_count()} cores, other work included",
            )
        )
    print(format_table([result]), f"\n({name} took {result.duration_s:.0f} s)\n", flush=True)
    write_json(ctx.results_dir / f"{result.name}.json", result.to_json())
    return result


def _summary(
    postgres: Postgres,
    args: argparse.Namespace,
    started: datetime,
    results: list[Result],
    failed: list[str],
) -> dict[str, Any]:
    return {
        "started_at": started.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "smoke": args.smoke,
        "machine": machine(),
        "python": sys.version.split()[0],
        "postgres": {"embedded": postgres.embedded, **postgres.settings()},
        "failed": failed,
        "results": [result.to_json() for result in results],
    }


def _report_all(results_dir: Path, results: list[Result], summary: dict[str, Any]) -> None:
    print("== summary ==")
    print(format_table(results))
    write_json(results_dir / "all.json", summary)
    (results_dir / "all.md").write_text(format_markdown(results) + "\n")
    print(f"\nresults in {results_dir}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
