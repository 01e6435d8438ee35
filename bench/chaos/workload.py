"""The tasks of a chaos run, seeded: cron tasks firing every one or two
seconds, and a dependency chain ``a -> b -> c`` with a fan-in ``d`` after
``[a, b]``. They are applied with ``hydractl apply -f`` and paused through
the SDK in a subprocess (this process must not start gRPC threads: it forks
PostgreSQL starts)."""

from __future__ import annotations

import json
import random
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from harness.hydra import HYDRACTL
from harness.processes import run_checked

EVERY_SECOND = "* * * * * *"
EVERY_TWO_SECONDS = "*/2 * * * * *"
#: Each attempt of these writes its number to $HYDRA_OUTPUT; a SUCCEEDED run
#: must then carry the number of its own SUCCEEDED attempt.
WRITE_OUTPUT = 'printf \'{"attempt": %s}\' "$HYDRA_ATTEMPT" > "$HYDRA_OUTPUT"'
RETRY = {"max_attempts": 5, "backoff": "0s"}


@dataclass(frozen=True, kw_only=True, slots=True)
class Workload:
    """The tasks of a run: names, specs, and which depend on which."""

    specs: tuple[dict[str, Any], ...]

    @property
    def names(self) -> list[str]:
        """Every task name."""
        return [spec["name"] for spec in self.specs]

    @property
    def cron_names(self) -> list[str]:
        """Tasks with a cron trigger."""
        return [spec["name"] for spec in self.specs if _cron_of(spec)]

    @property
    def upstreams(self) -> dict[str, list[str]]:
        """Downstream task -> the tasks of its `after` trigger."""
        return {
            spec["name"]: trigger["after"]
            for spec in self.specs
            for trigger in spec["triggers"]
            if "after" in trigger
        }

    @property
    def output_writers(self) -> list[str]:
        """Tasks whose attempts write their number to $HYDRA_OUTPUT."""
        return [spec["name"] for spec in self.specs if WRITE_OUTPUT in spec["command"][-1]]


def build(tag: str, tasks: int, rng: random.Random) -> Workload:
    """`tasks` cron tasks and the chain a, b, c, d, all named ``<tag>.<name>``."""
    specs = [_cron_task(f"{tag}.tick-{n:02d}", rng) for n in range(tasks)]
    a, b, c, d = (f"{tag}.{name}" for name in "abcd")
    specs.append(_task(a, _sleep_command(rng, writes=True), [{"cron": EVERY_TWO_SECONDS}], 3))
    specs.append(_task(b, _sleep_command(rng, writes=True), [{"after": [a]}], 3))
    specs.append(_task(c, _sleep_command(rng, writes=False), [{"after": [b]}], 3))
    specs.append(_task(d, _sleep_command(rng, writes=True), [{"after": [a, b]}], 3))
    return Workload(specs=tuple(specs))


def _cron_task(name: str, rng: random.Random) -> dict[str, Any]:
    cron = rng.choice([EVERY_SECOND, EVERY_TWO_SECONDS])
    command = _sleep_command(rng, writes=rng.random() < 0.3)
    return _task(name, command, [{"cron": cron}], rng.randint(2, 4))


def _sleep_command(rng: random.Random, *, writes: bool) -> list[str]:
    """``sh -c 'sleep S; ...; echo ok'`` where S varies per occurrence in [0, 1.5] s."""
    factor, shift, modulo = rng.randint(1, 59), rng.randint(0, 59), rng.randint(1, 16)
    sleep = f"sleep {{{{ ((occurrence.second * {factor} + {shift}) % {modulo}) / 10 }}}}"
    steps = [sleep, WRITE_OUTPUT] if writes else [sleep]
    return ["sh", "-c", "; ".join([*steps, "echo ok"])]


def _task(
    name: str, command: list[str], triggers: list[dict[str, Any]], max_active: int
) -> dict[str, Any]:
    return {
        "name": name,
        "command": command,
        "triggers": triggers,
        "retry": dict(RETRY),
        "catchup": "all",
        "concurrency": {"max_active_runs": max_active, "overlap": "queue"},
    }


def _cron_of(spec: dict[str, Any]) -> str | None:
    return next((t["cron"] for t in spec["triggers"] if "cron" in t), None)


def apply(workload: Workload, addresses: list[str], work_dir: Path) -> tuple[datetime, datetime]:
    """``hydractl apply -f`` the workload; returns when the call began and ended."""
    path = work_dir / "tasks.yaml"
    path.write_text(yaml.safe_dump({"tasks": list(workload.specs)}, sort_keys=False))
    began = datetime.now(UTC)
    argv = [*HYDRACTL, "--coordinator", ",".join(addresses), "apply", "-f", str(path)]
    run_checked(argv, timeout=120, log_path=work_dir / "hydractl.log", what="hydractl apply")
    return began, datetime.now(UTC)


#: Run as ``python -c``: pause each task named in argv[2:] through argv[1]'s
#: coordinators, retrying while they are unavailable; print {name: paused at}.
_PAUSE_CODE = """
import json, sys, time
from datetime import UTC, datetime
from hydra.client import Client, Unavailable

paused = {}
with Client(sys.argv[1].split(","), timeout=10) as client:
    for name in sys.argv[2:]:
        for attempt in range(30):
            try:
                client.pause(name)
                break
            except Unavailable:
                time.sleep(1)
        else:
            sys.exit(f"could not pause {name}")
        paused[name] = datetime.now(UTC).isoformat()
print(json.dumps(paused))
"""


def pause(names: list[str], addresses: list[str], work_dir: Path) -> dict[str, datetime]:
    """Pause the tasks (SDK in a subprocess); returns when each pause was acknowledged."""
    argv = [sys.executable, "-c", _PAUSE_CODE, ",".join(addresses), *names]
    done = run_checked(argv, timeout=120, log_path=work_dir / "hydractl.log", what="pause")
    paused = json.loads(done.stdout.strip().splitlines()[-1])
    return {name: datetime.fromisoformat(at) for name, at in paused.items()}
