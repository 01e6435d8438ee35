"""``python -m bench.chaos``: set up, chaos, settle, check, report.

Exit codes: 0 no violation; 1 a check found a violation; 2 the run could not be
completed (a process would not start, PostgreSQL would not come back...);
130 interrupted. Whatever happens, every process started is stopped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import secrets
import shutil
import signal
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from types import FrameType

from bench.chaos import checks, record, report, stats
from bench.chaos.checks import Context
from bench.chaos.cluster import Cluster, open_server
from bench.chaos.logs import zombie_counts
from bench.chaos.options import Options, parse
from bench.chaos.phases import exercise, timed
from bench.chaos.snapshot import Snapshot, load

EXIT_PASSED = 0
EXIT_VIOLATION = 1
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130
#: Options of the original run that a re-check takes over.
RECHECKED_OPTIONS = ("duration", "seed", "coordinators", "agents", "capacity", "tasks")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chaos test (or re-check a kept run); returns the exit code."""
    options = parse(argv)
    if options.recheck is not None:
        recheck_dir = options.recheck
        return _guarded(lambda: _recheck(options, recheck_dir))
    print(f"bench.chaos: seed {options.seed}", flush=True)
    work_dir = _work_dir(options)
    print(f"bench.chaos: work dir {work_dir}", flush=True)
    code = _guarded(lambda: _run(options, work_dir))
    if options.keep_dir is None and code == EXIT_PASSED:
        shutil.rmtree(work_dir, ignore_errors=True)
    elif code != EXIT_PASSED:
        print(f"bench.chaos: logs, database and report kept in {work_dir}", file=sys.stderr)
    return code


def _guarded(run: Callable[[], int]) -> int:
    """`run`'s exit code; Ctrl-C and SIGTERM interrupt it, errors are shown."""
    try:
        with _sigterm_as_interrupt():
            return run()
    except KeyboardInterrupt:
        print("bench.chaos: interrupted; everything was stopped", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception:
        traceback.print_exc()
        print("bench.chaos: the run could not be completed", file=sys.stderr)
        return EXIT_ERROR


def _work_dir(options: Options) -> Path:
    if options.keep_dir is not None:
        options.keep_dir.mkdir(parents=True, exist_ok=True)
        return options.keep_dir.resolve()
    return Path(tempfile.mkdtemp(prefix="hydra-chaos-"))


def _run(options: Options, work_dir: Path) -> int:
    timings: dict[str, float] = {}
    with timed(timings, "setup"):
        server = open_server(options, work_dir)
    # Unique names, should a --db hold the tasks of earlier runs.
    cluster = Cluster(work_dir=work_dir, tag=f"c{secrets.token_hex(2)}", server=server)
    try:
        done, snapshot = exercise(cluster, options, timings)
    finally:
        _signals_ignored_during(cluster.stop)
    record.save(done, work_dir, dataclasses.asdict(options))
    return _check_and_report(options, work_dir, done, snapshot, timings)


def _recheck(options: Options, work_dir: Path) -> int:
    """The checks again, on the database and ``run.json`` of a kept run."""
    done, original = record.load(work_dir)
    options = dataclasses.replace(options, **{k: original[k] for k in RECHECKED_OPTIONS})
    server = open_server(options, work_dir)
    try:
        snapshot = load(server.conninfo, done.workload.names)
    finally:
        _signals_ignored_during(server.stop)
    return _check_and_report(options, work_dir, done, snapshot, {})


def _check_and_report(
    options: Options,
    work_dir: Path,
    done: record.RunRecord,
    snapshot: Snapshot,
    timings: dict[str, float],
) -> int:
    context = Context(
        snapshot=snapshot,
        workload=done.workload,
        actions=done.actions,
        exits=done.exits,
        timeline=done.timeline,
        slack=timedelta(seconds=options.slack),
    )
    found = report.Report(
        options=options,
        work_dir=work_dir,
        stats=stats.compute(context),
        checks=checks.run_all(context),
        actions=done.actions,
        exits=done.exits,
        timings=timings,
        zombies=zombie_counts(work_dir),
    )
    print(report.render(found), flush=True)
    report.write_json(found, work_dir / "report.json")
    if options.json_path is not None:
        report.write_json(found, options.json_path)
    return EXIT_PASSED if found.passed else EXIT_VIOLATION


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGINT and SIGTERM interrupt, so the same cleanup runs.

    SIGINT too: a shell starts background jobs with SIGINT ignored, and Python
    then leaves it ignored.
    """

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {signum: signal.signal(signum, interrupt) for signum in signals}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _signals_ignored_during(cleanup: Callable[[], None]) -> None:
    """Run `cleanup` to its end, whatever Ctrl-C or SIGTERM arrive meanwhile."""
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in signals}
    try:
        cleanup()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
