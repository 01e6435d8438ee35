"""Command-line options of the chaos test."""

from __future__ import annotations

import argparse
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

#: Lease timing of every coordinator: failures show within seconds.
LEASE_TTL_S = 3.0
HEARTBEAT = "500ms"
KILL_GRACE = "1s"


@dataclass(frozen=True, kw_only=True, slots=True)
class Options:
    """What one chaos run does."""

    duration: float
    seed: int
    coordinators: int
    agents: int
    capacity: int
    tasks: int
    db: str | None
    keep_dir: Path | None
    json_path: Path | None
    settle_timeout: float
    #: Seconds of tolerance when lining a LOST attempt up with a chaos action.
    slack: float
    #: A kept run's directory, to check again instead of running.
    recheck: Path | None = None

    @property
    def lease_ttl(self) -> float:
        """Lease TTL of the coordinators, in seconds."""
        return LEASE_TTL_S


def parse(argv: Sequence[str] | None = None) -> Options:
    """Options from the command line (a random seed when none is given)."""
    args = _parser().parse_args(argv)
    if args.coordinators < 1 or args.agents < 1 or args.tasks < 1:
        raise SystemExit("bench.chaos: --coordinators, --agents and --tasks must be at least 1")
    return Options(
        duration=args.duration,
        seed=args.seed if args.seed is not None else secrets.randbelow(1_000_000),
        coordinators=args.coordinators,
        agents=args.agents,
        capacity=args.capacity,
        tasks=args.tasks,
        db=args.db,
        keep_dir=args.keep_dir,
        json_path=args.json,
        settle_timeout=args.settle_timeout,
        slack=args.slack,
        recheck=args.recheck,
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.chaos",
        description="Run a Hydra cluster under chaos, then check the guarantees of "
        "docs/architecture.md from the database. "
        "Exit 0: no violation; 1: a violation; 2: the run itself could not be completed.",
    )
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of chaos (60)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    parser.add_argument("--coordinators", type=int, default=3, help="coordinators (3)")
    parser.add_argument("--agents", type=int, default=4, help="agents (4)")
    parser.add_argument("--capacity", type=int, default=8, help="slots per agent (8)")
    parser.add_argument("--tasks", type=int, default=50, help="cron tasks, besides a-b-c-d (50)")
    parser.add_argument(
        "--db",
        default=None,
        help="conninfo of a PostgreSQL to use instead of an embedded one "
        "(it is migrated; no PostgreSQL restarts then)",
    )
    parser.add_argument(
        "--keep-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="work in DIR (logs, database, report.json) and keep it "
        "(default: a temporary directory, kept only if the run fails)",
    )
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write here")
    parser.add_argument(
        "--settle-timeout", type=float, default=60.0, help="seconds for work to end (60)"
    )
    parser.add_argument(
        "--slack", type=float, default=5.0, help="seconds of tolerance for check 5 (5)"
    )
    parser.add_argument(
        "--recheck",
        type=Path,
        default=None,
        metavar="DIR",
        help="run no chaos: check the kept run in DIR again (its database and run.json)",
    )
    return parser
