"""hydractl: the operator CLI of a Hydra cluster, over gRPC only.

Exit codes: 0 ok; 1 the run failed (``run --wait``) or another error; 2 invalid
argument or usage; 3 not found; 4 failed precondition or already exists;
5 coordinator unavailable; 6 refused for the credential (none, unknown,
expired, revoked, or its role or scope too small); 124 ``run --wait --timeout`` ran out; 130 Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeAlias

from hydra.client import _commands as commands
from hydra.client import _credentials as credentials
from hydra.client._client import Client
from hydra.domain import RunState
from hydra.errors import (
    AlreadyExists,
    FailedPrecondition,
    HydraError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)
from hydra.spec import parse_duration
from hydra.tls import TlsProblem, client_tls_from_flags

_Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_CONFLICT = 4
EXIT_UNAVAILABLE = 5
EXIT_DENIED = 6
EXIT_TIMEOUT = 124
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141

_EXIT_CODES: tuple[tuple[type[HydraError], int], ...] = (
    (InvalidArgument, EXIT_USAGE),
    (NotFound, EXIT_NOT_FOUND),
    (FailedPrecondition, EXIT_CONFLICT),
    (AlreadyExists, EXIT_CONFLICT),
    (Unavailable, EXIT_UNAVAILABLE),
    (Unauthenticated, EXIT_DENIED),
    (PermissionDenied, EXIT_DENIED),
)

# --- argument types -----------------------------------------------------------


def _param(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _instant(text: str) -> datetime:
    """ISO 8601 date or date-time; without a zone it is local time."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a time: {text!r} (use ISO 8601, e.g. 2025-01-31T02:30 or 2025-01-31T02:30Z)"
        ) from None
    return value if value.tzinfo else value.astimezone()


def _since(text: str) -> datetime:
    """An instant (ISO 8601), or a duration before now (``90m``, ``2d``)."""
    try:
        return datetime.now(UTC) - parse_duration(text, "--since")
    except InvalidArgument:
        pass
    try:
        return _instant(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"not a time or a duration: {text!r} (e.g. 2025-01-31T02:30Z, 90m, 2d)"
        ) from None


def _seconds(text: str) -> float:
    """Seconds as a number, or a duration such as ``90s`` or ``10m``."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return parse_duration(text, "--timeout").total_seconds()
    except InvalidArgument:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 30, 90s, 10m)") from None


def _state(text: str) -> RunState:
    try:
        return RunState(text.upper())
    except ValueError:
        names = ", ".join(state.lower() for state in RunState)
        raise argparse.ArgumentTypeError(f"unknown state {text!r} (one of {names})") from None


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return int(text)


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}")
    return int(text)


# --- parser -------------------------------------------------------------------


def _global_options(parser: argparse.ArgumentParser, defaults: dict[str, Any] | None) -> None:
    """Options every command takes, before or after the command name.

    Subcommands get them with suppressed defaults, so that they only override
    what was given before the command.
    """

    def default(name: str) -> Any:
        return argparse.SUPPRESS if defaults is None else defaults[name]

    parser.add_argument(
        "--coordinator",
        action="append",
        metavar="ADDR",
        default=default("coordinator"),
        help="coordinator address host:port; repeat or comma-separate for several "
        "(default: $HYDRA_COORDINATORS or 127.0.0.1:7070)",
    )
    parser.add_argument(
        "-o",
        "--output",
        choices=("table", "json"),
        default=default("output"),
        help="table for people (default), json for scripts",
    )
    parser.add_argument(
        "--token", default=default("token"), help="credential (default: $HYDRA_TOKEN)"
    )
    _connection_options(parser, default)


def _connection_options(parser: argparse.ArgumentParser, default: Any) -> None:
    """--context and the TLS options."""
    parser.add_argument(
        "--context", default=default("context"), metavar="NAME",
        help="context of the config file ($HYDRA_CONFIG) to use (default: $HYDRA_CONTEXT, "
        "else the one for --coordinator, else the current one)",
    )  # fmt: skip
    parser.add_argument(
        "--tls-ca", type=Path, default=default("tls_ca"), metavar="PEM",
        help="verify coordinators against this CA; turns TLS on ($HYDRA_TLS_CA)",
    )  # fmt: skip
    parser.add_argument(
        "--tls", action="store_true", default=default("tls"),
        help="TLS verified against the system's CAs ($HYDRA_TLS=1)",
    )  # fmt: skip
    parser.add_argument(
        "--tls-cert", type=Path, default=default("tls_cert"), metavar="PEM",
        help="client certificate, for coordinators that require one ($HYDRA_TLS_CLIENT_CERT)",
    )  # fmt: skip
    parser.add_argument(
        "--tls-key", type=Path, default=default("tls_key"), metavar="PEM",
        help="private key of --tls-cert ($HYDRA_TLS_CLIENT_KEY)",
    )  # fmt: skip
    parser.add_argument(
        "--tls-server-name", default=default("tls_server_name"), metavar="NAME",
        help="name the coordinators' certificates carry, if not the address's host "
        "($HYDRA_TLS_SERVER_NAME)",
    )  # fmt: skip


class _Builder:
    """Adds commands to a parser, each with the global options and a handler."""

    def __init__(self, common: argparse.ArgumentParser) -> None:
        self._common = common

    def group(self, parent: _Subcommands, name: str, help: str) -> _Subcommands:
        parser = parent.add_parser(name, help=help, description=help)
        return parser.add_subparsers(dest=f"{name}_command", metavar="COMMAND", required=True)

    def command(
        self, parent: _Subcommands, name: str, handler: commands.Handler, help: str
    ) -> argparse.ArgumentParser:
        parser = parent.add_parser(name, help=help, description=help, parents=[self._common])
        parser.set_defaults(handler=handler)
        return parser


_GLOBAL_DEFAULTS: dict[str, Any] = {
    "coordinator": None,
    "output": "table",
    "token": None,
    "context": None,
    "tls_ca": None,
    "tls": False,
    "tls_cert": None,
    "tls_key": None,
    "tls_server_name": None,
}


def build_parser() -> argparse.ArgumentParser:
    """The hydractl argument parser."""
    parser = argparse.ArgumentParser(
        prog="hydractl", description="Operate a Hydra cluster: tasks, runs, logs, agents."
    )
    _global_options(parser, _GLOBAL_DEFAULTS)
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, None)
    build = _Builder(common)
    top = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_apply(build, top)
    _add_tasks(build, build.group(top, "tasks", "list and manage tasks"))
    _add_run(build, top)
    _add_runs(build, build.group(top, "runs", "list and inspect runs"))
    _add_run_actions(build, top)
    _add_agents(build, build.group(top, "agents", "list and drain agents"))
    _add_audit(build, build.group(top, "audit", "the audit log: who changed what"))
    _add_notifications(
        build, build.group(top, "notifications", "webhook notifications and their delivery")
    )
    _add_credentials(build, build.group(top, "credentials", "create, list, revoke credentials"))
    cluster = build.group(top, "cluster", "the cluster as a whole")
    build.command(cluster, "status", commands.cluster_status, "coordinators and agents")
    return parser


def _add_apply(build: _Builder, top: _Subcommands) -> None:
    p = build.command(top, "apply", commands.apply, "create or update tasks from YAML files")
    p.add_argument(
        "-f",
        "--filename",
        action="append",
        required=True,
        metavar="FILE",
        help="YAML file with one or more tasks; - for stdin; repeatable",
    )
    p.add_argument("--dry-run", action="store_true", help="show what would change, store nothing")
    p.add_argument(
        "--diff",
        action="store_true",
        help="print a diff of each stored spec against the file, store nothing "
        "(exit 1 when something would change)",
    )


def _add_tasks(build: _Builder, tasks: _Subcommands) -> None:
    p = build.command(tasks, "list", commands.tasks_list, "list tasks")
    p.add_argument("--prefix", default="", help="only tasks whose name starts with this")
    p = build.command(tasks, "get", commands.tasks_get, "show a task's spec and state")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--versions", action="store_true", help="also list every version")
    for name, handler, help in (
        ("pause", commands.tasks_pause, "stop a task's triggers from creating runs"),
        ("resume", commands.tasks_resume, "let a task's triggers create runs again"),
    ):
        build.command(tasks, name, handler, help).add_argument("name", metavar="NAME")
    p = build.command(tasks, "delete", commands.tasks_delete, "delete a task (runs stay)")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--force", action="store_true", help="even if other tasks depend on it")


def _add_run(build: _Builder, top: _Subcommands) -> None:
    p = build.command(top, "run", commands.run, "start a manual run and print its id")
    p.add_argument("task", metavar="TASK")
    p.add_argument(
        "--param", action="append", type=_param, default=[], metavar="KEY=VALUE",
        help="override a task parameter; repeatable",
    )  # fmt: skip
    p.add_argument("--idempotency-key", metavar="KEY", help="repeating the key returns the run")
    p.add_argument(
        "--occurrence", type=_instant, metavar="TIME",
        help="the occurrence the run stands for (ISO 8601; default: now), e.g. to redo a day",
    )  # fmt: skip
    p.add_argument(
        "--wait", action="store_true", help="wait for the end; exit 1 unless it succeeded"
    )
    p.add_argument("--timeout", type=_seconds, metavar="S", help="with --wait, give up after S")


def _add_runs(build: _Builder, runs: _Subcommands) -> None:
    p = build.command(runs, "list", commands.runs_list, "list runs, newest occurrence first")
    p.add_argument("--task", default="", metavar="T", help="only runs of this task")
    p.add_argument(
        "--state", action="append", type=_state, default=[], metavar="S",
        help="only runs in this state; repeatable",
    )  # fmt: skip
    p.add_argument("--limit", type=_positive, default=50, metavar="N", help="at most N (50)")
    p.add_argument(
        "--from", dest="occurrence_from", type=_instant, metavar="T",
        help="only runs whose occurrence is at or after T (ISO 8601)",
    )  # fmt: skip
    p.add_argument(
        "--to", dest="occurrence_to", type=_instant, metavar="T",
        help="only runs whose occurrence is before T (ISO 8601)",
    )  # fmt: skip
    p.add_argument("--watch", action="store_true", help="print each change until Ctrl-C")
    p = build.command(runs, "get", commands.runs_get, "show a run and every attempt")
    p.add_argument("run", metavar="RUN")


def _add_run_actions(build: _Builder, top: _Subcommands) -> None:
    p = build.command(top, "logs", commands.logs, "print a run's output")
    p.add_argument("run", metavar="RUN")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing until the run ends")
    p.add_argument("--attempt", type=_count, default=0, metavar="N", help="only attempt N")
    p = build.command(top, "retry", commands.retry, "queue a finished run for one more attempt")
    p.add_argument("run", metavar="RUN")
    p = build.command(top, "cancel", commands.cancel, "cancel a queued or active run")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--reason", default="", metavar="R", help="recorded on the run")
    p = build.command(top, "backfill", commands.backfill, "create runs for a past time range")
    p.add_argument("task", metavar="TASK")
    p.add_argument("--from", dest="start", type=_instant, required=True, metavar="T")
    p.add_argument("--to", dest="end", type=_instant, required=True, metavar="T")
    p.add_argument("--dry-run", action="store_true", help="list the occurrences only")
    p = build.command(
        top, "why", commands.why, "explain an occurrence: its run and why, or why it has none"
    )
    p.add_argument("task", metavar="TASK")
    p.add_argument(
        "--occurrence", type=_instant, required=True, metavar="T",
        help="the occurrence (ISO 8601; without a zone, local time)",
    )  # fmt: skip


def _add_agents(build: _Builder, agents: _Subcommands) -> None:
    p = build.command(agents, "list", commands.agents_list, "list connected agents")
    p.add_argument("--all", action="store_true", help="include disconnected agents")
    p = build.command(agents, "drain", commands.agents_drain, "stop an agent taking new runs")
    p.add_argument("agent_id", metavar="ID")


def _add_audit(build: _Builder, audit: _Subcommands) -> None:
    p = build.command(audit, "list", commands.audit_list, "list audit entries, newest first")
    p.add_argument(
        "--since", type=_since, metavar="TIME|DURATION",
        help="only entries since TIME (ISO 8601) or DURATION ago (e.g. 90m, 2d)",
    )  # fmt: skip
    p.add_argument("--who", default="", metavar="NAME", help="only entries of this credential")
    p.add_argument("--task", default="", metavar="NAME", help="only entries about this task")
    p.add_argument("--limit", type=_positive, default=100, metavar="N", help="at most N (100)")


def _add_notifications(build: _Builder, group: _Subcommands) -> None:
    p = build.command(
        group, "list", commands.notifications_list, "list notifications, newest first"
    )
    p.add_argument("--task", default="", metavar="NAME", help="only this task's")
    p.add_argument(
        "--state", choices=("pending", "delivered", "failed"), default=None,
        help="only those in this state",
    )  # fmt: skip
    p.add_argument("--limit", type=_positive, default=100, metavar="N", help="at most N (100)")


def _add_credentials(build: _Builder, group: _Subcommands) -> None:
    p = build.command(
        group, "create", credentials.hydractl_create, "create a credential; prints its secret once"
    )
    credentials.add_create_flags(p)
    p = build.command(group, "list", credentials.hydractl_list, "list credentials (no secrets)")
    p.add_argument("--all", action="store_true", help="include revoked credentials")
    p = build.command(group, "revoke", credentials.hydractl_revoke, "revoke a credential")
    p.add_argument("name", metavar="NAME")


# --- main ---------------------------------------------------------------------


def _targets(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def _client(args: argparse.Namespace) -> Client:
    """The client the flags ask for (then the environment, then the contexts file)."""
    tls = client_tls_from_flags(args)
    return Client(_targets(args.coordinator), token=args.token, tls=tls, context=args.context)


def _report(error: HydraError) -> int:
    problems = error.problems if isinstance(error, InvalidArgument) else ()
    if len(problems) > 1:
        lines = [f"{len(problems)} problems:", *(f"  {problem}" for problem in problems)]
        print("hydractl: error: " + "\n".join(lines), file=sys.stderr)
    else:
        print(f"hydractl: error: {error.message}", file=sys.stderr)
    if isinstance(error, Unavailable) and not isinstance(error, TlsProblem):
        print(
            "hydractl: is `hydra dev` running? "
            "Point --coordinator or HYDRA_COORDINATORS at a coordinator.",
            file=sys.stderr,
        )
    return next((code for kind, code in _EXIT_CODES if isinstance(error, kind)), EXIT_FAILED)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace | int:
    try:
        return build_parser().parse_args(argv)
    except SystemExit as exit:  # argparse has printed the usage error or the help
        return exit.code if isinstance(exit.code, int) else EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
    """Run hydractl with ``argv`` (default: the command line); return the exit code."""
    args = _parse(argv)
    if isinstance(args, int):
        return args
    try:
        with _client(args) as client:
            code: int = args.handler(args, client)
            return code
    except HydraError as error:
        return _report(error)
    except TimeoutError as error:
        print(f"hydractl: error: {error}", file=sys.stderr)
        return EXIT_TIMEOUT
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`hydractl logs RUN | head`): stop quietly.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(main())
